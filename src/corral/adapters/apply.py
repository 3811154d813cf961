"""Applying LoRA adapters to a model as it is built, without touching its base weights.

`attach(adapters, metadata)` installs a weight hook (corral.models.weights.WEIGHT_HOOK) for
the duration of one model build: every weight an architecture asks for whose GGUF name an
adapter covers comes back wrapped in a `LoraLinear`, which computes base(x) plus each
adapter's scale * (x @ A^T) @ B^T. The quantized base blocks stay as they are (mapped,
shared by every model built from the same file), so several adapter sets on one base cost
only their own small matrices. After the build, `AdapterHook.finish` fails loudly for any
adapter tensor no weight matched (an adapter for another model).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from corral.adapters.lora import AdapterError, LoraAdapter, LoraPair, load_adapter
from corral.gguf.reader import open_gguf
from corral.models.weights import WEIGHT_HOOK, Linear

AdapterSpec = tuple[str | os.PathLike[str], float]


@dataclass(frozen=True)
class _Delta:
    a: torch.Tensor
    b: torch.Tensor
    scale: float  # alpha / r times the user's scale


class LoraLinear:
    """A base weight plus low-rank updates; the Linear protocol, as the layers use it."""

    def __init__(self, base: Linear, deltas: list[_Delta], embedding: list[_Delta]) -> None:
        self.base = base
        self.shape = base.shape
        self.deltas = deltas  # applied in __call__: x [.., in] -> [.., out]
        self.embedding = embedding  # applied in rows(): token_embd lookups

    @staticmethod
    def _on(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t if t.device == like.device and t.dtype == like.dtype else t.to(like)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        for d in self.deltas:
            a, b = self._on(d.a, x), self._on(d.b, x)
            y = y + (x @ a.T @ b.T) * d.scale
        return y

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.base.rows(ids)
        for d in self.embedding:
            a, b = self._on(d.a, out), self._on(d.b, out)
            out = out + (a[ids] @ b.T) * d.scale
        return out


class AdapterHook:
    """Wraps the weights adapters cover; remembers which adapter tensors found a weight."""

    def __init__(self, adapters: Sequence[tuple[LoraAdapter, float]]) -> None:
        self.adapters = list(adapters)
        self.unused = {(i, name) for i, (ad, _) in enumerate(self.adapters) for name in ad.pairs}

    def __call__(self, name: str, weight: Linear) -> Linear:
        deltas: list[_Delta] = []
        embedding: list[_Delta] = []
        for i, (adapter, user_scale) in enumerate(self.adapters):
            pair = adapter.pairs.get(name)
            if pair is None:
                continue
            self._check_shape(adapter, name, pair, weight)
            self.unused.discard((i, name))
            if user_scale == 0:
                continue
            d = _Delta(pair.a, pair.b, pair.scale * user_scale)
            (embedding if pair.embedding else deltas).append(d)
        if not deltas and not embedding:
            return weight
        return LoraLinear(weight, deltas, embedding)

    @staticmethod
    def _check_shape(adapter: LoraAdapter, name: str, pair: LoraPair, weight: Linear) -> None:
        check_shape(adapter, name, pair, tuple(int(s) for s in weight.shape))

    def finish(self) -> None:
        """After the build: every adapter tensor must have met its weight."""
        if self.unused:
            i, name = sorted(self.unused)[0]
            more = f" (and {len(self.unused) - 1} more)" if len(self.unused) > 1 else ""
            raise AdapterError(
                f"adapter '{self.adapters[i][0].name}': the model has no weight '{name}'{more} "
                "(an adapter for another model?)"
            )


def check_shape(adapter: LoraAdapter, name: str, pair: LoraPair, want: tuple[int, ...]) -> None:
    """AdapterError unless the pair updates a weight of shape `want` ([out, in])."""
    got = pair.delta_shape()
    if got != want:
        shown = "x".join(str(d) for d in want)
        raise AdapterError(
            f"adapter '{adapter.name}': '{name}' is {shown} in the model but "
            f"{got[0]}x{got[1]} in the adapter (an adapter for another model?)"
        )


def check_adapters(
    base: str | os.PathLike[str], specs: Sequence[AdapterSpec]
) -> list[tuple[str, float]]:
    """Check (path, scale) adapters against the GGUF model `base` without loading it:
    readable, same architecture, every pair naming a weight of the right shape. Returns
    them with absolute paths (how a created model records them)."""
    out = []
    with open_gguf(base) as g:
        for path, scale in specs:
            full = Path(path).expanduser().resolve()
            adapter = load_adapter(full, g.metadata)
            for name, pair in adapter.pairs.items():
                t = g.tensors.get(name)
                if t is None:
                    raise AdapterError(
                        f"adapter '{adapter.name}': the model has no weight '{name}' "
                        "(an adapter for another model?)"
                    )
                check_shape(adapter, name, pair, tuple(t.shape))
            out.append((str(full), float(scale)))
    return out


def load_adapters(
    specs: Sequence[AdapterSpec], metadata: dict[str, Any]
) -> list[tuple[LoraAdapter, float]]:
    """Read each (path, scale) for the model whose GGUF metadata is `metadata`."""
    out = []
    for spec in specs:
        try:
            path, scale = spec
            scale = float(scale)
        except (TypeError, ValueError):
            raise AdapterError(f"an adapter is a (path, scale) pair, not {spec!r}") from None
        out.append((load_adapter(path, metadata), scale))
    return out


@contextlib.contextmanager
def attach(adapters: Sequence[tuple[LoraAdapter, float]]) -> Iterator[AdapterHook]:
    """Wrap the weights of models built inside the block; check all adapters were used."""
    hook = AdapterHook(adapters)
    token = WEIGHT_HOOK.set(hook)
    try:
        yield hook
    finally:
        WEIGHT_HOOK.reset(token)
    hook.finish()
