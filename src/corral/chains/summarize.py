"""Map-reduce summarization of texts longer than the model's context.

    corral summarize book.md --model smollm2

1. Split: the text is cut into chunks of at most `chunk_tokens` of the chat model's own
   tokens by the RAG splitter (paragraphs packed whole, long ones cut at lines, then
   sentences, then words), so no chunk is silently truncated by the model.
2. Map: each chunk is summarized on its own (`MAP_PROMPT`), in at most `summary_tokens`.
3. Reduce: when all the summaries fit in one combine prompt (`COMBINE_PROMPT`), one call
   combines them into the final summary, which is streamed. When they do not fit, they are
   packed in order into groups that each fit, every group is combined into one summary, and
   the reduce starts again on those ("collapse" rounds).

Each summary is cut to `summary_tokens` before it is packed, and the context is checked to
hold at least two of them in one combine prompt, so every collapse round at least halves
the count's excess over one: the recursion always ends. A text that fits in one chunk is
summarized by one streamed call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.chains.prompt import PromptTemplate
from corral.chains.sequential import Message, TextSink, complete
from corral.errors import ContextOverflowError, InvalidRequestError
from corral.rag.loaders import Unreadable, kind_of, load, paragraphs, read_text
from corral.rag.splitter import SplitOptions, Splitter
from corral.rag.types import Block, DocKind

MAP_PROMPT = PromptTemplate(
    "Write a concise summary of the following text, keeping its main points.\n\n"
    "Text:\n{{ text }}\n\nConcise summary:"
)
COMBINE_PROMPT = PromptTemplate(
    "Below are summaries of consecutive parts of one document. Combine them into one concise "
    "summary of the whole document, keeping the main points in order.\n\n"
    "{% for s in summaries %}Part {{ loop.index }}:\n{{ s }}\n\n{% endfor %}"
    "Summary of the whole document:"
)
DEFAULT_SUMMARY_TOKENS = 256
# Small models summarize a few pages far better than a whole 8k context at once, and CPU
# prefill of a huge chunk is slow; a bigger --chunk-tokens is still allowed.
DEFAULT_MAX_CHUNK_TOKENS = 2048
DEFAULT_SAMPLING: dict[str, Any] = {"temperature": 0.0, "repeat_penalty": 1.1}


class SummaryModel(Protocol):
    """What summarizing needs of a model (`corral.Model` is one)."""

    @property
    def info(self) -> Any: ...  # .n_ctx: the context size
    def tokenize(self, text: str, add_special: bool = True) -> list[int]: ...
    def detokenize(self, ids: Sequence[int]) -> str: ...
    def chat(self, messages: list[Message], max_tokens: int = 512, **kw: Any) -> Any: ...
    def chat_prompt_ids(self, messages: list[Message]) -> list[int]: ...


@dataclass(frozen=True)
class Progress:
    """Reported after each model call: the stage ("map", "collapse" or "combine"), calls
    done and planned in that stage, and the collapse round (0 during the map)."""

    stage: str
    done: int
    total: int
    round: int = 0


@dataclass
class Summary:
    """The final summary and the shape of the work that made it."""

    text: str
    chunks: int
    map_calls: int = 0
    collapse_rounds: list[int] = field(default_factory=list)  # groups combined per round
    combine_calls: int = 0  # collapse groups plus the final combine

    @property
    def calls(self) -> int:
        return self.map_calls + self.combine_calls


class MapReduceSummarizer:
    """Summarizes text of any length with one chat model; see the module docstring.

    Args:
        model: a loaded chat model.
        chunk_tokens: tokens of text per map call (default: what the context leaves after
            the prompt and the summary, at most `DEFAULT_MAX_CHUNK_TOKENS`).
        summary_tokens: the most tokens each summary (and the final one) may take.
        on_progress: called after every model call.
        sampling: `Model.generate` keywords (default: greedy, mild repeat penalty).

    Raises:
        ContextOverflowError: the context is too small for the prompts and summaries, or
            `chunk_tokens` is more than it leaves room for.
    """

    def __init__(
        self,
        model: SummaryModel,
        *,
        chunk_tokens: int | None = None,
        summary_tokens: int = DEFAULT_SUMMARY_TOKENS,
        map_prompt: PromptTemplate = MAP_PROMPT,
        combine_prompt: PromptTemplate = COMBINE_PROMPT,
        on_progress: Callable[[Progress], None] | None = None,
        **sampling: Any,
    ) -> None:
        if summary_tokens < 1:
            raise InvalidRequestError(f"summary tokens must be at least 1, not {summary_tokens}")
        self.model = model
        self.summary_tokens = summary_tokens
        self.map_prompt = map_prompt
        self.combine_prompt = combine_prompt
        self.on_progress = on_progress
        self.sampling = DEFAULT_SAMPLING | sampling
        # every prompt must leave room for its answer
        self.limit = model.info.n_ctx - summary_tokens
        room = self.limit - self._prompt_tokens(self.map_prompt.render(text=""))
        if chunk_tokens is None:
            chunk_tokens = min(room, DEFAULT_MAX_CHUNK_TOKENS)
        elif chunk_tokens > room:
            raise ContextOverflowError(
                f"chunks of {chunk_tokens} tokens do not fit the context of {model.info.n_ctx}: "
                f"the prompt and a {summary_tokens}-token summary leave room for {room}"
            )
        if chunk_tokens < 8:
            raise ContextOverflowError(
                f"the context of {model.info.n_ctx} tokens leaves {chunk_tokens} tokens per "
                f"chunk; use fewer summary tokens"
            )
        self.chunk_tokens = chunk_tokens
        # two cut summaries must share one combine prompt, or a collapse would not shrink
        pair = [self._cut("x " * summary_tokens)] * 2
        if not self._fits(pair):
            raise ContextOverflowError(
                f"the context of {model.info.n_ctx} tokens cannot combine two summaries of "
                f"{summary_tokens} tokens; use fewer summary tokens"
            )

    # -- the stages ----------------------------------------------------------------------

    def split(self, text: str) -> list[str]:
        """`text` cut into chunks of at most `chunk_tokens` model tokens."""
        blocks = paragraphs(text.splitlines(), 1, ())
        splitter = Splitter(self._count, SplitOptions(self.chunk_tokens, 0))
        return [c.text for c in splitter.split(blocks, "")]

    def _count(self, texts: Sequence[str]) -> list[int]:
        # no special tokens: a chunk is pasted inside a prompt, not read on its own
        return [len(self.model.tokenize(t, add_special=False)) for t in texts]

    def summarize(self, text: str, on_text: TextSink | None = None) -> Summary:
        """The summary of `text`; the final summary's pieces go to `on_text` as they come.

        Raises:
            InvalidRequestError: `text` has nothing but white space.
        """
        if not text.strip():
            raise InvalidRequestError("there is no text to summarize")
        return self.summarize_chunks(self.split(text), on_text)

    def summarize_chunks(self, chunks: Sequence[str], on_text: TextSink | None = None) -> Summary:
        """Map-reduce over chunks already cut (each must fit `chunk_tokens`)."""
        if not chunks:
            raise InvalidRequestError("there is no text to summarize")
        out = Summary("", len(chunks))
        if len(chunks) == 1:
            out.text = self._call(self.map_prompt.render(text=chunks[0]), on_text)
            out.map_calls = 1
            self._report("map", 1, 1)
            return out
        summaries = []
        for i, chunk in enumerate(chunks, 1):
            summaries.append(self._cut(self._call(self.map_prompt.render(text=chunk))))
            out.map_calls += 1
            self._report("map", i, len(chunks))
        while not self._fits(summaries):
            groups = self.group(summaries)
            rnd = len(out.collapse_rounds) + 1
            summaries = []
            for i, g in enumerate(groups, 1):
                summaries.append(self._cut(self._call(self.combine_prompt.render(summaries=g))))
                self._report("collapse", i, len(groups), rnd)
            out.collapse_rounds.append(len(groups))
            out.combine_calls += len(groups)
        out.text = self._call(self.combine_prompt.render(summaries=summaries), on_text)
        out.combine_calls += 1
        self._report("combine", 1, 1, len(out.collapse_rounds))
        return out

    def group(self, summaries: Sequence[str]) -> list[list[str]]:
        """Consecutive summaries packed greedily into groups whose combine prompt fits;
        every group but a lone last one holds at least two (see the module docstring)."""
        groups: list[list[str]] = []
        cur: list[str] = []
        for s in summaries:
            if len(cur) < 2 or self._fits([*cur, s]):
                cur.append(s)
            else:
                groups.append(cur)
                cur = [s]
        if cur:
            groups.append(cur)
        return groups

    # -- helpers -------------------------------------------------------------------------

    def _prompt_tokens(self, prompt: str) -> int:
        return len(self.model.chat_prompt_ids([{"role": "user", "content": prompt}]))

    def _fits(self, summaries: Sequence[str]) -> bool:
        return self._prompt_tokens(self.combine_prompt.render(summaries=summaries)) <= self.limit

    def _cut(self, text: str) -> str:
        """`text` shortened to `summary_tokens` (a model that ignores EOS can exceed them
        after retokenizing)."""
        ids = self.model.tokenize(text, add_special=False)
        return (
            text
            if len(ids) <= self.summary_tokens
            else self.model.detokenize(ids[: self.summary_tokens])
        )

    def _call(self, prompt: str, on_text: TextSink | None = None) -> str:
        return complete(self.model, prompt, max_tokens=self.summary_tokens, on_text=on_text,
                        **self.sampling)  # fmt: skip

    def _report(self, stage: str, done: int, total: int, rnd: int = 0) -> None:
        if self.on_progress:
            self.on_progress(Progress(stage, done, total, rnd))


def read_document(path: str | Path) -> str:
    """The text of a file to summarize: plain text, Markdown, reST and code as they are,
    HTML and PDF through the RAG loaders.

    Raises:
        InvalidRequestError: no such file, unreadable (binary, not UTF-8), or empty.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidRequestError(f"no such file: {path}")
    try:
        if kind_of(p) in (DocKind.HTML, DocKind.PDF):
            text = _join(load(p))
        else:
            text = read_text(p.read_bytes())
    except (Unreadable, OSError) as e:
        raise InvalidRequestError(f"cannot read {path}: {e}") from e
    if not text.strip():
        raise InvalidRequestError(f"{path} is empty: there is no text to summarize")
    return text


def _join(blocks: Sequence[Block]) -> str:
    """Blocks back to text, each new heading written once before its section."""
    parts: list[str] = []
    last: tuple[str, ...] = ()
    for b in blocks:
        if b.heading and b.heading != last:
            parts.append(b.heading[-1])
            last = b.heading
        parts.append(b.text)
    return "\n\n".join(parts)


def summarize(
    model: SummaryModel, text: str, on_text: TextSink | None = None, **options: Any
) -> Summary:
    """`MapReduceSummarizer(model, **options).summarize(text, on_text)`."""
    return MapReduceSummarizer(model, **options).summarize(text, on_text)
