"""What the quantized kernels take: the weight types, their block sizes, and the checks on
arguments that give a clear ValueError before any C call (corral.kernels re-exports them)."""

from __future__ import annotations

from typing import Final

import torch

from corral.gguf.consts import GGML_QUANT_SIZES, GGMLQuantizationType

Q = GGMLQuantizationType
SUPPORTED_TYPES: Final[tuple[GGMLQuantizationType, ...]] = (
    Q.Q4_0,
    Q.Q4_1,
    Q.Q5_0,
    Q.Q5_1,
    Q.Q8_0,
    Q.Q2_K,
    Q.Q3_K,
    Q.Q4_K,
    Q.Q5_K,
    Q.Q6_K,
)


# ggml type id -> (values per block, bytes per block) of the weight blocks
_WEIGHT_BLOCK: Final[dict[int, tuple[int, int]]] = {
    int(t): GGML_QUANT_SIZES[t] for t in SUPPORTED_TYPES
}


def _type_id(ggml_type: GGMLQuantizationType | int) -> int:
    try:
        tid = int(ggml_type)
    except (TypeError, ValueError):
        raise ValueError(f"not a ggml type: {ggml_type!r}") from None
    if tid not in _WEIGHT_BLOCK:
        try:
            name = GGMLQuantizationType(tid).name
        except ValueError:
            name = f"id {tid}"
        supported = ", ".join(t.name for t in SUPPORTED_TYPES)
        raise ValueError(f"no quantized kernel for {name} (supported: {supported})")
    return tid


def row_bytes(ggml_type: GGMLQuantizationType | int, k: int) -> int:
    """Bytes of one weight row of k values of this type."""
    tid = _type_id(ggml_type)
    block, size = _WEIGHT_BLOCK[tid]
    if k <= 0 or k % block:
        raise ValueError(
            f"{GGMLQuantizationType(tid).name} rows need a positive multiple of {block} "
            f"values, got k={k}"
        )
    return k // block * size


def _check_x(x: torch.Tensor, k: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype is not torch.float32:
        raise ValueError(f"x must be float32, got {x.dtype}")
    if not x.is_cpu:
        raise ValueError(f"x must be on the CPU, got {x.device}")
    if x.dim() == 0 or x.shape[-1] != k:
        raise ValueError(f"x must have shape [..., {k}], got {list(x.shape)}")
    return x if x.is_contiguous() else x.contiguous()


def _check_w(w: torch.Tensor, tid: int, n_out: int, k: int) -> None:
    if not isinstance(w, torch.Tensor):
        raise ValueError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if w.dtype is not torch.uint8:
        raise ValueError(f"w must hold the raw blocks as uint8, got {w.dtype}")
    if not w.is_cpu:
        raise ValueError(f"w must be on the CPU, got {w.device}")
    if n_out <= 0:
        raise ValueError(f"n_out must be positive, got {n_out}")
    rb = row_bytes(tid, k)
    if w.dim() != 2 or w.shape[0] != n_out or w.shape[1] != rb:
        name = GGMLQuantizationType(tid).name
        raise ValueError(
            f"w must have shape [{n_out}, {rb}] ({n_out} rows of {k} {name} values), "
            f"got {list(w.shape)}"
        )
    if not w.is_contiguous():
        raise ValueError("w must be contiguous (the raw blocks of whole rows)")


def _threads(n_threads: int | None) -> int:
    n = torch.get_num_threads() if n_threads is None else int(n_threads)
    if n < 1:
        raise ValueError(f"n_threads must be at least 1, got {n}")
    return n
