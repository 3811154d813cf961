"""Tools, tool calls and tool_choice, in the OpenAI shape every API family maps onto.

`parse_tools` and `parse_tool_choice` check client input and raise `InvalidRequestError`
with the field at fault, so routes answer a 400 before any generation starts.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from corral.errors import InvalidRequestError

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Tool:
    """A function the model may call; `parameters` is a JSON Schema for its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})

    def openai(self) -> dict[str, Any]:
        """The OpenAI `tools` entry (what chat templates expect in `tools`)."""
        fn = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": fn}


@dataclass
class ToolCall:
    """One call the model made; `arguments` is the parsed JSON object."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: new_call_id())

    def openai(self) -> dict[str, Any]:
        """The OpenAI response shape (arguments as JSON text)."""
        args = json.dumps(self.arguments, ensure_ascii=False)
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": args},
        }

    def ollama(self) -> dict[str, Any]:
        """ollama's shape (arguments as an object)."""
        return {"function": {"name": self.name, "arguments": self.arguments}}


def new_call_id() -> str:
    """A fresh call id: 9 letters and digits, the form Mistral's templates insist on."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


class ToolChoiceMode(Enum):
    NONE = "none"  # never call: tools are left out of the prompt
    AUTO = "auto"  # the model decides
    REQUIRED = "required"  # at least one call, enforced by the grammar
    NAMED = "named"  # exactly this function, enforced by the grammar


@dataclass(frozen=True)
class ToolChoice:
    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str | None = None  # for NAMED


def parse_tools(raw: list[Any] | None, param: str = "tools") -> list[Tool]:
    """OpenAI (`{"type": "function", "function": {...}}`) or bare function entries ->
    Tools; InvalidRequestError names the entry at fault."""
    tools: list[Tool] = []
    for i, entry in enumerate(raw or []):
        where = f"{param}.{i}"
        if not isinstance(entry, dict):
            raise InvalidRequestError(f"'{where}' must be an object")
        kind = entry.get("type", "function")
        if kind != "function":
            raise InvalidRequestError(f"'{where}.type' must be 'function', not {kind!r}")
        fn = entry.get("function", entry)
        if not isinstance(fn, dict):
            raise InvalidRequestError(f"'{where}.function' must be an object")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequestError(
                f"'{where}.function.name' must be 1-64 letters, digits, '_', '-' or '.'"
            )
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise InvalidRequestError(f"'{where}.function.parameters' must be a JSON Schema object")
        desc = fn.get("description") or ""
        tools.append(Tool(name, str(desc), params))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequestError(f"'{param}' names a function twice")
    return tools


def parse_tool_choice(raw: Any, tools: list[Tool], param: str = "tool_choice") -> ToolChoice:
    """ "none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}."""
    if raw is None:
        return ToolChoice(ToolChoiceMode.AUTO if tools else ToolChoiceMode.NONE)
    if isinstance(raw, str):
        try:
            mode = ToolChoiceMode(raw)
        except ValueError:
            mode = None
        if mode is None or mode is ToolChoiceMode.NAMED:
            raise InvalidRequestError(f"'{param}' must be none, auto, required or a function")
        if mode is ToolChoiceMode.REQUIRED and not tools:
            raise InvalidRequestError(f"'{param}' is 'required' but no tools are given")
        return ToolChoice(mode)
    if isinstance(raw, dict):
        fn = raw.get("function") if isinstance(raw.get("function"), dict) else raw
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise InvalidRequestError(f"'{param}.function.name' is required")
        if name not in {t.name for t in tools}:
            raise InvalidRequestError(f"'{param}' names '{name}', which is not among the tools")
        return ToolChoice(ToolChoiceMode.NAMED, name)
    raise InvalidRequestError(f"'{param}' must be a string or an object")


def arguments_object(raw: Any) -> dict[str, Any]:
    """Arguments of a call sent back by a client (JSON text or an object) as a dict, as
    chat templates expect them (they apply `tojson` themselves)."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            raise InvalidRequestError("a tool call's arguments are not valid JSON") from None
        if isinstance(value, dict):
            return value
    raise InvalidRequestError("a tool call's arguments must be a JSON object")
