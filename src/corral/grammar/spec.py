"""What a request constrains its output to, and its compilation to an llguidance grammar.

A `GrammarSpec` is one of: a JSON Schema, "any JSON object", a GBNF grammar (llama.cpp's
format), a Lark grammar (llguidance's own, which can embed JSON schemas with `%json`), or a
regular expression. `to_llguidance` turns it into llguidance's grammar text and checks it;
every problem becomes a `GrammarError` naming it, raised before generation starts, so a bad
schema is a 400 and never a hang or a mid-stream failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from corral.errors import InvalidRequestError
from corral.grammar.schema import close_objects

# JSON is written compact but readable, as json.dumps writes it: one space after ',' and
# ':' and no other whitespace. Free whitespace lets small models emit newlines forever.
JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
# A schema that is not worth sending to the compiler (it would take long to even parse).
MAX_SOURCE_CHARS = 200_000


class GrammarKind(Enum):
    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"  # any JSON object (OpenAI json_object, ollama "json")
    GBNF = "gbnf"
    LARK = "lark"
    REGEX = "regex"


class GrammarError(InvalidRequestError):
    """A schema or grammar that is invalid, or that the grammar engine cannot compile.

    `unsupported` tells the second case (a valid schema using a feature the engine lacks)."""

    def __init__(self, message: str, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


@dataclass(frozen=True)
class GrammarSpec:
    """A constraint on generated text; `source` is a schema dict or grammar text."""

    kind: GrammarKind
    source: Any = None

    @staticmethod
    def json_schema(schema: Any) -> GrammarSpec:
        """A JSON Schema, as a dict or JSON text; `true`/`{}` mean any JSON value."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise GrammarError(f"the JSON schema is not valid JSON: {e}") from None
        if schema is True:
            schema = {}
        if not isinstance(schema, dict):
            raise GrammarError(f"a JSON schema must be an object, not {type(schema).__name__}")
        return GrammarSpec(GrammarKind.JSON_SCHEMA, schema)

    @staticmethod
    def json_object() -> GrammarSpec:
        return GrammarSpec(GrammarKind.JSON_OBJECT)

    @staticmethod
    def gbnf(text: str) -> GrammarSpec:
        return GrammarSpec(GrammarKind.GBNF, _text(text, "grammar"))

    @staticmethod
    def lark(text: str) -> GrammarSpec:
        return GrammarSpec(GrammarKind.LARK, _text(text, "grammar"))

    @staticmethod
    def regex(text: str) -> GrammarSpec:
        return GrammarSpec(GrammarKind.REGEX, _text(text, "regex"))


def _text(text: Any, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise GrammarError(f"the {what} is empty")
    if len(text) > MAX_SOURCE_CHARS:
        raise GrammarError(f"the {what} is {len(text)} characters; the limit is {MAX_SOURCE_CHARS}")
    return text


def _schema_grammar(schema: dict[str, Any]) -> str:
    import llguidance

    if len(json.dumps(schema)) > MAX_SOURCE_CHARS:
        raise GrammarError(f"the JSON schema is over {MAX_SOURCE_CHARS} characters")
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(
            close_objects(schema), overrides=JSON_OPTIONS
        )
    except (ValueError, TypeError) as e:
        raise GrammarError(f"invalid JSON schema: {_one_line(e)}") from None


def _gbnf_to_lark(text: str) -> str:
    from llguidance.gbnf_to_lark import any_to_lark

    try:
        return any_to_lark(text)
    except Exception as e:  # noqa: BLE001 - the converter raises plain Exceptions too
        raise GrammarError(f"invalid GBNF grammar: {_one_line(e)}") from None


def to_llguidance(spec: GrammarSpec) -> str:
    """llguidance grammar text for `spec`, checked; GrammarError names what is wrong."""
    import llguidance

    m = llguidance.LLMatcher
    if spec.kind is GrammarKind.JSON_SCHEMA:
        grammar = _schema_grammar(spec.source)
    elif spec.kind is GrammarKind.JSON_OBJECT:
        grammar = _schema_grammar({"type": "object"})
    elif spec.kind is GrammarKind.GBNF:
        grammar = m.grammar_from_lark(_gbnf_to_lark(spec.source))
    elif spec.kind is GrammarKind.LARK:
        grammar = m.grammar_from_lark(spec.source)
    else:
        grammar = m.grammar_from_regex(spec.source)
    failed, messages = m.validate_grammar_with_warnings(grammar)
    if failed:
        raise _compile_error(spec.kind, messages[0] if messages else "unknown error")
    return grammar


# llguidance's wording for a valid schema that uses what it does not implement
_UNSUPPORTED_MARKERS = ("Unimplemented", "not supported", "unsupported")


def _compile_error(kind: GrammarKind, message: str) -> GrammarError:
    msg = _one_line(message)
    what = {
        GrammarKind.JSON_SCHEMA: "JSON schema",
        GrammarKind.JSON_OBJECT: "JSON schema",
        GrammarKind.GBNF: "GBNF grammar",
        GrammarKind.LARK: "Lark grammar",
        GrammarKind.REGEX: "regex",
    }[kind]
    if any(k in message for k in _UNSUPPORTED_MARKERS):
        return GrammarError(f"the grammar engine cannot compile this {what}: {msg}", True)
    return GrammarError(f"invalid {what}: {msg}")


def _one_line(e: object) -> str:
    return " ".join(str(e).split())
