"""Structured output and tools for the routes: request fields -> a constraint factory and a
tool plan, with every bad schema, grammar or tool turned into a 400 naming the field.

OpenAI: `response_format` (json_object, json_schema with `schema` and `strict`), llama.cpp's
extra `grammar` (GBNF) and `json_schema` fields, `tools`/`tool_choice`/`parallel_tool_calls`.
ollama: `format` ("json" or a schema) and `tools`. Compilation happens here, before the
generation is queued; each run then gets its own fresh matcher from the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral.errors import InvalidRequestError
from corral.grammar import GrammarError, GrammarSpec, make_constraint, to_llguidance
from corral.grammar.spec import GrammarKind
from corral.server.errors import ApiError, bad_request

if TYPE_CHECKING:
    from corral.chat.tools import ToolPlan
    from corral.engine.constraints import LogitsConstraint
    from corral.server.manager import LoadedModel

ConstraintFactory = Callable[[], "LogitsConstraint | None"]


def grammar_error(e: GrammarError, param: str) -> ApiError:
    """The 400 for a schema or grammar; `code` tells invalid from uncompilable."""
    code = "unsupported_schema" if e.unsupported else "invalid_schema"
    return ApiError(400, str(e), code=code, param=param)


def openai_spec(
    response_format: dict[str, Any] | None, grammar: str | None, json_schema: Any
) -> tuple[GrammarSpec | None, str]:
    """The constraint an OpenAI-style body asks for, and the field it came from."""
    asked = [
        name
        for name, v in (("response_format", response_format), ("grammar", grammar),
                        ("json_schema", json_schema))
        if v is not None and not (name == "response_format" and _is_text(v))
    ]  # fmt: skip
    if len(asked) > 1:
        raise bad_request(f"give only one of {', '.join(asked)}", asked[1])
    try:
        if grammar is not None:
            return GrammarSpec.gbnf(grammar), "grammar"
        if json_schema is not None:
            return GrammarSpec.json_schema(json_schema), "json_schema"
        if response_format is None or _is_text(response_format):
            return None, ""
        kind = response_format.get("type")
        if kind == "json_object":
            return GrammarSpec.json_object(), "response_format"
        if kind == "json_schema":
            js = response_format.get("json_schema")
            if not isinstance(js, dict) or "schema" not in js:
                raise bad_request(
                    "'response_format.json_schema' needs a 'schema' object",
                    "response_format.json_schema",
                )
            return GrammarSpec.json_schema(js["schema"]), "response_format"
        raise bad_request(
            f"'response_format.type' must be text, json_object or json_schema, not {kind!r}",
            "response_format",
        )
    except GrammarError as e:
        raise grammar_error(e, asked[0] if asked else "response_format") from None


def _is_text(response_format: Any) -> bool:
    return isinstance(response_format, dict) and response_format.get("type", "text") == "text"


def ollama_spec(fmt: str | dict[str, Any] | None) -> GrammarSpec | None:
    """ollama's `format`: "json" (any JSON object) or a JSON Schema."""
    if fmt in (None, "", {}):
        return None
    if fmt == "json":
        return GrammarSpec.json_object()
    if isinstance(fmt, dict):
        try:
            return GrammarSpec.json_schema(fmt)
        except GrammarError as e:
            raise grammar_error(e, "format") from None
    raise bad_request("'format' must be \"json\" or a JSON schema object", "format")


def constraint_factory(
    entry: LoadedModel, spec: GrammarSpec | None, param: str
) -> ConstraintFactory | None:
    """Compile `spec` for `entry`'s tokenizer (blocking: run it in a thread)."""
    if spec is None:
        return None
    tok = entry.model.tokenizer
    try:
        grammar = to_llguidance(spec)
        json_numbers = spec.kind in (GrammarKind.JSON_SCHEMA, GrammarKind.JSON_OBJECT)
        make_constraint(tok, grammar, json_numbers)  # builds the tokenizer info once, checks
    except GrammarError as e:
        raise grammar_error(e, param) from None
    return lambda: make_constraint(tok, grammar, json_numbers)


def tool_plan(
    entry: LoadedModel, tools: list[Any] | None, tool_choice: Any, parallel: bool | None,
    prefix: str = "",
) -> ToolPlan | None:  # fmt: skip
    """The tool plan of a request, or None when it has no tools."""
    from corral.chat.tools import ToolPlan, parse_tool_choice, parse_tools

    try:
        specs = parse_tools(tools, prefix + "tools")
        if not specs:
            if tool_choice not in (None, "none", "auto"):
                raise InvalidRequestError("'tool_choice' needs 'tools'")
            return None
        choice = parse_tool_choice(tool_choice, specs, prefix + "tool_choice")
    except InvalidRequestError as e:
        raise bad_request(str(e), "tool_choice" if "tool_choice" in str(e) else "tools") from None
    return ToolPlan.create(template_source(entry), specs, choice, parallel is not False)


def template_source(entry: LoadedModel) -> str:
    """The chat template the model's prompts use (a created model's TEMPLATE first)."""
    if entry.template is not None:
        return entry.template.source
    from corral.chat import template_for

    return template_for(entry.model.info.metadata).source


def tool_factory(entry: LoadedModel, plan: ToolPlan | None) -> ConstraintFactory | None:
    """Per-run constraints for `plan` (checked once now: a tool's bad schema is a 400)."""
    if plan is None:
        return None
    tok = entry.model.tokenizer
    try:
        plan.constraint(tok)
    except GrammarError as e:
        raise grammar_error(e, "tools") from None
    return lambda: plan.constraint(tok)
