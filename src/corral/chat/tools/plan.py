"""One request's tool handling: format, prompt, constraint and parser, decided together.

`ToolPlan.create(template_source, tools, tool_choice, parallel)` picks the format from the
chat template; routes and `Model.chat` then call `prepare` on the messages before rendering,
`constraint` for the grammar that enforces required/named choices (and holds calls to the
schemas in auto mode once the model opens one), and `parse`/`parser` on the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.chat.tools.formats import SPECS, FormatSpec, ToolFormat, detect_format
from corral.chat.tools.parse import ParsedOutput, ToolCallParser, parse_output
from corral.chat.tools.prompt import prepare
from corral.chat.tools.types import Tool, ToolChoice, ToolChoiceMode

if TYPE_CHECKING:
    from corral.engine.constraints import LogitsConstraint
    from corral.tokenizer import Tokenizer


@dataclass(frozen=True)
class ToolPlan:
    fmt: ToolFormat
    tools: tuple[Tool, ...]
    choice: ToolChoice
    parallel: bool = True

    @staticmethod
    def create(
        template_source: str | None, tools: list[Tool], choice: ToolChoice | None = None,
        parallel: bool = True, fmt: ToolFormat | None = None,
    ) -> ToolPlan:  # fmt: skip
        """The plan for a template (its source text picks the format unless `fmt`)."""
        mode = ToolChoiceMode.AUTO if tools else ToolChoiceMode.NONE
        return ToolPlan(
            fmt or detect_format(template_source), tuple(tools), choice or ToolChoice(mode),
            parallel,
        )  # fmt: skip

    @property
    def spec(self) -> FormatSpec:
        return SPECS[self.fmt]

    @property
    def offered(self) -> list[Tool]:
        """The tools the prompt shows (none with tool_choice none)."""
        return [] if self.choice.mode is ToolChoiceMode.NONE else list(self.tools)

    @property
    def callable(self) -> list[Tool]:
        """The tools the output may call."""
        if self.choice.mode is ToolChoiceMode.NAMED:
            return [t for t in self.tools if t.name == self.choice.name]
        return self.offered

    def prepare(
        self, messages: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """(messages, `tools` for the template) ready to render."""
        return prepare(messages, self.offered, self.fmt)

    def constraint(self, tokenizer: Tokenizer) -> LogitsConstraint | None:
        """A fresh constraint for one generation, or None for free text. GrammarError if
        a tool's parameters schema cannot be compiled."""
        # imported here: grammars pull in torch and llguidance, parsing needs neither
        from corral.chat.tools.grammar import NoRepeatedCalls, TriggeredConstraint, call_grammar
        from corral.grammar.constraint import GrammarConstraint
        from corral.grammar.spec import GrammarError

        mode = self.choice.mode
        tools = self.callable
        if mode is ToolChoiceMode.NONE or not tools:
            return None
        parallel = self.parallel and mode is not ToolChoiceMode.NAMED
        try:
            if mode is ToolChoiceMode.AUTO:
                if self.spec.at_start:  # the call's opening brace is no safe trigger
                    return None
                grammar = call_grammar(tokenizer, self.fmt, self.spec, tools, parallel, True)
                c: Any = TriggeredConstraint(tokenizer, self.spec.trigger, grammar)
            else:
                grammar = call_grammar(tokenizer, self.fmt, self.spec, tools, parallel)
                c = GrammarConstraint(tokenizer, grammar)
        except GrammarError as e:
            raise GrammarError(
                f"the tools' parameters cannot be compiled: {e}", e.unsupported
            ) from None
        if parallel and not self.spec.array:
            c = NoRepeatedCalls(c, tokenizer, self.spec)
        return c  # type: ignore[no-any-return]

    def names(self) -> frozenset[str]:
        return frozenset(t.name for t in self.callable)

    def parser(self) -> ToolCallParser:
        """An incremental parser for a streamed answer."""
        return ToolCallParser(self.spec, self.names())

    def parse(self, text: str) -> ParsedOutput:
        """Content and calls of a whole answer (no calls when tool_choice is none)."""
        if self.choice.mode is ToolChoiceMode.NONE:
            return ParsedOutput(text, [], False)
        return parse_output(text, self.spec, self.names())
