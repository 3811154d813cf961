"""Grammars that make tool calls parse: a call is a JSON object naming one of the tools,
its arguments valid under that tool's schema, in the format's wrapping.

Parallel calls end at a repeat: `NoRepeatedCalls` ends the output (once the grammar can end)
after a call identical to an earlier one, which small models otherwise write again and
again until max_tokens; the parsers drop the repeat.

tool_choice required/named: the whole output is calls (`call_grammar`). auto: the model
writes freely until it opens a call (the format's trigger, e.g. `<tool_call>`), and from
there `TriggeredConstraint` holds the rest to the call grammar, as llama.cpp's lazy
grammars do. Markers that are special tokens in the vocabulary are matched as those tokens
(`<[id]>`), others as text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

from corral.chat.tools.formats import ARGS_MARKER, FormatSpec, ToolFormat
from corral.chat.tools.parse import ToolCallParser
from corral.chat.tools.types import Tool
from corral.grammar.constraint import GrammarConstraint
from corral.grammar.schema import close_objects
from corral.grammar.spec import JSON_OPTIONS
from corral.grammar.vocab import is_marked_special

if TYPE_CHECKING:
    from corral.tokenizer import Tokenizer


def special_token(tokenizer: Tokenizer, text: str) -> int | None:
    """The id of `text` if it is one special token of the vocabulary."""
    tid = tokenizer.vocab.find(text)
    if tid is None or not is_marked_special(tokenizer, tid, text.encode()):
        return None
    return tid


def _lit(tokenizer: Tokenizer, text: str) -> str:
    tid = special_token(tokenizer, text)
    return f"<[{tid}]>" if tid is not None else json.dumps(text)


def call_schema(tools: list[Tool], args_key: str) -> dict[str, Any]:
    """JSON Schema of one call object: {"name": one tool, args_key: its arguments}."""
    options = []
    for t in tools:
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, args_key: close_objects(t.parameters)},
                "required": ["name", args_key],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def _json(schema: dict[str, Any]) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": JSON_OPTIONS})


def call_grammar(
    tokenizer: Tokenizer, fmt: ToolFormat, spec: FormatSpec, tools: list[Tool],
    parallel: bool, after_trigger: bool = False,
) -> str:  # fmt: skip
    """Lark text for the calls of `fmt` (from their trigger on, or after it)."""
    if spec.named:
        return _named_grammar(tokenizer, spec, tools, parallel, after_trigger)
    schema = call_schema(tools, spec.args_key)
    trig = _lit(tokenizer, spec.trigger)
    if fmt is ToolFormat.MISTRAL:
        array: dict[str, Any] = {"type": "array", "items": schema, "minItems": 1}
        if not parallel:
            array["maxItems"] = 1
        head = '" "?' if after_trigger else f'{trig} " "'
        return f"start: {head} calls\ncalls: {_json(array)}\n"
    if fmt is ToolFormat.LLAMA3:
        return f"start: body\nbody: {_json(schema)}\n"
    close = _lit(tokenizer, spec.close)
    more = ' ("\\n" call)*' if parallel else ""
    first = f'"\\n"? body "\\n"? {close}' if after_trigger else "call"
    return f'start: {first}{more}\ncall: {trig} "\\n" body "\\n" {close}\nbody: {_json(schema)}\n'


def _named_grammar(
    tokenizer: Tokenizer, spec: FormatSpec, tools: list[Tool], parallel: bool,
    after_trigger: bool,
) -> str:  # fmt: skip
    """Mistral v11+: `[TOOL_CALLS]name[ARGS]{arguments}` per call, a rule per tool so that
    each name is followed by arguments valid under that tool's own schema."""
    trig = _lit(tokenizer, spec.trigger)
    marker = _lit(tokenizer, ARGS_MARKER)
    more = " call*" if parallel else ""
    lines = [
        f"start: {'body' if after_trigger else 'call'}{more}",
        f"call: {trig} body",
        "body: " + " | ".join(f"tool{i}" for i in range(len(tools))),
    ]
    for i, t in enumerate(tools):
        lines.append(f"tool{i}: {json.dumps(t.name)} {marker} args{i}")
        lines.append(f"args{i}: {_json(close_objects(t.parameters))}")
    return "\n".join(lines) + "\n"


class TriggeredConstraint:
    """No constraint until the output contains `trigger`, then `grammar` for the rest."""

    def __init__(self, tokenizer: Tokenizer, trigger: str, grammar: str) -> None:
        self._tok = tokenizer
        self._grammar = grammar
        self._trigger_id = special_token(tokenizer, trigger)
        self._trigger = trigger.encode()
        self._tail = b""
        self._inner: GrammarConstraint | None = None
        self._gave_up = False
        GrammarConstraint(tokenizer, grammar)  # check it now: a bad grammar fails the request

    @property
    def active_constraint(self) -> GrammarConstraint | None:
        """The grammar once triggered, else None."""
        return self._inner

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self._inner is None else self._inner.mask(logits)

    def accept(self, token: int) -> None:
        if self._inner is not None:
            self._inner.accept(token)
            return
        if self._gave_up:
            return
        if self._trigger_id is not None:
            if token == self._trigger_id:
                self._inner = GrammarConstraint(self._tok, self._grammar)
            return
        self._tail = (self._tail + self._tok.token_to_piece(token))[-4 * len(self._trigger) :]
        at = self._tail.find(self._trigger)
        if at < 0:
            return
        rest = self._tail[at + len(self._trigger) :]
        inner = GrammarConstraint(self._tok, self._grammar)
        # the trigger's token may carry text past it: that text must fit the grammar too
        if rest and not inner.consume_text(rest):
            self._gave_up = True  # free text after all; the parser judges the result
            return
        self._inner = inner

    def is_done(self) -> bool:
        return self._inner is not None and self._inner.is_done()


class NoRepeatedCalls:
    """Wraps a call constraint: once a call repeats an earlier one (same name, same
    arguments), only an end-of-generation token is allowed as soon as the grammar is
    complete. Not for JSON-array formats, whose array must still close."""

    def __init__(self, inner: Any, tokenizer: Tokenizer, spec: FormatSpec) -> None:
        self._inner = inner
        self._decoder = tokenizer.stream_decoder()
        self._parser = ToolCallParser(spec)
        self._end_ids = torch.tensor(sorted(tokenizer.eog_ids) or [0], dtype=torch.long)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        inner = getattr(self._inner, "active_constraint", self._inner)
        if self._parser.repeats and inner is not None and inner.complete:
            out = torch.full_like(logits, float("-inf"))
            out[self._end_ids] = logits[self._end_ids]
            return out
        return self._inner.mask(logits)  # type: ignore[no-any-return]

    def accept(self, token: int) -> None:
        self._inner.accept(token)
        self._parser.push(self._decoder.push(token))

    def is_done(self) -> bool:
        return self._inner.is_done()  # type: ignore[no-any-return]
