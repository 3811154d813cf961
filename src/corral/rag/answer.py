"""Retrieved chunks -> a prompt with numbered sources -> an answer that cites them.

The prompt lists sources as `[n] path:lines (heading)` followed by their text and asks the
model to cite them as [n]. Sources are dropped from the lowest-ranked up until the prompt
plus the answer budget fits the chat model's context. After the answer, `cited` maps the [n]
the model wrote back to the chunks (numbers that name no source are ignored).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from corral.errors import ContextOverflowError
from corral.rag.types import Hit

SYSTEM = (
    "You answer questions using only the numbered sources below. After each statement, cite "
    "the source it comes from as [1], [2], etc. If the sources do not contain the answer, "
    "say that you do not know."
)
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")

Message = dict[str, Any]


class ChatModel(Protocol):
    """What answering needs of a model (`corral.Model` is one)."""

    def chat(self, messages: list[Message], max_tokens: int = 512, **kw: Any) -> Any: ...
    def chat_prompt_ids(self, messages: list[Message]) -> list[int]: ...


def format_sources(hits: Sequence[Hit]) -> str:
    parts = []
    for n, h in enumerate(hits, 1):
        head = f"[{n}] {h.location}" + (f" ({h.heading})" if h.heading else "")
        parts.append(f"{head}\n{h.text}")
    return "\n\n".join(parts)


def build_messages(question: str, hits: Sequence[Hit]) -> list[Message]:
    """Chat messages asking `question` over `hits` as numbered sources."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Sources:\n\n{format_sources(hits)}\n\nQuestion: {question}"},
    ]


def fit_sources(
    question: str, hits: Sequence[Hit], prompt_tokens: Callable[[list[Message]], int],
    limit: int,
) -> tuple[list[Message], list[Hit]]:  # fmt: skip
    """The messages with as many of the best hits as fit in `limit` prompt tokens."""
    kept = list(hits)
    while True:
        messages = build_messages(question, kept)
        if prompt_tokens(messages) <= limit:
            return messages, kept
        if not kept:
            raise ContextOverflowError(f"the question alone is over {limit} prompt tokens")
        kept.pop()  # hits are best first: the weakest goes


def cited(answer: str, hits: Sequence[Hit]) -> list[int]:
    """1-based source numbers the answer cites that exist, in first-cited order."""
    seen: list[int] = []
    for m in _CITATION.finditer(answer):
        for n in (int(x) for x in m.group(1).split(",")):
            if 1 <= n <= len(hits) and n not in seen:
                seen.append(n)
    return seen


@dataclass
class Answer:
    """An answer, the sources it was given, and which of them it cited."""

    question: str
    text: str
    sources: list[Hit]
    citations: list[int] = field(default_factory=list)

    def sources_text(self, all_sources: bool = True) -> str:
        """`[n] path:lines  heading` lines: the cited ones (marked *) and, by default, all."""
        lines = []
        for n, h in enumerate(self.sources, 1):
            if all_sources or n in self.citations:
                mark = "*" if n in self.citations else " "
                lines.append(f"{mark}[{n}] {h.location}" + (f"  {h.heading}" if h.heading else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "citations": self.citations,
            "sources": [h.to_dict() | {"n": n} for n, h in enumerate(self.sources, 1)],
        }


def answer_stream(
    model: ChatModel, question: str, hits: Sequence[Hit], *, n_ctx: int,
    max_tokens: int = 512, **sampling: Any,
) -> tuple[list[Hit], Iterator[str]]:  # fmt: skip
    """(sources used, answer text pieces): the prompt fits `n_ctx` with `max_tokens` left."""
    limit = n_ctx - max_tokens
    messages, used = fit_sources(question, hits, lambda m: len(model.chat_prompt_ids(m)), limit)
    events = model.chat(messages, max_tokens, stream=True, **sampling)
    return used, (e.text for e in events if e.text and not getattr(e, "eog", False))


def ask(
    model: ChatModel, question: str, hits: Sequence[Hit], *, n_ctx: int,
    max_tokens: int = 512, on_text: Callable[[str], None] | None = None, **sampling: Any,
) -> Answer:  # fmt: skip
    """Answer `question` from `hits`, streaming pieces to `on_text` as they come."""
    used, pieces = answer_stream(model, question, hits, n_ctx=n_ctx, max_tokens=max_tokens,
                                 **sampling)  # fmt: skip
    out = []
    for piece in pieces:
        out.append(piece)
        if on_text:
            on_text(piece)
    text = "".join(out)
    return Answer(question, text, used, cited(text, used))
