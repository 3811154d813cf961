"""Where a model runs and in which precision.

CPU: float32 activations, quantized weights used in place by the C kernels, llama.cpp's
roundings (for parity with it). CUDA: bfloat16 activations and weights dequantized once into
GPU memory, torch's fused attention; no llama.cpp emulation there. One engine, one code path
per layer; only the weight form and a few primitives differ by device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from corral.errors import CorralError


@dataclass(frozen=True)
class Device:
    """The torch device a model lives on and its compute dtype."""

    torch_device: torch.device
    dtype: torch.dtype

    @property
    def is_cpu(self) -> bool:
        return self.torch_device.type == "cpu"


CPU = Device(torch.device("cpu"), torch.float32)


def resolve_device(name: str | None = None) -> Device:
    """ "cpu", "cuda", "cuda:N", or None/"auto" (CUDA when torch sees a GPU, else CPU)."""
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cpu":
        return CPU
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CorralError("device 'cuda' asked for, but torch sees no GPU")
        return Device(dev, torch.bfloat16)
    raise CorralError(f"device '{name}' is not supported (use cpu or cuda)")
