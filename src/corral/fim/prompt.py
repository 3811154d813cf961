"""Fill-in-the-middle prompts as token ids, fitted to a token budget.

Layouts (llama.cpp's `format_infill`, plus the families' own repo-level forms):

    PSM   [BOS] extra [PRE] prefix prompt [SUF] suffix [MID]
    SPM   [BOS] extra [SUF] suffix [PRE] prefix prompt [MID]
    Codestral, always suffix first, no middle token:  [BOS] extra [SUFFIX] suffix [PREFIX] prefix

With a file separator (Qwen2.5-Coder, StarCoder2) `extra` is the repository form
`[REP] repo\\n [SEP] path\\n text ... [SEP] path\\n` (StarCoder2 puts the current file's path
inside the prefix, after [PRE]); without one, extra files are joined by llama.cpp's
`--- snippet ---` separator. `prompt` (llama.cpp's /infill field) continues the prefix.

Fitting, when everything does not fit in the budget: the text near the cursor matters most,
so the prefix and suffix get the budget first (suffix up to a quarter, the prefix the rest,
either taking what the other leaves), and each loses its far end first (the top of the
prefix, the bottom of the suffix), cut at a line boundary. Extra files come last: they get
only what the current file leaves, whole files in the order given, and are the first thing
dropped as the file grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from corral.errors import ContextOverflowError
from corral.fim.tokens import FimFamily, FimOrder, FimTokens
from corral.tokenizer import Tokenizer

# llama.cpp's chunk separator for models without a file-separator token
SNIPPET_SEPARATOR = "\n\n--- snippet ---\n\n"
SUFFIX_SHARE = 0.25  # llama.cpp's prefix:suffix ratio of 3:1


@dataclass(frozen=True)
class ExtraFile:
    """Another file (or snippet) shown to the model as context."""

    path: str
    text: str


@dataclass(frozen=True)
class FimRequest:
    """What to fill: the text before and after the cursor, and optional context."""

    prefix: str
    suffix: str
    prompt: str = ""  # continues the prefix (llama.cpp /infill)
    extra: Sequence[ExtraFile] = ()
    path: str | None = None  # the current file's path, for repo-level layouts
    repo: str | None = None


@dataclass(frozen=True)
class FimPrompt:
    """A built prompt and what fitting it cost."""

    ids: list[int]
    prefix_tokens: int  # prefix tokens kept
    suffix_tokens: int
    extra_files: int  # extra files kept
    trimmed: bool = False  # something was cut to fit
    stop_ids: frozenset[int] = field(default_factory=frozenset)


def prompt_budget(n_ctx: int, max_tokens: int | None = None) -> int:
    """Tokens a FIM prompt may use in a context of `n_ctx`, leaving room to generate
    `max_tokens` (unknown: a quarter of the context; at most half of it either way)."""
    room = n_ctx // 4 if max_tokens is None or max_tokens < 0 else max_tokens
    return max(1, n_ctx - max(1, min(room, n_ctx // 2)))


def _encode(tok: Tokenizer, text: str) -> list[int]:
    # user text never turns into control tokens: a file that contains "<fim_prefix>"
    # must not be able to restructure its own prompt
    return tok.encode(text, add_special=False, parse_special=False) if text else []


def _has_newline(tok: Tokenizer, token: int) -> bool:
    return b"\n" in tok.token_to_piece(token, True)


def keep_tail(tok: Tokenizer, ids: list[int], n: int) -> list[int]:
    """The last `n` tokens of `ids`, starting at a line start when some were dropped
    (unless no line break is in reach)."""
    if n >= len(ids):
        return ids
    if n <= 0:
        return []
    tail = ids[len(ids) - n :]
    for i, t in enumerate(tail):
        if _has_newline(tok, t):
            return tail[i + 1 :]
    return tail


def keep_head(tok: Tokenizer, ids: list[int], n: int) -> list[int]:
    """The first `n` tokens of `ids`, ending after a line break when some were dropped."""
    if n >= len(ids):
        return ids
    if n <= 0:
        return []
    head = ids[:n]
    for i in range(len(head) - 1, -1, -1):
        if _has_newline(tok, head[i]):
            return head[: i + 1]
    return head


def _split(budget: int, n_pre: int, n_suf: int) -> tuple[int, int]:
    """Tokens for (prefix, suffix) out of `budget`: suffix up to its share, prefix the
    rest, and whatever one side leaves goes to the other."""
    suf = min(n_suf, int(budget * SUFFIX_SHARE))
    pre = min(n_pre, budget - suf)
    suf = min(n_suf, budget - pre)
    return pre, suf


class FimBuilder:
    """Builds FIM prompts for one model's tokenizer and FIM tokens."""

    def __init__(self, tok: Tokenizer, tokens: FimTokens, order: FimOrder = FimOrder.PSM):
        self.tok = tok
        self.tokens = tokens
        # a family trained on one order only gets that order whatever was asked
        self.order = tokens.native_order or order

    def _file_header(self, path: str) -> list[int]:
        return _encode(self.tok, path + "\n")

    def _extra_block(self, f: ExtraFile) -> list[int]:
        if self.tokens.sep is not None:
            return [self.tokens.sep, *self._file_header(f.path), *_encode(self.tok, f.text)]
        return _encode(self.tok, SNIPPET_SEPARATOR + f.text)

    def _repo_head(self, req: FimRequest) -> list[int]:
        t = self.tokens
        if t.rep is None or t.sep is None or not (req.extra or req.repo):
            return []
        name = req.repo or "repo"
        if t.family is FimFamily.STARCODER:  # <repo_name>name<file_sep>path\n...
            return [t.rep, *_encode(self.tok, name)]
        return [t.rep, *_encode(self.tok, name + "\n")]  # Qwen / llama.cpp form

    def _current_file(self, req: FimRequest) -> tuple[list[int], list[int]]:
        """(tokens before [PRE], tokens right after [PRE]) naming the current file."""
        t = self.tokens
        if t.sep is None or not (req.extra or req.repo or req.path):
            return [], []
        header = self._file_header(req.path or "filename")
        if t.family is FimFamily.STARCODER:
            return [t.sep], header
        return [t.sep, *header], []

    def build(self, req: FimRequest, budget: int) -> FimPrompt:
        """The prompt for `req` in at most `budget` tokens (ContextOverflowError if even
        the markers and `prompt` do not fit)."""
        t = self.tokens
        pre_ids, suf_ids = _encode(self.tok, req.prefix), _encode(self.tok, req.suffix)
        prompt_ids = _encode(self.tok, req.prompt)
        head = [t.bos] if t.bos is not None else []
        repo = self._repo_head(req)
        before_pre, after_pre = self._current_file(req)
        markers = [t.pre, t.suf, *self._mid()]
        fixed = len(head) + len(repo) + len(before_pre) + len(after_pre) + len(markers)
        left = budget - fixed - len(prompt_ids)
        if left < 0:
            raise ContextOverflowError(
                f"fill-in-the-middle prompt needs {budget - left} tokens before any code, "
                f"but only {budget} fit; shorten the prompt or raise the context size"
            )
        n_pre, n_suf = _split(left, len(pre_ids), len(suf_ids))
        kept_pre, kept_suf = (
            keep_tail(self.tok, pre_ids, n_pre),
            keep_head(self.tok, suf_ids, n_suf),
        )
        left -= len(kept_pre) + len(kept_suf)
        extra: list[int] = []
        n_files = 0
        if req.extra:
            extra = list(repo)
            for f in req.extra:
                block = self._extra_block(f)
                if len(block) <= left:
                    extra += block
                    left -= len(block)
                    n_files += 1
        elif repo:
            extra = repo
        trimmed = (
            len(kept_pre) < len(pre_ids) or len(kept_suf) < len(suf_ids) or n_files < len(req.extra)
        )
        ids = head + extra + before_pre + self._layout(after_pre + kept_pre + prompt_ids, kept_suf)
        return FimPrompt(ids, len(kept_pre), len(kept_suf), n_files, trimmed, t.stop_ids)

    def _mid(self) -> list[int]:
        t = self.tokens
        # Codestral has a [MIDDLE] token but its FIM format ends with the prefix
        return [t.mid] if t.mid is not None and t.family is not FimFamily.CODESTRAL else []

    def _layout(self, prefix: list[int], suffix: list[int]) -> list[int]:
        t = self.tokens
        mid = self._mid()
        if self.order is FimOrder.SPM:
            return [t.suf, *suffix, t.pre, *prefix, *mid]
        return [t.pre, *prefix, t.suf, *suffix, *mid]
