"""TEI request bodies (pydantic) and response pieces.

TEI serves one model, so its bodies name none; here an optional `model` (body field, or a
`?model=` query parameter on /info) picks one, and may be left out while the choice is
unambiguous (one embedding model loaded, or one stored).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral import __version__
from corral.embed import EmbedderInfo, TokenInfo, Truncation
from corral.embed.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    prompt_name: str | None = None


class _Cut(_Body):
    truncate: bool = False  # TEI's default: a too-long input is an error
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"

    def truncation(self) -> Truncation:
        if not self.truncate:
            return Truncation.ERROR
        return Truncation(self.truncation_direction.lower())


class EmbedRequest(_Cut):
    inputs: str | list[str]
    normalize: bool = True
    dimensions: int | None = Field(default=None, ge=1)


class SimilarityInputs(BaseModel):
    source_sentence: str
    sentences: list[str] = Field(min_length=1)


class SimilarityRequest(_Cut):
    inputs: SimilarityInputs


class TokenizeRequest(_Body):
    inputs: str | list[str]
    add_special_tokens: bool = True


def simple_token(t: TokenInfo) -> dict[str, Any]:
    return {"id": t.id, "text": t.text, "special": t.special, "start": t.start, "stop": t.stop}


def info(model_id: str, digest: str | None, i: EmbedderInfo) -> dict[str, Any]:
    """TEI's /info body for an embedding model."""
    return {
        "model_id": model_id,
        "model_sha": (digest or "").removeprefix("sha256:") or None,
        "model_dtype": "float32",
        "model_type": {"embedding": {"pooling": i.pooling.value}},
        "max_concurrent_requests": 512,
        "max_input_length": i.max_tokens,
        "max_batch_tokens": DEFAULT_MAX_BATCH_TOKENS,
        "max_batch_requests": None,
        "max_client_batch_size": DEFAULT_MAX_BATCH_SIZE,
        "auto_truncate": False,
        "tokenization_workers": 1,
        "version": __version__,
        "sha": None,
        "docker_label": None,
        # corral's additions
        "architecture": i.architecture,
        "dimensions": i.dimensions,
    }
