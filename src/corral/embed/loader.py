"""`load_embedder(name_or_path)`: a GGUF file, a sentence-transformers / Hugging Face folder,
or a store name (which holds either).

A sentence-transformers folder says how it embeds in modules.json: the Transformer module
(its folder has config.json, the safetensors, tokenizer.json and sentence_bert_config.json
with max_seq_length), a Pooling module (1_Pooling/config.json) and optionally Normalize.
A plain Hugging Face folder has only the first part; it gets mean pooling. A GGUF says the
same in its metadata: `{arch}.pooling_type` and `{arch}.context_length`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from corral.embed.embedder import Embedder, EmbedderInfo
from corral.embed.pooling import Pooling
from corral.embed.text import TextEncoder
from corral.errors import ModelNotFoundError, UnsupportedError
from corral.models.encoder import load_encoder_folder, load_encoder_gguf, read_json

FOLDER_FORMAT = "folder"
GGUF_FORMAT = "gguf"
_ST = "sentence_transformers.models."


def load_embedder(
    name_or_path: str | os.PathLike[str],
    *,
    threads: int | None = None,
    name: str | None = None,
) -> Embedder:
    """Load an embedding model by store name ("minilm"), .gguf path or model folder.

    threads: CPU threads for torch (default: torch's choice). name: the display name.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        emb = load_folder(path, name or path.name)
    elif path.suffix == ".gguf" or path.is_file():
        if not path.is_file():
            raise ModelNotFoundError(f"model file '{name_or_path}' not found")
        emb = load_gguf(path, name or path.stem)
    else:
        from corral.store import Store

        ref = Store().resolve(str(name_or_path))
        loader = load_folder if ref.manifest.get("format") == FOLDER_FORMAT else load_gguf
        emb = loader(ref.path, name or ref.full_name)
    emb.info = dataclasses.replace(emb.info, load_seconds=time.perf_counter() - t0)
    return emb


def load_gguf(path: Path, name: str) -> Embedder:
    """An encoder GGUF (bert, nomic-bert, jina-bert-v2)."""
    from corral.gguf.reader import open_gguf

    with open_gguf(path) as gguf:
        arch = gguf.architecture
        model = load_encoder_gguf(gguf)
        meta = gguf.metadata
        text = TextEncoder.from_gguf(meta, model.max_positions)
        pooling = Pooling.from_gguf(meta.get(f"{arch}.pooling_type"))
    info = EmbedderInfo(
        name=name,
        path=path,
        architecture=arch,
        dimensions=model.hidden_size,
        max_tokens=model.max_positions,
        pooling=pooling,
        normalize=True,  # llama.cpp normalizes embeddings by default
        source_format=GGUF_FORMAT,
    )
    return Embedder(model, text, info)


def load_folder(folder: Path, name: str) -> Embedder:
    """A sentence-transformers or Hugging Face model folder."""
    modules = _modules(folder)
    transformer = folder / modules.get("Transformer", "")
    if not (transformer / "config.json").is_file():
        raise UnsupportedError(f"{folder.name}: not a model folder (no config.json)")
    model, arch = load_encoder_folder(transformer)
    st_config = _optional_json(transformer / "sentence_bert_config.json")
    max_tokens = min(
        int(st_config.get("max_seq_length") or model.max_positions), model.max_positions
    )
    if not (transformer / "tokenizer.json").is_file():
        raise UnsupportedError(f"{folder.name}: no tokenizer.json (a fast tokenizer is needed)")
    text = TextEncoder.from_tokenizer_json(transformer / "tokenizer.json", max_tokens)
    pooling = Pooling.MEAN
    if "Pooling" in modules:
        pooling = Pooling.from_sentence_transformers(
            read_json(folder / modules["Pooling"] / "config.json")
        )
    info = EmbedderInfo(
        name=name,
        path=folder,
        architecture=arch,
        dimensions=model.hidden_size,
        max_tokens=max_tokens,
        pooling=pooling,
        normalize="Normalize" in modules,
        source_format=FOLDER_FORMAT,
    )
    return Embedder(model, text, info)


def _modules(folder: Path) -> dict[str, str]:
    """modules.json as {module kind: sub-folder}; {} for a plain Hugging Face folder."""
    path = folder / "modules.json"
    if not path.is_file():
        return {}
    import json

    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UnsupportedError(f"{folder.name}/modules.json: unreadable ({e})") from None
    out: dict[str, str] = {}
    for entry in entries:
        kind = str(entry.get("type", "")).removeprefix(_ST)
        if kind not in ("Transformer", "Pooling", "Normalize"):
            # Dense projections (sentence-t5, LaBSE) and the like change the vectors
            raise UnsupportedError(
                f"{folder.name}: sentence-transformers module {kind} is not supported"
            )
        out[kind] = str(entry.get("path", ""))
    return out


def _optional_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}
