"""ollama request bodies (pydantic) and the response fields they share.

Like ollama, unknown fields are ignored and `name` is still accepted where `model` replaced
it. `template` (request field and Modelfile TEMPLATE) is a Jinja2 chat template, rendered
with `messages` (plus `system` and `prompt` for /api/generate) — not ollama's Go templates.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corral.server.durations import ns, rfc3339
from corral.server.loras import LoraScale


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Named(_Body):
    """Bodies naming a model: `model`, or the older `name`."""

    model: str = ""
    name: str | None = None

    @model_validator(mode="after")
    def _model_or_name(self) -> _Named:
        if not self.model and self.name:
            self.model = self.name
        if not self.model.strip():
            raise ValueError("'model' is required")
        return self


class _Generation(_Named):
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | float | int | None = None
    think: bool | str | None = None
    # corral extension, llama.cpp's shape: [{id, scale}] of the server's LoRA adapters
    lora: list[LoraScale] | None = None


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[Any] | None = None
    thinking: str | None = None
    tool_name: str | None = None  # on role "tool": the function whose result this is
    tool_call_id: str | None = None


class GenerateRequest(_Generation):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class ChatRequest(_Generation):
    messages: list[Message] | None = None
    tools: list[Any] | None = None


class ModelRequest(_Named):
    verbose: bool = False


class PullRequest(_Named):
    insecure: bool = False
    stream: bool = True


class CopyRequest(_Body):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class CreateRequest(_Named):
    """Both forms: the JSON fields ollama's clients send now, or a `modelfile` text."""

    from_: str | None = Field(default=None, alias="from")
    modelfile: str | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[Message] | None = None
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    quantize: str | None = None
    stream: bool = True


def final_fields(
    done_reason: str,
    total_s: float,
    load_s: float,
    prompt_tokens: int,
    prompt_s: float,
    eval_count: int,
    eval_s: float,
) -> dict[str, Any]:
    """The statistics of a last response object (durations in nanoseconds)."""
    return {
        "done": True,
        "done_reason": done_reason,
        "total_duration": ns(total_s),
        "load_duration": ns(load_s),
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": ns(prompt_s),
        "eval_count": eval_count,
        "eval_duration": ns(eval_s),
    }


def head(model: str) -> dict[str, Any]:
    """The fields every response object starts with."""
    return {"model": model, "created_at": rfc3339()}
