"""The 8-bit rounding llama.cpp applies to activations before a dot product with quantized
weights, in torch ("fake quantization": rounded values, kept as float32).

ggml dots Q4_0/Q5_0/Q8_0 weights with Q8_0 activation blocks, Q4_1/Q5_1 with Q8_1 (the same
values plus a sum), and the k-quants with Q8_K. The C kernels (corral.kernels) do this
themselves; these functions serve the paths that multiply dequantized weights with BLAS
(prompt processing, machines without the kernels), so both round alike.
"""

from __future__ import annotations

from enum import Enum

import torch

from corral.gguf.consts import GGMLQuantizationType as Q


class ActQuant(Enum):
    """How activations meeting a weight of a given type are rounded."""

    NONE = 0
    Q8_0 = 1  # blocks of 32: d = amax/127 in float16
    Q8_K = 2  # blocks of 256: scale from the largest-magnitude value, float32


ACT_QUANT_FOR: dict[Q, ActQuant] = {
    **dict.fromkeys((Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0), ActQuant.Q8_0),
    **dict.fromkeys((Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K), ActQuant.Q8_K),
}


def fake_quant_q8_0(x: torch.Tensor) -> torch.Tensor:
    """x [..., K] rounded as ggml's Q8_0 activations: per 32 values, d = amax/127 (stored
    as float16), q = round(x/d)."""
    b = x.reshape(-1, 32)
    d = b.abs().amax(-1, keepdim=True) / 127.0
    q = torch.round(b / torch.where(d > 0, d, 1.0))
    return (q * d.half().float()).reshape(x.shape)


def fake_quant_q8_k(x: torch.Tensor) -> torch.Tensor:
    """x [..., K] rounded as ggml's Q8_K activations: per 256 values, scale -127/max where
    max is the value of largest magnitude (sign kept), q clamped to 127."""
    b = x.reshape(-1, 256)
    mx = b.gather(-1, b.abs().argmax(-1, keepdim=True))
    iscale = torch.where(mx != 0, -127.0 / torch.where(mx != 0, mx, 1.0), 0.0)
    q = torch.clamp(torch.round(b * iscale), max=127.0)
    d = torch.where(iscale != 0, 1.0 / torch.where(iscale != 0, iscale, 1.0), 0.0)
    return (q * d).reshape(x.shape)


_FAKE_QUANT = {ActQuant.Q8_0: fake_quant_q8_0, ActQuant.Q8_K: fake_quant_q8_k}
# q/k/v (and gate/up) read the same input: round it once. Holding the input keeps it alive,
# so its identity cannot pass to another tensor meanwhile; model code never changes a
# matmul input in place (inference tensors carry no version counter to check that).
_last: list[object] = [None, None, None]


def round_activations(x: torch.Tensor, kind: ActQuant) -> torch.Tensor:
    """x rounded as llama.cpp rounds activations of `kind` (x itself for NONE)."""
    if kind is ActQuant.NONE:
        return x
    if _last[0] is x and _last[1] is kind:
        return _last[2]  # type: ignore[return-value]
    out = _FAKE_QUANT[kind](x)
    _last[:] = [x, kind, out]
    return out
