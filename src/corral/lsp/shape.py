"""How much to complete at a cursor, and cutting generated text to that shape.

llm-ls decides with a tree-sitter parse; this follows the same three outcomes from the text
alone, which works for any language:

- EMPTY: the cursor is inside a word (`pri|nt`); a completion would only fight the typing.
- MULTI_LINE: the cursor's line is blank and the first of a block (the line above opens one
  with `:`, `{`, `(`, `[`, ...), or the document is empty: the block's code is written whole,
  and ends when a line comes back to the block's own indentation or repeats the code that
  follows the cursor (the `return` already below a function's empty body).
- SINGLE_LINE: anything else, and the completion stops at the end of the line; when the
  cursor is mid-line the rest of the line stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

_OPENERS = (":", "{", "(", "[", "=>", " do", "->")


class Shape(Enum):
    """What to complete at a cursor."""

    EMPTY = "empty"
    SINGLE_LINE = "single_line"
    MULTI_LINE = "multi_line"


@dataclass(frozen=True)
class Cursor:
    """The cursor's surroundings, from the text before and after it."""

    shape: Shape
    before: str  # the cursor line up to the cursor
    after: str  # the cursor line from the cursor to its end
    block_indent: int  # indentation of the block header (MULTI_LINE)
    next_line: str  # the first non-blank line after the cursor line, stripped


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def classify(prefix: str, suffix: str) -> Cursor:
    """The completion shape for a cursor between `prefix` and `suffix`."""
    head, _, before = prefix.rpartition("\n")
    after, _, rest = suffix.partition("\n")
    following = next((ln for ln in rest.split("\n") if ln.strip()), "")
    if before and after and _is_word(before[-1]) and _is_word(after[0]):
        return Cursor(Shape.EMPTY, before, after, 0, following.strip())
    if not prefix.strip() and not suffix.strip():
        return Cursor(Shape.MULTI_LINE, before, after, -1, "")
    if not before.strip() and not after.strip():
        above = next((ln for ln in reversed(head.split("\n")) if ln.strip()), "")
        if above.rstrip().endswith(_OPENERS):
            return Cursor(Shape.MULTI_LINE, before, after, _indent(above), following.strip())
    return Cursor(Shape.SINGLE_LINE, before, after, 0, following.strip())


def cut(text: str, cursor: Cursor) -> tuple[str, bool]:
    """`text` cut to the cursor's shape: (kept text, whether generation can stop now).

    Called on the text generated so far; `True` means the rest is not wanted, so the
    request can be cancelled instead of running to its token limit.
    """
    if cursor.shape is Shape.EMPTY:
        return "", True
    if cursor.shape is Shape.SINGLE_LINE:
        line, nl, _ = text.partition("\n")
        return line.rstrip() if nl else line, bool(nl)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i == 0:
            continue  # the rest of the cursor's own line
        if not line.strip():
            continue
        # a line's indentation is settled by its first visible character, so backing out
        # is seen as soon as a line starts: the tokens of its rest are not generated
        back_out = cursor.block_indent >= 0 and _indent(line) <= cursor.block_indent
        # a model that writes the code after the hole again is done with the hole; the
        # last line may still grow, so it must be complete to count
        complete = i < len(lines) - 1
        repeats = complete and bool(cursor.next_line) and line.strip() == cursor.next_line
        if back_out or repeats:
            return "\n".join(lines[:i]).rstrip(), True
    return text, False


def finish(text: str, cursor: Cursor) -> str:
    """The final completion: cut to shape, no trailing blank lines."""
    kept, _ = cut(text + "\n", cursor)
    return kept.rstrip() if cursor.shape is Shape.MULTI_LINE else kept
