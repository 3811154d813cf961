"""Completions for the language server: one model in process, its Scheduler, FIM prompts.

The model is loaded once and kept with a Scheduler of one slot. That slot's prompt cache is
what makes completion-as-you-type cheap: the next keystroke's prompt starts with the same
tokens (extra context, then the prefix up to near the cursor in PSM order; the whole suffix
too in SPM order), so only the last few tokens are computed again. A newer request for the
same document cancels the one still running: its answer would be stale anyway.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING

from corral.engine.sampling import SamplingParams
from corral.fim import FimBuilder, FimOrder, FimRequest, FimStops, keep_tail, require_fim_tokens
from corral.lsp.heal import BlankPieces, HealBlanks
from corral.lsp.shape import Cursor, Shape, classify, cut, finish

if TYPE_CHECKING:
    from corral.engine.constraints import LogitsConstraint
    from corral.engine.scheduler import RequestHandle, Scheduler
    from corral.model import Model

DEFAULT_MAX_TOKENS = 64  # an editor suggestion, not an essay: keeps latency low
DEFAULT_CONTEXT_WINDOW = 2048
_TRAILING_BLANKS = re.compile(r"[ \t]+$")


class FimMode(Enum):
    """Whether prompts are FIM (prefix and suffix) or the prefix alone."""

    FIM = "fim"  # the model's FIM tokens; a model without them is an error
    PREFIX = "prefix"  # explicitly asked for (llm-ls `fim.enabled: false`, `--no-fim`)


@dataclass
class Ask:
    """One completion request, whatever protocol it came in."""

    key: str  # the document: a newer request with the same key supersedes this one
    prefix: str
    suffix: str
    mode: FimMode = FimMode.FIM
    context_window: int = DEFAULT_CONTEXT_WINDOW
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0  # greedy: the same code gives the same suggestion
    top_p: float = 0.95
    stop: list[str] = field(default_factory=list)
    path: str | None = None


@dataclass
class Answer:
    """A completion and what produced it."""

    text: str
    shape: Shape
    cursor: Cursor
    prompt_tokens: int = 0
    cached_tokens: int = 0
    superseded: bool = False


class Completer:
    """Loads a model on first use and answers `Ask`s through its Scheduler."""

    def __init__(
        self, model_name: str | None, n_ctx: int | None = None, order: FimOrder = FimOrder.PSM
    ) -> None:
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.order = order
        self.model: Model | None = None
        self.scheduler: Scheduler | None = None
        self._loading: asyncio.Lock | None = None
        self._running: dict[str, RequestHandle] = {}
        self._superseded: set[int] = set()  # ids of handles a newer request cancelled
        self._pieces: BlankPieces | None = None

    async def ensure(self, name: str | None = None) -> Model:
        """The loaded model; `name` (a store name or path) loads that one if none was
        given at start-up. Loading runs in a thread: the server keeps answering."""
        if self._loading is None:  # made here: a lock belongs to the loop that runs it
            self._loading = asyncio.Lock()
        async with self._loading:
            if self.model is None:
                await asyncio.to_thread(self.load, name)
            assert self.model is not None
            return self.model

    def load(self, name: str | None = None) -> None:
        """Load the model (the start-up name, else `name`) and start its Scheduler."""
        if self.model is not None:
            return
        target = self.model_name or name
        if not target:
            raise ValueError(
                "no model: start `corral lsp --model NAME` or send `model` in llm-ls/getCompletions"
            )
        from corral.engine.scheduler import Scheduler
        from corral.model import load

        model = load(target, n_ctx=self.n_ctx)
        self.scheduler = Scheduler(model, max_queue=8, slots=1)
        self.model, self.model_name = model, target

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()

    def prompt(self, model: Model, ask: Ask) -> tuple[list[int], FimStops]:
        """(prompt ids, FIM stops) for `ask`, within its context window and the model's
        context less the tokens to generate. A prefix-only prompt still stops on the
        model's FIM markers, if it has them: a new file or FIM block is no completion."""
        tok = model.tokenizer
        budget = min(ask.context_window, model.info.n_ctx - ask.max_tokens - 1)
        if ask.mode is FimMode.PREFIX:
            head = [tok.bos_id] if tok.add_bos and tok.bos_id is not None else []
            ids = tok.encode(ask.prefix, add_special=False)
            stops = FimStops.of_model(tok, model.info.metadata)
            return head + keep_tail(tok, ids, budget - len(head)), stops
        tokens = require_fim_tokens(tok, model.info.metadata, f"model {model.info.name!r}")
        req = FimRequest(ask.prefix, ask.suffix, path=ask.path)
        built = FimBuilder(tok, tokens, self.order).build(req, budget)
        return built.ids, FimStops.of(tok, built.stop_ids)

    async def complete(self, ask: Ask, model_name: str | None = None) -> Answer:
        """The completion for `ask`, cut to the cursor's shape."""
        from corral.engine.scheduler import Request

        cursor = classify(ask.prefix, ask.suffix)
        if cursor.shape is Shape.EMPTY:
            return Answer("", cursor.shape, cursor)
        model = await self.ensure(model_name)
        assert self.scheduler is not None
        # token healing (corral.lsp.heal): the typed indentation is left out of the prompt,
        # written again by the model, and dropped from the answer
        blanks = m.group() if (m := _TRAILING_BLANKS.search(ask.prefix)) else ""
        healed = replace(ask, prefix=ask.prefix[: len(ask.prefix) - len(blanks)])
        ids, fim = await asyncio.to_thread(self.prompt, model, healed)
        stops = fim.stop_strings(ask.stop)
        if cursor.shape is Shape.SINGLE_LINE:
            stops.append("\n")  # the line is all we keep: stop generating there
        params = SamplingParams(temperature=ask.temperature, top_p=ask.top_p, top_k=40, min_p=0.0)
        heal: LogitsConstraint | None = None
        if blanks:
            if self._pieces is None:
                self._pieces = await asyncio.to_thread(BlankPieces, model.tokenizer)
            heal = HealBlanks(self._pieces, blanks)
        constraint = fim.constraint(heal)
        request = Request(
            prompt_ids=ids, max_tokens=ask.max_tokens, sampling=params, stop=stops,
            constraint=constraint,
        )  # fmt: skip
        if (old := self._running.pop(ask.key, None)) is not None:
            self._superseded.add(old.id)
            old.cancel()
        handle = self.scheduler.submit(request, loop=asyncio.get_running_loop())
        self._running[ask.key] = handle
        raw, text, cached = "", "", 0
        try:
            async for ev in handle:
                raw += ev.text
                text = _unheal(raw, blanks)
                if ev.timings is not None:
                    cached = ev.timings.cached_tokens
                if cut(text, cursor)[1]:
                    break  # the shape is complete: the rest would be thrown away
        finally:
            handle.cancel()
            if self._running.get(ask.key) is handle:
                del self._running[ask.key]
        superseded = handle.id in self._superseded
        self._superseded.discard(handle.id)
        return Answer(finish(text, cursor), cursor.shape, cursor, len(ids), cached, superseded)


def _unheal(text: str, blanks: str) -> str:
    """`text` without the indentation the user had typed already (the healing constraint
    made the model write it again)."""
    lead = len(text) - len(text.lstrip(" \t"))
    return text[min(lead, len(blanks)) :]
