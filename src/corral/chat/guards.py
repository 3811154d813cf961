"""Size estimates for template operations that Python performs in one C call.

`'x' * 10**10`, `'%9999999999s' % x` or `s.replace('x', s)` allocate their whole result
before any step counter or clock could intervene, so the sandbox estimates the result's
size from the operands first and refuses past `max_output_chars`. Estimates err on the
large side; real templates stay far below the limits.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from corral.chat.limits import RenderLimits, check_int, check_value, check_weight, tick, weigh

# Integers past this many bits only come from hostile arithmetic (2 ** 10**9 ...); real
# templates count messages and format dates.
MAX_INT_BITS = 1 << 16

_DIGIT_RUNS = re.compile(r"\d+")


def is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def int_binop_bits(operator: str, left: int, right: int) -> int:
    """Bits of the result of `left <op> right` on ints, estimated before computing it."""
    if operator == "**":
        if right <= 0 or abs(left) <= 1:
            return 1
        return abs(left).bit_length() * right
    if operator == "*":
        return left.bit_length() + right.bit_length()
    return max(left.bit_length(), right.bit_length()) + 1


def percent_format_size(fmt: str | bytes, operand: object, limits: RenderLimits) -> int:
    """Upper estimate of `fmt % operand`.

    Each `%` field prints at most the heaviest operand, padded to the widths written in
    the format; a `*` width comes from an int operand, so then ints count by their value.
    """
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    if isinstance(operand, Mapping):
        values = list(operand.values())
    elif isinstance(operand, tuple):
        values = list(operand)
    else:
        values = [operand]
    star = "*" in text
    heaviest = 0
    for value in values:
        if star and is_int(value):
            heaviest = max(heaviest, abs(value))  # type: ignore[arg-type]
        else:
            heaviest = max(heaviest, weigh(value, limits.max_output_chars))
    widths = sum(int(run) for run in _DIGIT_RUNS.findall(text))
    return len(text) + widths + text.count("%") * heaviest


def spec_width(spec: str) -> int:
    """Largest number written in a `str.format` field spec (width or precision)."""
    return max((int(run) for run in _DIGIT_RUNS.findall(spec)), default=0)


def text_of(value: Any, limits: RenderLimits) -> str:
    """`str(value)`, refused first if the text would be too big."""
    check_value(value, limits)
    return str(value)


def materialize(iterable: Any, limits: RenderLimits) -> Any:
    """A sized form of `iterable`, counting steps, so its total size can be checked."""
    if isinstance(iterable, list | tuple | str | bytes | Mapping):
        return iterable
    items: list[Any] = []
    for item in iterable:
        tick()
        items.append(item)
        if len(items) > limits.max_output_chars:
            check_weight(len(items), limits, "a list")
    return items


def _replace_size(text: str | bytes, old: str | bytes, new: str | bytes, count: Any) -> int:
    hits = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if is_int(count) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(0, len(new) - len(old))


def check_method_call(
    obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any], limits: RenderLimits
) -> tuple[Any, ...]:
    """Refuse str/bytes/int methods that would build a huge value; returns the args to
    call with (`join` gets its iterable as a list, so its size is known)."""
    if not isinstance(obj, types.BuiltinMethodType):  # macros, filters, helpers
        return args
    owner = getattr(obj, "__self__", None)
    name = obj.__name__
    cap = limits.max_output_chars
    if isinstance(owner, str | bytes):
        if name in ("center", "ljust", "rjust", "zfill") and args:
            check_int(args[0], cap, "a padded string")
        elif name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            tab = "\t" if isinstance(owner, str) else b"\t"
            if is_int(size):
                check_weight(len(owner) + owner.count(tab) * abs(size), limits)  # type: ignore[arg-type]
        elif name == "replace" and len(args) >= 2:
            old, new = args[0], args[1]
            kind = str if isinstance(owner, str) else bytes
            if isinstance(old, kind) and isinstance(new, kind):
                count = args[2] if len(args) > 2 else kwargs.get("count", -1)
                check_weight(_replace_size(owner, old, new, count), limits)
        elif name == "join" and args:
            items = materialize(args[0], limits)
            check_weight(weigh(items, cap) + len(owner) * len(items), limits)
            args = (items, *args[1:])
        elif name == "translate" and args:
            table = args[0]
            values = table.values() if isinstance(table, Mapping) else table
            if not isinstance(values, Iterable) or isinstance(values, str | bytes):
                values = ()
            heaviest = max((weigh(v, cap) for v in values), default=1)
            check_weight(len(owner) * max(heaviest, 1), limits)
    elif is_int(owner) and name == "to_bytes":
        check_int(args[0] if args else kwargs.get("length", 1), cap, "a bytes value")
    return args


# --- filter prechecks: each sees the filter's bound arguments by parameter name --------


def _pre_replace(limits: RenderLimits, a: dict[str, Any]) -> None:
    text, old, new = text_of(a["s"], limits), str(a["old"]), str(a["new"])
    count = a.get("count")
    check_weight(_replace_size(text, old, new, -1 if count is None else count), limits)


def _pre_center(limits: RenderLimits, a: dict[str, Any]) -> None:
    text_of(a["value"], limits)
    check_int(a.get("width", 80), limits.max_output_chars, "a padded string")


def _pre_indent(limits: RenderLimits, a: dict[str, Any]) -> None:
    text, width = text_of(a["s"], limits), a.get("width", 4)
    per_line = abs(width) if is_int(width) else len(str(width))
    check_weight(len(text) + (text.count("\n") + 1) * per_line, limits)


def _pre_wordwrap(limits: RenderLimits, a: dict[str, Any]) -> None:
    text, wrap = text_of(a["s"], limits), str(a.get("wrapstring") or "\n")
    check_weight(len(text) * (1 + len(wrap)), limits)


def _pre_format(limits: RenderLimits, a: dict[str, Any]) -> None:
    operand = a.get("kwargs") or a.get("args") or ()
    check_weight(percent_format_size(text_of(a["value"], limits), operand, limits), limits)


def _pre_join(limits: RenderLimits, a: dict[str, Any]) -> None:
    items = a["value"] = materialize(a["value"], limits)
    separator = str(a.get("d", ""))
    check_weight(weigh(items, limits.max_output_chars) + len(separator) * len(items), limits)


def _pre_sum(limits: RenderLimits, a: dict[str, Any]) -> None:
    items = a["iterable"] = materialize(a["iterable"], limits)
    weight = weigh(items, limits.max_output_chars)
    check_weight(weight, limits)
    # Summing lists or strings copies the running total at each step: quadratic.
    check_weight(len(items) * weight // 16, limits, "a running sum")


def _pre_batch(limits: RenderLimits, a: dict[str, Any]) -> None:
    check_int(a.get("linecount"), limits.max_range, "a batch")


def _pre_slice(limits: RenderLimits, a: dict[str, Any]) -> None:
    check_int(a.get("slices"), limits.max_range, "a slice")


FILTER_PRECHECKS: dict[str, Callable[[RenderLimits, dict[str, Any]], None]] = {
    "replace": _pre_replace,
    "center": _pre_center,
    "indent": _pre_indent,
    "wordwrap": _pre_wordwrap,
    "format": _pre_format,
    "join": _pre_join,
    "sum": _pre_sum,
    "batch": _pre_batch,
    "slice": _pre_slice,
}

# Filters that turn their whole value into text; checked without binding arguments.
STRINGIFYING = frozenset({"string", "pprint"})
