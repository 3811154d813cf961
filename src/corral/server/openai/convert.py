"""OpenAI request fields -> what the engine takes: messages, GenOptions, refusals.

Features corral does not have yet (tools, structured output, images, logit_bias) are refused
with a clear 400 rather than silently ignored: an ignored JSON schema would hand back free
text to a caller that parses JSON.
"""

from __future__ import annotations

from typing import Any

from corral.server.errors import not_supported
from corral.server.openai.protocol import ChatCompletionRequest, ChatMessage, _Sampling
from corral.server.options import GenOptions


def check_chat(body: ChatCompletionRequest) -> None:
    """Refuse chat features corral cannot honour yet."""
    if body.tools or body.functions:
        raise not_supported("tools are", "tools")
    if body.tool_choice not in (None, "none", "auto"):
        raise not_supported("tool_choice is", "tool_choice")
    fmt = (body.response_format or {}).get("type", "text")
    if fmt != "text":
        raise not_supported(f"response_format '{fmt}' is", "response_format")
    check_common(body)


def check_common(body: _Sampling) -> None:
    if body.logit_bias:
        raise not_supported("logit_bias is", "logit_bias")


def to_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI messages as chat-template messages ({"role", "content"} with text content)."""
    out = []
    for i, m in enumerate(messages):
        if m.role in ("tool", "function") or m.tool_calls:
            raise not_supported("tool messages are", f"messages.{i}")
        role = "system" if m.role == "developer" else m.role  # o1-style name for system
        out.append({"role": role, "content": _text(m.content, i)})
    return out


def _text(content: Any, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.type != "text":
            raise not_supported(f"'{part.type}' content parts are", f"messages.{i}.content")
        parts.append(part.text or "")
    return "".join(parts)


def gen_options(base: GenOptions, body: _Sampling, max_tokens: int | None) -> GenOptions:
    """The model's defaults overridden by the request's fields (None: not given)."""
    fields = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repeat_penalty": body.repeat_penalty,
    }
    sampling = base.sampling.with_(**{k: v for k, v in fields.items() if v is not None})
    out = base.with_(sampling=sampling)
    if max_tokens is not None:
        out = out.with_(max_tokens=max_tokens)
    if body.stop is not None:
        stops = [body.stop] if isinstance(body.stop, str) else body.stop
        out = out.with_(stop=tuple(s for s in stops if s))
    return out


def per_choice(opts: GenOptions, n: int) -> list[GenOptions]:
    """Options for each of n choices: with a seed, seed+i, so the choices differ but the
    whole answer stays repeatable."""
    seed = opts.sampling.seed
    if n == 1 or seed is None:
        return [opts] * n
    return [opts.with_(sampling=opts.sampling.with_(seed=seed + i)) for i in range(n)]
