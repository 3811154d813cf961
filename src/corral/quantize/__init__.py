"""Quantization: rewrite a GGUF model's weights in smaller ggml types (`corral quantize`).

`quantize_file` does a whole file; `Scheme` names the mixes llama.cpp offers (Q4_K_M, ...);
`kquants` holds the K-quant block quantizers, `mix` the per-tensor type choice.
"""

from corral.quantize.file import QuantizeReport, plan, quantize_file
from corral.quantize.mix import Scheme

__all__ = ["QuantizeReport", "Scheme", "plan", "quantize_file"]
