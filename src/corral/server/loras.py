"""The server's LoRA adapters: loaded at startup (`corral serve --lora FILE[:SCALE]`),
listed and re-scaled at GET / POST /lora-adapters, and chosen per request.

Shapes follow llama.cpp's server: adapters have ids 0..n-1 in command-line order; GET
lists `[{"id", "path", "scale"}]`; POST and a request's `lora` field both take
`[{"id": N, "scale": S}]`, and every adapter the list does not name gets scale 0 (as
llama.cpp's parse_lora_request does). A request without `lora` uses the current global
scales. The same `lora` field is accepted on OpenAI, ollama and /infill bodies, so one
shape serves every route.

Requests only name adapters by id: API clients cannot make the server open files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from corral.adapters import AdapterError

# (path, scale) pairs with scale != 0, in id order: what a model instance is built with
AdapterSet = tuple[tuple[str, float], ...]


class LoraScale(BaseModel):
    """One `{"id": N, "scale": S}` entry of a `lora` list (scale defaults to 1)."""

    model_config = ConfigDict(extra="ignore")
    id: int
    scale: float = 1.0


class LoraList(BaseModel):
    """The body of POST /lora-adapters, once wrapped in an object."""

    model_config = ConfigDict(extra="ignore")
    lora: list[LoraScale]


def parse_lora_arg(text: str) -> tuple[str, float]:
    """`FILE` or `FILE:SCALE` (the CLI's --lora); a tail that is no number stays part of
    the path, so paths with colons still work."""
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0


class AdapterTable:
    """The startup adapters and their current global scales."""

    def __init__(self, specs: Sequence[tuple[str, float]], apply: bool = True) -> None:
        self.paths = [str(Path(p).expanduser().resolve()) for p, _ in specs]
        # --lora-init-without-apply: loaded, listed, but scale 0 until asked for
        self.scales = [float(s) if apply else 0.0 for _, s in specs]

    def listing(self) -> list[dict[str, object]]:
        """GET /lora-adapters."""
        return [
            {"id": i, "path": p, "scale": s}
            for i, (p, s) in enumerate(zip(self.paths, self.scales, strict=True))
        ]

    def scaled(self, choice: Sequence[LoraScale]) -> list[float]:
        """Scales for every adapter from a `lora` list: the named ones as given, others 0.
        AdapterError (a 400) for an id the server does not have or a non-finite scale."""
        scales = [0.0] * len(self.paths)
        for entry in choice:
            if not 0 <= entry.id < len(self.paths):
                have = f"ids 0-{len(self.paths) - 1}" if self.paths else "none"
                raise AdapterError(
                    f"unknown LoRA adapter id {entry.id} (the server has {have}; "
                    "GET /lora-adapters lists them)"
                )
            if not math.isfinite(entry.scale):
                raise AdapterError(f"LoRA adapter {entry.id}: scale must be a finite number")
            scales[entry.id] = float(entry.scale)
        return scales

    def set_global(self, choice: Sequence[LoraScale]) -> None:
        """POST /lora-adapters: new default scales for requests without `lora`."""
        self.scales = self.scaled(choice)

    def resolve(self, choice: Sequence[LoraScale] | None) -> AdapterSet:
        """The adapter set a request runs with: its `lora` list, else the global scales."""
        scales = self.scales if choice is None else self.scaled(choice)
        return tuple((p, s) for p, s in zip(self.paths, scales, strict=True) if s != 0)
