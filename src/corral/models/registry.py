"""GGUF `general.architecture` -> the module that implements it, imported on first use.

Variants that share one forward pass are aliases here, not copies of the module.
"""

from __future__ import annotations

import importlib

from corral.engine.device import CPU, Device
from corral.errors import UnsupportedError
from corral.gguf.reader import GGUFFile
from corral.models.base import CausalLM

ARCHITECTURES: dict[str, str] = {
    "llama": "llama",
    # Mistral files written by older converters carry their own name; same network.
    "mistral": "llama",
    "gemma3": "gemma3",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "phi3": "phi3",
    "starcoder2": "starcoder2",
    "gptj": "gptj",
    "bloom": "bloom",
    "mpt": "mpt",
    "falcon": "falcon",
    "rwkv": "rwkv",  # RWKV-4: no llama.cpp arch; corral's names (corral.convert.rwkv)
    "rwkv6": "rwkv6",
    "rwkv7": "rwkv7",
    "t5": "t5",  # encoder-decoder: an EncoderDecoderLM (corral.engine.seq2seq)
}


def supported_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def check_architecture(gguf: GGUFFile) -> str:
    """The module name serving the file's architecture; a one-line error if there is none."""
    arch = gguf.architecture
    module_name = ARCHITECTURES.get(arch)
    if module_name is None:
        raise UnsupportedError(
            f"{gguf.path.name}: architecture '{arch}' is not supported "
            f"(supported: {', '.join(supported_architectures())})"
        )
    return module_name


def load_model(gguf: GGUFFile, device: Device = CPU) -> CausalLM:
    """Build the network for an open GGUF file, on `device`."""
    module = importlib.import_module(f"corral.models.{check_architecture(gguf)}")
    return module.Model.from_gguf(gguf, device)
