"""`@corral.tool`: a typed, documented Python function becomes a tool the model can call.

The parameters' annotations become a JSON Schema (str, int, float, bool, None, list[X],
dict[str, X], tuple, Literal, Enum, Optional/unions, dataclasses, Annotated[X, "doc"]);
parameters without a default are required. The docstring's first paragraph describes the
tool, and its `Args:` section (Google style) or `:param x:` lines describe the parameters.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from corral.chat.tools.types import Tool

_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    Any: {},
}


def type_schema(tp: Any) -> dict[str, Any]:
    """JSON Schema of a Python type annotation."""
    if tp in _SIMPLE:
        return dict(_SIMPLE[tp])
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        docs = [a for a in args[1:] if isinstance(a, str)]
        return {**schema, "description": docs[0]} if docs else schema
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [type_schema(a) for a in args]}
    if origin in (list, set, frozenset) or tp in (list, set, frozenset):
        return {"type": "array", "items": type_schema(args[0])} if args else {"type": "array"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": type_schema(args[0])}
        n = len(args)
        items = [type_schema(a) for a in args]
        return {"type": "array", "prefixItems": items, "minItems": n, "maxItems": n}
    if origin is dict or tp is dict:
        if len(args) == 2:
            return {"type": "object", "additionalProperties": type_schema(args[1])}
        return {"type": "object"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp, include_extras=True)
        props = {f.name: type_schema(hints[f.name]) for f in dataclasses.fields(tp)}
        required = [
            f.name
            for f in dataclasses.fields(tp)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        return {"type": "object", "properties": props, "required": required}
    raise TypeError(f"no JSON Schema for the type {tp!r}")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google- or Sphinx-style docstring."""
    text = inspect.cleandoc(doc or "")
    params: dict[str, str] = {}
    for m in re.finditer(r"^:param\s+(?:\w+\s+)?(\w+):\s*(.+)$", text, re.M):
        params[m.group(1)] = m.group(2).strip()
    section = re.search(r"^(?:Args|Arguments|Parameters):\s*\n((?:[ \t]+.*\n?|\s*\n)*)", text, re.M)
    if section:
        current = None
        for line in section.group(1).splitlines():
            m = re.match(r"^\s+(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if m:
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif current and line.strip():
                params[current] += " " + line.strip()
    first = re.split(r"\n\s*\n", text, maxsplit=1)[0] if text else ""
    if re.match(r"^(Args|Arguments|Parameters|:param)", first):
        first = ""
    return " ".join(first.split()), params


class ToolFunction:
    """A function with its tool description; calling it calls the function."""

    def __init__(self, fn: Callable[..., Any], name: str | None, description: str | None):
        functools.update_wrapper(self, fn)
        self.fn = fn
        desc, param_docs = parse_docstring(fn.__doc__)
        hints = typing.get_type_hints(fn, include_extras=True)
        props: dict[str, Any] = {}
        required: list[str] = []
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            schema = type_schema(hints.get(p.name, Any))
            if p.name in param_docs and "description" not in schema:
                schema["description"] = param_docs[p.name]
            if p.default is p.empty:
                required.append(p.name)
            elif isinstance(p.default, str | int | float | bool):
                schema["default"] = p.default
            props[p.name] = schema
        params = {"type": "object", "properties": props, "required": required}
        self.tool = Tool(name or fn.__name__, description or desc, params)

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI `tools` entry."""
        return self.tool.openai()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<corral.tool {self.tool.name}>"


@typing.overload
def tool(fn: Callable[..., Any]) -> ToolFunction: ...
@typing.overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], ToolFunction]: ...
def tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None,
    description: str | None = None,
) -> Any:  # fmt: skip
    """Decorator: `@corral.tool` or `@corral.tool(name=..., description=...)`."""
    if fn is None:
        return lambda f: ToolFunction(f, name, description)
    return ToolFunction(fn, name, description)
