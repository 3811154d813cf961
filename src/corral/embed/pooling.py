"""Hidden states -> one vector per text: pooling, L2 normalization, Matryoshka truncation."""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch

from corral.errors import InvalidRequestError, UnsupportedError


class Pooling(Enum):
    """How token states become a text's vector."""

    MEAN = "mean"  # average over the real (unpadded) tokens: MiniLM, nomic, jina
    CLS = "cls"  # the first token's state: BGE
    LAST = "last"  # the last real token's state: decoder-style embedders

    @classmethod
    def from_gguf(cls, value: int | None) -> Pooling:
        """llama.cpp's `{arch}.pooling_type` (0 none, 1 mean, 2 cls, 3 last, 4 rank)."""
        table = {None: cls.MEAN, 0: cls.MEAN, 1: cls.MEAN, 2: cls.CLS, 3: cls.LAST}
        key = None if value is None else int(value)
        if key not in table:
            raise UnsupportedError(f"pooling type {value} is not supported (rank models are not)")
        return table[key]

    @classmethod
    def from_sentence_transformers(cls, config: dict[str, Any]) -> Pooling:
        """A 1_Pooling/config.json."""
        if config.get("pooling_mode_cls_token"):
            return cls.CLS
        if config.get("pooling_mode_lasttoken"):
            return cls.LAST
        if config.get("pooling_mode_mean_tokens"):
            return cls.MEAN
        modes = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
        raise UnsupportedError(f"pooling {', '.join(modes) or '(none)'} is not supported")


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """hidden [B, T, E], mask [B, T] bool (right-padded) -> [B, E]."""
    if pooling is Pooling.CLS:
        return hidden[:, 0]
    if pooling is Pooling.LAST:
        last = mask.sum(1) - 1  # [B]
        return hidden[torch.arange(hidden.shape[0]), last]
    m = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    # clamp as sentence-transformers does: an all-padding row would divide by zero
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (a zero row stays zero), as F.normalize(p=2, eps=1e-12)."""
    return torch.nn.functional.normalize(x, p=2.0, dim=-1)


def check_dimensions(dimensions: int | None, width: int) -> None:
    """InvalidRequestError unless `dimensions` is None or 1..width."""
    if dimensions is not None and not 1 <= dimensions <= width:
        raise InvalidRequestError(f"dimensions must be between 1 and {width} (got {dimensions})")


def matryoshka(x: torch.Tensor, dimensions: int | None) -> torch.Tensor:
    """Keep the first `dimensions` components (Matryoshka-trained models rank them first)."""
    check_dimensions(dimensions, x.shape[-1])
    return x if dimensions is None else x[..., :dimensions]
