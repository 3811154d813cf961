"""Text formatting for the CLI: sizes, ages, parameter counts, tables, word wrapping, timings.

Pure functions over plain values, so every command prints the same way and the formatting
is testable without a model or a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def isatty(stream: Any) -> bool:
    """Whether `stream` is a terminal (False for StringIO-likes and closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def human_size(n: int) -> str:
    """Bytes in decimal units, as ollama shows them: '98 MB', '1.2 GB'."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    if unit == "B":
        return f"{int(value)} B"
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def human_count(n: int) -> str:
    """A parameter count: '134.52M', '1.10B'."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return str(n)


def human_age(when: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in words: 'About a minute ago', '3 days ago' (docker/ollama style)."""
    if when is None:
        return "unknown"
    now = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    s = max(0, int((now - when).total_seconds()))
    if s < 60:
        return "Less than a minute ago"
    steps = ((3600, 60, "minute"), (86400, 3600, "hour"), (86400 * 14, 86400, "day"))
    steps += ((86400 * 60, 86400 * 7, "week"), (86400 * 730, 86400 * 30, "month"))
    for limit, unit, name in steps:
        if s < limit:
            n = s // unit
            return f"About a {name} ago" if n == 1 else f"{n} {name}s ago"
    return f"{s // (86400 * 365)} years ago"


def parse_time(text: Any) -> datetime | None:
    """An ISO timestamp from a manifest, or None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], gap: int = 4) -> str:
    """Left-aligned columns separated by `gap` spaces (tabwriter-like, as `ollama list`)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [c.ljust(w + gap) for c, w in zip(row, widths, strict=True)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """A duration as Go prints it, which is what ollama users know: '812.4ms', '2.31s'."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m{seconds % 60:.1f}s"


def timing_report(
    total_s: float,
    load_s: float,
    prompt_tokens: int,
    prompt_s: float,
    eval_tokens: int,
    eval_s: float,
    cached_tokens: int = 0,
) -> str:
    """The block `ollama run --verbose` prints after an answer."""

    def rate(n: int, s: float) -> str:
        return f"{n / s:.2f} tokens/s" if s > 0 else "n/a"

    cached = f" (+{cached_tokens} cached)" if cached_tokens else ""
    rows = [
        ("total duration", duration(total_s)),
        ("load duration", duration(load_s)),
        ("prompt eval count", f"{prompt_tokens} token(s){cached}"),
        ("prompt eval duration", duration(prompt_s)),
        ("prompt eval rate", rate(prompt_tokens, prompt_s)),
        ("eval count", f"{eval_tokens} token(s)"),
        ("eval duration", duration(eval_s)),
        ("eval rate", rate(eval_tokens, eval_s)),
    ]
    return "\n".join(f"{name + ':':<22}{value}" for name, value in rows)


class WordWrapper:
    """Wraps streamed text at `width` columns without splitting words.

    Text arrives in arbitrary pieces (tokens), so the current word is held back until a
    space or newline ends it; only then is it known whether it fits on the line.
    """

    def __init__(self, width: int) -> None:
        self.width = max(10, width)
        self.col = 0
        self.word = ""

    def feed(self, text: str) -> str:
        """Add text; return what can be printed now."""
        out: list[str] = []
        for ch in text:
            if ch == "\n":
                out += [self._word(), "\n"]
                self.col = 0
            elif ch in " \t":
                out.append(self._word())
                if self.col + 1 > self.width:  # a space at the margin becomes the line break
                    out.append("\n")
                    self.col = 0
                else:
                    out.append(ch)
                    self.col += 1
            else:
                self.word += ch
                if len(self.word) >= self.width:  # longer than a line: break it anywhere
                    out.append(self._word())
        return "".join(out)

    def flush(self) -> str:
        """The held-back word, at the end of an answer."""
        return self._word()

    def _word(self) -> str:
        word, self.word = self.word, ""
        if not word:
            return ""
        prefix = ""
        if self.col > 0 and self.col + len(word) > self.width:
            prefix, self.col = "\n", 0
        self.col += len(word)
        return prefix + word
