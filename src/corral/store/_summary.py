"""What a manifest records about a GGUF file, so `corral show` and `list` need not open it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral.errors import UnsupportedError
from corral.gguf import open_gguf
from corral.gguf.consts import LlamaFileType


def gguf_summary(path: Path) -> dict[str, Any]:
    """Architecture, size and quantization of a GGUF file.

    Raises GGUFError for a file that is not readable GGUF: the store refuses those, so a bad
    download fails at pull time rather than at the first `corral run`. A well-formed file that
    corral cannot run yet (UnsupportedError) is still stored, with what could be read.
    """
    try:
        g = open_gguf(path)
    except UnsupportedError as e:
        return {"unsupported": str(e)}
    with g:
        arch = g.get("general.architecture")
        file_type = g.get("general.file_type")
        try:
            file_type_name = LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            file_type_name = None
        tokens = g.get("tokenizer.ggml.tokens")
        summary = {
            "gguf_version": g.version,
            "architecture": arch,
            "model_name": g.get("general.name"),
            "parameters": sum(t.n_elements for t in g.tensors.values()),
            "file_type": file_type_name,
            "context_length": g.get(f"{arch}.context_length"),
            "embedding_length": g.get(f"{arch}.embedding_length"),
            "block_count": g.get(f"{arch}.block_count"),
            "vocab_size": len(tokens) if tokens is not None else None,
            "has_chat_template": g.get("tokenizer.chat_template") is not None,
            "tensors": len(g.tensors),
        }
    return {k: _plain(v) for k, v in summary.items()}


def _plain(value: Any) -> Any:
    """A JSON-friendly value: numpy scalars would not serialise."""
    if value is None or isinstance(value, str | bool):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)
