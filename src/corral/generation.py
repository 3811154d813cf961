"""The text layer over the engine: token events -> text events, stop strings, results.

The engine yields token ids; here they become text through a streaming detokenizer that
never splits a UTF-8 character, and stop strings are matched on that text without ever
emitting part of a stop string (text that might start one is held back until it is decided).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from corral.engine.generate import FinishReason, Timings, TokenEvent
from corral.tokenizer import Tokenizer


@dataclass(frozen=True)
class GenerationEvent:
    """One step of a streamed generation: a text piece (may be "" while a character or a
    possible stop string is incomplete), the token behind it, and on the last event the
    finish reason and timings."""

    text: str
    token_id: int | None
    logprob: float | None
    finish_reason: FinishReason | None = None
    timings: Timings | None = None
    eog: bool = False  # the token was an end-of-generation token, not part of the answer
    top_logprobs: tuple[tuple[int, float], ...] | None = None  # most likely alternatives


@dataclass
class GenerationResult:
    """A finished generation."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    timings: Timings
    logprobs: list[float] = field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


class StopStrings:
    """Finds the first stop string in streamed text; releases only text that cannot be
    the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit, whether a stop string was found)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        first = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if first >= 0:
            out, self.pending = self.pending[:first], ""
            return out, True
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class TextStream:
    """Per-request text state: turns each TokenEvent into a GenerationEvent, cutting at the
    first stop string (which then becomes the finish reason)."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str]) -> None:
        self.decoder = tokenizer.stream_decoder()
        self.stops = StopStrings(stop)
        self.done = False

    def push(self, ev: TokenEvent, timings: Timings) -> GenerationEvent:
        """The text event for one token; after a finishing event `done` is set."""
        piece = "" if ev.eog else self.decoder.push(ev.token_id)
        if ev.finish_reason is not None:
            piece += self.decoder.flush()
        text, hit = self.stops.push(piece)
        finish = FinishReason.STOP if hit else ev.finish_reason
        if finish is None:
            return GenerationEvent(text, ev.token_id, ev.logprob, top_logprobs=ev.top_logprobs)
        if not hit:
            text += self.stops.flush()
        self.done = True
        return GenerationEvent(
            text, ev.token_id, ev.logprob, finish, timings, ev.eog, ev.top_logprobs
        )


def text_events(
    tokens: Iterator[TokenEvent], tokenizer: Tokenizer, stop: Sequence[str], timings: Timings
) -> Iterator[GenerationEvent]:
    """Token events -> text events, cutting at the first stop string."""
    stream = TextStream(tokenizer, stop)
    for ev in tokens:
        yield stream.push(ev, timings)
        if stream.done:
            return


def collect(events: Iterator[GenerationEvent], prompt_tokens: int) -> GenerationResult:
    """Run a stream to its end and gather the result."""
    parts: list[str] = []
    ids: list[int] = []
    logprobs: list[float] = []
    last: GenerationEvent | None = None
    for ev in events:
        parts.append(ev.text)
        last = ev
        if ev.token_id is not None and not ev.eog:
            ids.append(ev.token_id)
            logprobs.append(ev.logprob if ev.logprob is not None else 0.0)
    if last is None:  # max_tokens == 0
        return GenerationResult("", [], FinishReason.LENGTH, prompt_tokens, Timings())
    return GenerationResult(
        "".join(parts),
        ids,
        last.finish_reason or FinishReason.LENGTH,
        prompt_tokens,
        last.timings or Timings(),
        logprobs,
    )
