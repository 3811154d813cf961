"""Ollama's `keep_alive` values and the times in its responses.

keep_alive is a Go duration string ("5m", "1h30m", "500ms", "-1m") or a number of seconds;
a negative value keeps the model loaded forever, 0 unloads it right after the request.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
FOREVER = math.inf


def parse_keep_alive(value: object) -> float:
    """Seconds to keep a model loaded (math.inf for forever); ValueError for a bad value."""
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration like '5m' or a number of seconds")
    if isinstance(value, int | float):
        if math.isnan(value):
            raise ValueError("keep_alive must be a number, not NaN")
        return FOREVER if value < 0 else float(value)
    if not isinstance(value, str):
        raise ValueError("keep_alive must be a duration like '5m' or a number of seconds")
    text = value.strip()
    try:  # a bare number is seconds, as OLLAMA_KEEP_ALIVE=300 is
        return parse_keep_alive(float(text))
    except ValueError:
        pass
    sign, body = (-1.0, text[1:]) if text[:1] == "-" else (1.0, text.removeprefix("+"))
    total, pos = 0.0, 0
    for m in _PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(body) or not body:
        raise ValueError(f"invalid keep_alive duration '{value}' (examples: 5m, 1h, 30s, -1)")
    return FOREVER if sign < 0 and total > 0 else total


def rfc3339(ts: float | None = None) -> str:
    """A UNIX time as ollama writes it: 2024-05-01T12:00:00.123456Z."""
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def ns(seconds: float) -> int:
    """Seconds as the integer nanoseconds ollama reports durations in."""
    return max(0, int(seconds * 1e9))
