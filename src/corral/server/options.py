"""Generation options by their ollama names: one table for request `options`, Modelfile
`PARAMETER` lines and the defaults a created model carries.

`GenOptions` is what a generation needs besides its prompt; every API family starts from a
model's `GenOptions` (its Modelfile defaults) and overrides fields from the request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from corral.engine.sampling import SamplingParams

MIN_CONTEXT = 8


@dataclass(frozen=True)
class GenOptions:
    """Sampling, length, stops and context size for a generation.

    max_tokens None means "until an end token or the context is full" (ollama's -1).
    """

    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    num_ctx: int | None = None

    def with_(self, **changes: Any) -> GenOptions:
        return replace(self, **changes)


# name -> (kind, low, high); kind is int, float or list (stop strings)
_SAMPLING: dict[str, tuple[type, float | None, float | None]] = {
    "temperature": (float, 0.0, None),
    "top_k": (int, 0, None),
    "top_p": (float, 0.0, 1.0),
    "min_p": (float, 0.0, 1.0),
    "typical_p": (float, 0.0, 1.0),
    "repeat_penalty": (float, 0.0, None),
    "repeat_last_n": (int, -1, None),
    "presence_penalty": (float, None, None),
    "frequency_penalty": (float, None, None),
    "seed": (int, None, None),
}
_OTHER: dict[str, tuple[type, float | None, float | None]] = {
    "num_predict": (int, -2, None),
    "num_ctx": (int, MIN_CONTEXT, None),
    "stop": (list, None, None),
}
# Accepted and ignored, as a runtime setting that means nothing here (GPU layers, mmap,
# threads per request) or a sampler corral does not have (mirostat, tfs_z: ollama's own new
# engine dropped those too). Typing them is still checked so a typo'd value is reported.
_IGNORED: dict[str, type] = {
    "num_keep": int, "penalize_newline": bool, "numa": bool, "num_batch": int, "num_gpu": int,
    "main_gpu": int, "low_vram": bool, "f16_kv": bool, "vocab_only": bool, "use_mmap": bool,
    "use_mlock": bool, "num_thread": int, "mirostat": int, "mirostat_tau": float,
    "mirostat_eta": float, "tfs_z": float, "logits_all": bool, "embedding_only": bool,
    "num_gqa": int, "rope_frequency_base": float, "rope_frequency_scale": float,
}  # fmt: skip
OPTION_NAMES = frozenset(_SAMPLING) | frozenset(_OTHER) | frozenset(_IGNORED)


def coerce(name: str, value: Any) -> Any:
    """`value` of option `name` checked and typed; strings (Modelfile text) are parsed.

    ValueError names the option and what it takes. Unknown names raise KeyError.
    """
    if name in _IGNORED:
        kind: type = _IGNORED[name]
        low = high = None
    else:
        kind, low, high = {**_SAMPLING, **_OTHER}[name]
    if kind is list:
        return _stops(name, value)
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ValueError(f"option '{name}' must be true or false")
        return value
    number = _number(name, value, kind)
    if (low is not None and number < low) or (high is not None and number > high):
        rng = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"option '{name}' must be {rng}, not {value}")
    return number


def _number(name: str, value: Any, kind: type) -> int | float:
    what = "an integer" if kind is int else "a number"
    if isinstance(value, bool):
        raise ValueError(f"option '{name}' must be {what}")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind is float else int(value.strip())
        except ValueError:
            raise ValueError(f"option '{name}' must be {what}, not '{value}'") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"option '{name}' must be {what}")
    if kind is int:
        if value != int(value):
            raise ValueError(f"option '{name}' must be an integer, not {value}")
        return int(value)
    return float(value)


def _stops(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise ValueError(f"option '{name}' must be a string or a list of strings")


def parse_parameter_line(name: str, text: str) -> tuple[str, Any]:
    """A Modelfile `PARAMETER name value` as (name, typed value); ValueError if invalid."""
    key = name.strip().lower()
    if key not in OPTION_NAMES:
        raise ValueError(f"unknown parameter '{name}'")
    if key == "stop":
        return key, [text]  # one stop per line, already unquoted by the Modelfile parser
    return key, coerce(key, text)


def apply_options(base: GenOptions, options: Mapping[str, Any] | None) -> GenOptions:
    """`base` with ollama-named `options` applied; ValueError for a bad value.

    Unknown names are ignored, as ollama does (it only logs them).
    """
    if not options:
        return base
    sampling: dict[str, Any] = {}
    out = base
    for name, raw in options.items():
        if name not in OPTION_NAMES or raw is None:
            continue
        value = coerce(name, raw)
        if name in _SAMPLING:
            # ollama's seed -1 means "random": no seed
            sampling[name] = None if name == "seed" and value < 0 else value
        elif name == "num_predict":
            out = out.with_(max_tokens=None if value < 0 else value)
        elif name == "num_ctx":
            out = out.with_(num_ctx=value)
        elif name == "stop":
            # Modelfile stops accumulate (PARAMETER stop repeated); a request's replace them
            out = out.with_(stop=tuple(value))
    if sampling:
        out = out.with_(sampling=out.sampling.with_(**sampling))
    return out
