"""`corral convert`: Hugging Face checkpoints -> GGUF files llama.cpp and corral both load.

    convert_hf("path/to/hf-model", "model.gguf", "q8_0")

Metadata keys and tensor names are llama.cpp's (gguf-py's tables); each architecture's
converter follows its class in llama.cpp's convert_hf_to_gguf.py. torch is imported here, so
the CLI imports this module only inside the command.
"""

from __future__ import annotations

from pathlib import Path

from corral.convert import (  # noqa: F401  (register the converters)
    classic,
    decoders,
    rwkv,
    rwkv6,
    rwkv7,
    t5,
)
from corral.convert.base import CONVERTERS, converter_for
from corral.convert.checkpoint import Checkpoint, ConvertError
from corral.convert.writer import OutType, write_gguf

__all__ = ["CONVERTERS", "ConvertError", "OutType", "convert_hf", "supported_architectures"]


def supported_architectures() -> list[str]:
    """The Hugging Face `architectures` names that can be converted."""
    return sorted(CONVERTERS)


def convert_hf(folder: str | Path, out: str | Path, outtype: str | OutType = OutType.F16) -> Path:
    """Convert the model in `folder` to the GGUF file `out` (written atomically)."""
    kind = outtype if isinstance(outtype, OutType) else OutType.parse(outtype)
    ckpt = Checkpoint(folder)
    return write_gguf(converter_for(ckpt), Path(out), kind)
