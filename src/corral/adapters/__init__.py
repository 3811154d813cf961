"""LoRA adapters: llama.cpp GGUF adapter files and Hugging Face PEFT folders, applied at a
scale on top of a model's base weights (`corral.load(model, adapters=[(path, scale)])`).
"""

from corral.adapters.apply import AdapterHook, LoraLinear, attach, check_adapters, load_adapters
from corral.adapters.lora import AdapterError, LoraAdapter, LoraPair, load_adapter

__all__ = [
    "AdapterError",
    "AdapterHook",
    "LoraAdapter",
    "LoraLinear",
    "LoraPair",
    "attach",
    "check_adapters",
    "load_adapter",
    "load_adapters",
]
