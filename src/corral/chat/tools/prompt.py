"""Conversations with tools, made ready for a chat template.

Native formats get `tools` as the template expects them and tool calls with their arguments
as objects (templates apply `tojson` themselves; a JSON string would be encoded twice).
For GENERIC the tools are described in the system prompt, earlier calls become assistant
text in `<tool_call>` tags and tool results become a user turn of `<tool_response>` blocks,
so any template, even one that insists on alternating turns, can render the conversation.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from corral.chat.tools.formats import ToolFormat
from corral.chat.tools.types import Tool, arguments_object

GENERIC_SYSTEM = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user "
    "query. Don't make assumptions about what values to plug into functions. Here are the "
    "available tools: <tools>\n{tools}\n</tools>\nFor each function call, return a JSON "
    "object with the function name and arguments within <tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)

# Mistral's templates check call ids, in both call formats
_MISTRAL = (ToolFormat.MISTRAL, ToolFormat.MISTRAL_V11)


def _mistral_id(call_id: str) -> str:
    """Mistral's templates accept only 9-character alphanumeric ids: map others onto one."""
    if len(call_id) == 9 and call_id.isalnum():
        return call_id
    return hashlib.sha1(call_id.encode()).hexdigest()[:9]


def _calls(message: dict[str, Any], fmt: ToolFormat) -> list[dict[str, Any]]:
    out = []
    for c in message.get("tool_calls") or []:
        fn = c.get("function", c) if isinstance(c, dict) else {}
        call_id = str(c.get("id") or "") if isinstance(c, dict) else ""
        if fmt in _MISTRAL:
            call_id = _mistral_id(call_id or fn.get("name", "call"))
        args = arguments_object(fn.get("arguments", {}))
        out.append(
            {"id": call_id, "type": "function",
             "function": {"name": fn.get("name", ""), "arguments": args}}
        )  # fmt: skip
    return out


def _call_text(calls: list[dict[str, Any]]) -> str:
    return "\n".join(
        "<tool_call>\n"
        + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
        + "\n</tool_call>"
        for c in calls
    )


def prepare(
    messages: list[dict[str, Any]], tools: list[Tool], fmt: ToolFormat
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools for the template) for `fmt`; `tools` empty: none are offered, but
    earlier calls and results in the history are still rendered."""
    if fmt is not ToolFormat.GENERIC:
        out = []
        for m in messages:
            m = dict(m)
            if m.get("tool_calls"):
                m["tool_calls"] = _calls(m, fmt)
                m.setdefault("content", "")
            if m.get("role") == "tool" and fmt in _MISTRAL and m.get("tool_call_id"):
                m["tool_call_id"] = _mistral_id(str(m["tool_call_id"]))
            out.append(m)
        return out, [t.openai() for t in tools] or None
    return _generic(messages, tools), None


def _generic(messages: list[dict[str, Any]], tools: list[Tool]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role == "tool":
            block = f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
            continue
        if role == "assistant" and m.get("tool_calls"):
            text = (m.get("content") or "").strip()
            calls = _call_text(_calls(m, ToolFormat.GENERIC))
            out.append({"role": "assistant", "content": f"{text}\n{calls}" if text else calls})
            continue
        out.append(dict(m))
    out = [{k: v for k, v in m.items() if k != "_tool_results"} for m in out]
    if not tools:
        return out
    listing = "\n".join(json.dumps(t.openai(), ensure_ascii=False) for t in tools)
    system = GENERIC_SYSTEM.format(tools=listing)
    if out and out[0].get("role") == "system":
        first = out[0].get("content") or ""
        return [{"role": "system", "content": f"{first}\n\n{system}" if first else system}] + out[
            1:
        ]
    return [{"role": "system", "content": system}] + out
