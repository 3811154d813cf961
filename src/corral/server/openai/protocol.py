"""OpenAI request bodies (pydantic) and response objects (plain dicts built here).

Unknown fields are ignored rather than refused: clients (LangChain, SDK versions) send
extras, and vLLM and llama.cpp accept them the same way. Sampling fields a client leaves out
take the model's defaults (its Modelfile parameters, else llama.cpp's), not OpenAI's.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.server.loras import LoraScale

MAX_N = 16  # choices per request: each is a full generation on a CPU


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class TextPart(_Body):
    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None


class _Sampling(_Body):
    """Fields both completion endpoints share."""

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # llama.cpp / vLLM extensions
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, ge=0.0)
    # llama.cpp's per-request LoRA choice: [{id, scale}] of the server's adapters
    lora: list[LoraScale] | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    # llama.cpp extensions: a GBNF grammar or a JSON schema the output must follow
    grammar: str | None = None
    json_schema: Any = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    max_tokens: int | None = Field(default=16, ge=0)  # OpenAI's default for this endpoint
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1, le=MAX_N)
    response_format: dict[str, Any] | None = None
    grammar: str | None = None  # llama.cpp extensions, as on the chat route
    json_schema: Any = None


# -- responses ----------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def model_object(name: str, created: int, owned_by: str = "corral") -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}


def chat_completion(
    rid: str, model: str, created: int, choices: list[dict[str, Any]], use: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "corral",
        "choices": choices,
        "usage": use,
    }


def chat_choice(
    index: int,
    text: str | None,
    finish: str,
    logprobs: dict[str, Any] | None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def tool_call_start(index: int, call_id: str, name: str) -> dict[str, Any]:
    """The first streamed delta of a call: its id, type and name, no arguments yet."""
    fn = {"name": name, "arguments": ""}
    return {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": fn}]}


def tool_call_args(index: int, fragment: str) -> dict[str, Any]:
    """A later streamed delta of a call: the next piece of its arguments JSON."""
    return {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}


def chat_chunk(
    rid: str,
    model: str,
    created: int,
    choices: list[dict[str, Any]],
    use: dict[str, Any] | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "corral",
        "choices": choices,
    }
    if with_usage:  # with include_usage every chunk carries the field, null but the last
        chunk["usage"] = use
    return chunk


def chunk_choice(
    index: int,
    delta: dict[str, Any],
    finish: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


def text_completion(
    rid: str,
    model: str,
    created: int,
    choices: list[dict[str, Any]],
    use: dict[str, Any] | None,
    chunk: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": "corral",
        "choices": choices,
    }
    if use is not None or not chunk:
        body["usage"] = use
    return body


def text_choice(
    index: int, text: str, finish: str | None, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def token_logprob(
    piece: bytes, logprob: float, top: list[tuple[bytes, float]] | None = None
) -> dict[str, Any]:
    """One entry of a chat choice's `logprobs.content`, with its alternatives."""
    entry = _alternative(piece, logprob)
    entry["top_logprobs"] = [_alternative(b, lp) for b, lp in top or []]
    return entry


def _alternative(piece: bytes, logprob: float) -> dict[str, Any]:
    return {
        "token": piece.decode("utf-8", errors="replace"),
        "logprob": logprob,
        "bytes": list(piece),
    }
