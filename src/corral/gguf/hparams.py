"""Typed access to an architecture's hyper-parameters in GGUF metadata.

Architectures parse their frozen `ModelArgs` from a `HParams` view once, at load; layers never
see the raw metadata dict.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from corral.errors import GGUFError

T = TypeVar("T")
_MISSING = object()


class HParams:
    """Reads `<arch>.<key>` values with type checks and one-line errors for missing keys."""

    def __init__(self, metadata: dict[str, Any], arch: str, file_name: str = "model") -> None:
        self.metadata = metadata
        self.arch = arch
        self.file_name = file_name

    def _raw(self, key: str, default: Any) -> Any:
        full = f"{self.arch}.{key}"
        if full in self.metadata:
            return self.metadata[full]
        if default is _MISSING:
            raise GGUFError(f"{self.file_name}: missing required metadata key '{full}'")
        return default

    def int(self, key: str, default: Any = _MISSING) -> int:
        v = self._raw(key, default)
        if isinstance(v, np.ndarray):
            # per-layer arrays (e.g. head_count_kv in some files): callers use int_list instead
            raise GGUFError(
                f"{self.file_name}: '{self.arch}.{key}' is per-layer, expected a number"
            )
        return v if v is None else int(v)

    def float(self, key: str, default: Any = _MISSING) -> float:
        v = self._raw(key, default)
        return v if v is None else float(v)

    def str(self, key: str, default: Any = _MISSING) -> str:
        v = self._raw(key, default)
        return v if v is None else str(v)

    def int_list(self, key: str, n: int, default: Any = _MISSING) -> tuple[int, ...]:
        """A value that may be one number or one per layer, as a tuple of length n."""
        v = self._raw(key, default)
        if isinstance(v, (np.ndarray, list)):
            if len(v) != n:
                raise GGUFError(
                    f"{self.file_name}: '{self.arch}.{key}' has {len(v)} values, expected {n}"
                )
            return tuple(int(x) for x in v)
        return (int(v),) * n
