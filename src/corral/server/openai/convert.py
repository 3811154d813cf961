"""OpenAI request fields -> what the engine takes: messages, GenOptions, refusals.

Features corral does not have (images, logit_bias) are refused with a clear 400 rather than
silently ignored. Tools and structured output are read in corral.server.structured.
"""

from __future__ import annotations

from typing import Any

from corral.server.errors import bad_request, not_supported
from corral.server.openai.protocol import ChatCompletionRequest, ChatMessage, _Sampling
from corral.server.options import GenOptions


def check_chat(body: ChatCompletionRequest) -> None:
    """Refuse chat features corral cannot honour."""
    if body.tools and body.functions:
        raise bad_request("give 'tools' or the older 'functions', not both", "functions")
    check_common(body)


def chat_tools(body: ChatCompletionRequest) -> tuple[list[Any] | None, Any]:
    """(tools, tool_choice), the older `functions`/`function_call` mapped onto them."""
    if body.functions:
        tools = [{"type": "function", "function": f} for f in body.functions]
        choice = body.function_call
        if isinstance(choice, dict) and "name" in choice:
            choice = {"type": "function", "function": {"name": choice["name"]}}
        return tools, choice
    return body.tools, body.tool_choice


def check_common(body: _Sampling) -> None:
    if body.logit_bias:
        raise not_supported("logit_bias is", "logit_bias")


def to_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI messages as chat-template messages: text content, and the tool fields
    (`tool_calls`, `tool_call_id`, `name`) kept for corral.chat.tools to render."""
    out = []
    for i, m in enumerate(messages):
        role = {"developer": "system", "function": "tool"}.get(m.role, m.role)
        msg: dict[str, Any] = {"role": role, "content": _text(m.content, i)}
        if m.tool_calls:
            if role != "assistant" or not all(isinstance(c, dict) for c in m.tool_calls):
                raise bad_request("only assistant messages carry tool_calls", f"messages.{i}")
            msg["tool_calls"] = m.tool_calls
        if m.tool_call_id is not None:
            msg["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            msg["name"] = m.name
        out.append(msg)
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
