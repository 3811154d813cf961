"""OpenAI POST /v1/embeddings: `input` as a string, strings, token ids or lists of them;
`encoding_format` float or base64 (little-endian float32, what the openai client asks for
by default); `dimensions` cuts Matryoshka-style and renormalizes.

As OpenAI's, an input longer than the model reads is an error (400
context_length_exceeded), not silently cut.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from corral.embed import Truncation
from corral.server.body import parse_body
from corral.server.embedders import embed_ids, embed_texts
from corral.server.errors import bad_request
from corral.server.state import get_state

router = APIRouter()


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    input: str | list[str] | list[list[int]] | list[int]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


def encode_vector(vec: np.ndarray, encoding: str) -> list[float] | str:
    """A vector as OpenAI sends it: a float list, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
    return vec.tolist()  # type: ignore[no-any-return]


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    st = get_state(request)
    body = await parse_body(request, EmbeddingRequest)
    inp = body.input
    if isinstance(inp, list) and not inp:
        raise bad_request("'input' must not be empty", "input")
    held = await st.manager.embedders.get(body.model)
    opts: dict[str, Any] = {"dimensions": body.dimensions}
    if isinstance(inp, str) or isinstance(inp[0], str):
        texts = [inp] if isinstance(inp, str) else inp
        out = await embed_texts(held, texts, truncate=Truncation.ERROR, **opts)  # type: ignore[arg-type]
    else:
        ids = [inp] if isinstance(inp[0], int) else inp
        out = await embed_ids(held, ids, truncate=Truncation.ERROR, **opts)  # type: ignore[arg-type]
    data = [
        {"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
        for i, v in enumerate(out.vectors)
    ]
    n = out.total_tokens
    return {
        "object": "list",
        "data": data,
        "model": held.embedder.name,
        "usage": {"prompt_tokens": n, "total_tokens": n},
    }
