"""Generation parameters by their ollama names, shared by `corral run` flags and `/set parameter`.

One table says each parameter's type, valid range and the `Model.generate` keyword it feeds,
so the command line and the REPL accept exactly the same values with the same messages.
This module stays free of torch: the CLI builds its parser from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MIN_CONTEXT = 8  # Model refuses anything smaller


@dataclass(frozen=True)
class Param:
    """One tunable parameter, named as ollama names it.

    `keyword` says whether it is a `Model.generate` keyword of the same name; num_predict and
    num_ctx are not (the session turns them into max_tokens and a model reload).
    """

    name: str
    parse: Callable[[str], Any]
    help: str
    keyword: bool = True


def _number(kind: type, low: float | None = None, high: float | None = None) -> Callable:
    """A parser for an int or float within [low, high]; its ValueError says what is allowed."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ValueError(f"'{text}' is not {what}") from None
        if kind is float and not math.isfinite(value):
            raise ValueError(f"'{text}' is not a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                raise ValueError(f"must be at least {low}, not {text}")
            raise ValueError(f"must be between {low} and {high}, not {text}")
        return value

    return parse


def _stops(text: str) -> list[str]:
    # `/set parameter stop <|end|> ###` sets several; quotes allow spaces inside one.
    import shlex

    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"cannot read stop strings: {e}") from None
    if not words:
        raise ValueError("give at least one stop string")
    return words


_TABLE: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("temperature", _number(float, 0.0), "randomness; 0 always picks the likeliest token"),
    ("top_k", _number(int, 0), "sample from the k likeliest tokens (0: all)"),
    ("top_p", _number(float, 0.0, 1.0), "nucleus sampling threshold"),
    ("min_p", _number(float, 0.0, 1.0), "drop tokens below this fraction of the top one"),
    ("typical_p", _number(float, 0.0, 1.0), "locally typical sampling (1: off)"),
    ("repeat_penalty", _number(float, 0.0), "penalise recently seen tokens (1: off)"),
    ("repeat_last_n", _number(int, -1), "how many recent tokens the penalties look at"),
    ("presence_penalty", _number(float), "penalty for any token already present"),
    ("frequency_penalty", _number(float), "penalty growing with a token's count"),
    ("seed", _number(int), "random seed, for repeatable answers"),
    ("stop", _stops, "stop strings, separated by spaces"),
)
PARAMS: dict[str, Param] = {name: Param(name, parse, text) for name, parse, text in _TABLE}
PARAMS["num_predict"] = Param(
    "num_predict", _number(int, -1), "most tokens per answer (-1: until the context fills)", False
)
PARAMS["num_ctx"] = Param(
    "num_ctx",
    _number(int, MIN_CONTEXT),
    "context size in tokens (default: the model's, at most 4096)",
    False,
)


def parse_param(name: str, text: str) -> tuple[str, Any]:
    """(canonical name, value) for `/set parameter NAME VALUE`; ValueError says what's wrong."""
    key = name.strip().lower()
    param = PARAMS.get(key)
    if param is None:
        import difflib

        close = difflib.get_close_matches(key, PARAMS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"unknown parameter '{name}'{hint}")
    try:
        return key, param.parse(text.strip())
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None


def generate_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """The `Model.generate` keywords for the parameters set (num_predict/num_ctx excluded)."""
    return {n: v for n, v in params.items() if PARAMS[n].keyword}


def max_tokens(params: Mapping[str, Any], n_ctx: int) -> int:
    """Tokens an answer may take: num_predict, or (unset or -1) as many as the context holds."""
    n = params.get("num_predict", -1)
    # The engine stops by itself once the context is full, so n_ctx means "no limit".
    return n_ctx if n is None or n < 0 else n


def show_value(value: Any) -> str:
    """A parameter value as a user would type it: 0 rather than 0.0, stops space-separated."""
    if isinstance(value, list):
        return " ".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
