"""The GGUF file format: open (memory-mapped), typed hyper-parameters."""

from corral.gguf.reader import GGUFFile, TensorInfo, open_gguf, sniff_format

__all__ = ["GGUFFile", "TensorInfo", "open_gguf", "sniff_format"]
