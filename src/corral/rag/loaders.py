"""Files -> blocks: paragraphs with 1-based line ranges and the heading path above them.

One reader per `DocKind`. Markdown (ATX `#` headings, fenced code kept whole), reST
(underlined / overlined titles, levels in order of first use, as docutils does), HTML
(stdlib html.parser: h1-h6 headings, block tags end paragraphs, script/style dropped), PDF
(pypdf text per page, the page as heading), source code (blank-line separated blocks, the
enclosing top-level definition as heading), plain text (paragraphs).

A file that cannot be read raises `Unreadable` with a reason; the indexer reports it and
goes on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

from corral.rag.types import Block, DocKind

CODE_SUFFIXES = frozenset(
    [
        "py",
        "pyi",
        "js",
        "jsx",
        "ts",
        "tsx",
        "mjs",
        "c",
        "h",
        "cc",
        "cpp",
        "hpp",
        "cxx",
        "rs",
        "go",
        "java",
        "kt",
        "scala",
        "rb",
        "php",
        "cs",
        "swift",
        "m",
        "sh",
        "bash",
        "zsh",
        "lua",
        "pl",
        "r",
        "jl",
        "sql",
        "toml",
        "yaml",
        "yml",
        "ini",
        "cfg",
        "json",
        "css",
        "scss",
        "vue",
        "svelte",
        "ex",
        "exs",
        "erl",
        "hs",
        "ml",
        "fs",
        "dart",
        "zig",
        "nim",
    ]
)
SUFFIX_KINDS: dict[str, DocKind] = {
    "txt": DocKind.TEXT,
    "text": DocKind.TEXT,
    "log": DocKind.TEXT,
    "md": DocKind.MARKDOWN,
    "markdown": DocKind.MARKDOWN,
    "rst": DocKind.RST,
    "html": DocKind.HTML,
    "htm": DocKind.HTML,
    "pdf": DocKind.PDF,
    **dict.fromkeys(CODE_SUFFIXES, DocKind.CODE),
}
MAX_FILE_BYTES = 50 * 2**20  # a bigger "document" is almost surely data, not prose


class Unreadable(Exception):
    """A file skipped, with the reason the index summary shows."""


def kind_of(path: Path) -> DocKind | None:
    """The reader for `path` by its suffix (None: not a type corral indexes in folders)."""
    return SUFFIX_KINDS.get(path.suffix.lower().lstrip("."))


def load(path: Path, kind: DocKind | None = None) -> list[Block]:
    """Blocks of the file at `path` (`kind`: force a reader; default by suffix, else text)."""
    kind = kind or kind_of(path) or DocKind.TEXT
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise Unreadable(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
        if kind is DocKind.PDF:
            return pdf_blocks(path)
        text = read_text(path.read_bytes())
    except OSError as e:
        raise Unreadable(e.strerror or str(e)) from e
    return text_blocks(text, kind)


def read_text(data: bytes) -> str:
    """UTF-8 text of a file, or Unreadable for binary or other encodings."""
    if b"\x00" in data[:8192]:
        raise Unreadable("binary file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise Unreadable(f"not UTF-8 text (byte {e.start})") from e


def text_blocks(text: str, kind: DocKind) -> list[Block]:
    """Blocks of already decoded text of the given kind (not PDF)."""
    lines = text.splitlines()
    match kind:
        case DocKind.MARKDOWN:
            return markdown_blocks(lines)
        case DocKind.RST:
            return rst_blocks(lines)
        case DocKind.HTML:
            return html_blocks(text)
        case DocKind.CODE:
            return code_blocks(lines)
        case _:
            return paragraphs(lines, 1, ())


def paragraphs(lines: list[str], first: int, heading: tuple[str, ...]) -> list[Block]:
    """Runs of non-blank lines; `first` is the line number of lines[0]."""
    out: list[Block] = []
    start: int | None = None
    for i, line in enumerate([*lines, ""]):
        if line.strip():
            start = i if start is None else start
        elif start is not None:
            text = "\n".join(lines[start:i]).strip("\n")
            out.append(Block(text, first + start, first + i - 1, heading))
            start = None
    return out


def _sections(lines: list[str], titles: Iterable[tuple[int, int, int, str]]) -> list[Block]:
    """Blocks of `lines` cut at titles (first line index, lines it spans, level, title)."""
    out: list[Block] = []
    path: list[tuple[int, str]] = []
    pos = 0
    for at, span, level, title in [*titles, (len(lines), 0, 0, "")]:
        out.extend(paragraphs(lines[pos:at], pos + 1, tuple(t for _, t in path)))
        if span == 0:
            break
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title))
        pos = at + span
    return out


_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_FILL = "\x00"  # stands for a blank line inside a fence, so it does not end the paragraph


def markdown_blocks(lines: list[str]) -> list[Block]:
    """Markdown: `#` headings; a fenced code block stays one paragraph, blank lines and all."""
    titles: list[tuple[int, int, int, str]] = []
    fence: str | None = None
    joined: list[str] = []  # lines with fenced blank lines filled, so paragraphs keep fences
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if m and (fence is None or m.group(1) == fence):
            fence = None if fence else m.group(1)
        elif fence is None and (h := _ATX.match(line)):
            titles.append((i, 1, len(h.group(1)), h.group(2)))
        joined.append(line if (fence is None or line.strip()) else _FILL)
    blocks = _sections(joined, titles)
    # give fenced blank lines back their emptiness
    return [Block(_unfill(b.text), b.start_line, b.end_line, b.heading) for b in blocks]


def _unfill(text: str) -> str:
    return "\n".join("" if line == _FILL else line for line in text.split("\n"))


_RST_ADORN = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")


def rst_blocks(lines: list[str]) -> list[Block]:
    """reST: a title is a text line underlined (optionally also overlined) by a repeated
    punctuation character at least as long; each new adornment style is one level deeper."""
    styles: list[tuple[str, bool]] = []
    titles: list[tuple[int, int, int, str]] = []
    i = 0
    while i < len(lines) - 1:
        line, nxt = lines[i], lines[i + 1]
        over = (
            _RST_ADORN.match(line)
            and i + 2 < len(lines)
            and lines[i + 1].strip()
            and _RST_ADORN.match(lines[i + 2])
            and lines[i + 2].strip()[0] == line.strip()[0]
        )
        if over:
            style, title, span = (line.strip()[0], True), lines[i + 1].strip(), 3
        elif (
            line.strip()
            and not _RST_ADORN.match(line)
            and _RST_ADORN.match(nxt)
            and len(nxt.rstrip()) >= len(line.rstrip())
            and (i == 0 or not lines[i - 1].strip())
        ):
            style, title, span = (nxt.strip()[0], False), line.strip(), 2
        else:
            i += 1
            continue
        if style not in styles:
            styles.append(style)
        titles.append((i, span, styles.index(style) + 1, title))
        i += span
    return _sections(lines, titles)


_CODE_DEF = re.compile(
    r"^(?:export\s+|pub\s+|public\s+|async\s+|static\s+)*"
    r"(?:def|class|function|fn|func|struct|enum|impl|trait|interface|module|type)\s+(\w+)"
)


def code_blocks(lines: list[str]) -> list[Block]:
    """Source code: blank-line separated blocks under the top-level definition they sit in
    (column 0 `def` / `class` / `fn` / `func` / ...), so a chunk says which function it is."""
    titles = [
        (i, 0, 1, m.group(0).strip())
        for i, line in enumerate(lines)
        if (m := _CODE_DEF.match(line))
    ]
    out: list[Block] = []
    bounds = [0] + [t[0] for t in titles] + [len(lines)]
    names = [()] + [(t[3],) for t in titles]
    for (a, b), heading in zip(zip(bounds, bounds[1:], strict=False), names, strict=False):
        out.extend(paragraphs(lines[a:b], a + 1, heading))
    return out


_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "li",
        "ul",
        "ol",
        "table",
        "tr",
        "td",
        "th",
        "pre",
        "blockquote",
        "br",
        "hr",
        "dd",
        "dt",
        "dl",
        "figure",
        "figcaption",
        "main",
        "form",
        "title",
    ]
)
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "head"})


class _HtmlText(HTMLParser):
    """Collects (text, source line, heading level or 0) pieces; block tags end a piece."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[tuple[str, int, int]] = []
        self._buf: list[str] = []
        self._line = 1
        self._skip = 0
        self._level = 0

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        if text:
            self.pieces.append((text, self._line, self._level))
        self._buf = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._level = int(tag[1])
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._level = 0
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not self._buf:
            # the piece's line is where its first visible text is
            lead = len(data) - len(data.lstrip())
            self._line = self.getpos()[0] + data[:lead].count("\n")
            data = data.lstrip()
        if data:
            self._buf.append(data)


def html_blocks(text: str) -> list[Block]:
    """HTML: visible text by block element, h1-h6 as the heading path, source line ranges."""
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    parser._flush()
    out: list[Block] = []
    path: list[tuple[int, str]] = []
    for piece, line, level in parser.pieces:
        if level:
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, piece))
            continue
        # whitespace is collapsed, so a piece is cited by the line its text starts on
        out.append(Block(piece, line, line, tuple(t for _, t in path)))
    return out


def pdf_blocks(path: Path) -> list[Block]:
    """PDF: text of each page (pypdf), paragraphs under a "page N" heading; line numbers
    count lines of the extracted text across pages, as `corral ask` cites them."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise Unreadable("pypdf is not installed (pip install pypdf)") from e
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise Unreadable("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as e:
        raise Unreadable(f"unreadable PDF: {e}") from e
    out: list[Block] = []
    first = 1
    for n, page in enumerate(pages, 1):
        lines = page.splitlines()
        out.extend(paragraphs(lines, first, (f"page {n}",)))
        first += len(lines)
    if not out:
        raise Unreadable("PDF has no extractable text (scanned?)")
    return out
