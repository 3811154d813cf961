"""Multi-part legacy files: early llama.cpp split the bigger LLaMA models over `model.bin`,
`model.bin.1`, ... (13B in 2 parts, 30B in 4, 65B in 8), each part a complete legacy file
(same header and vocabulary) holding one shard of every tensor.

The layout, as llama.cpp's `llama_model_loader` read it (llama.cpp before GGUF):
- the part count is n_embd / (row length of tok_embeddings in the first file);
- 1-D tensors (the norms) are repeated whole in every part: the first copy is used;
- tok_embeddings, attention.wo and feed_forward.w2 are split by columns: each part holds
  ne[0] / n_parts values of every row, and a row is the parts' pieces side by side;
- every other matrix is split by rows: the parts' rows one after another.
Shards of one tensor must agree in type and shape. Quantized rows split on block
boundaries, so joining is a byte copy and the block layout is untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from corral.errors import GGUFError
from corral.legacy.format import LegacyModel, LegacyTensor, read_legacy_file

# the tensors early llama.cpp split by columns (the rest of the matrices: by rows)
_BY_COLUMNS = ("tok_embeddings.", ".attention.wo.weight", ".feed_forward.w2.weight")


def n_parts(first: LegacyModel) -> int:
    """How many files the model is split over, read off the first file (as llama.cpp)."""
    embd = first.tensors.get("tok_embeddings.weight")
    if embd is None or len(embd.ne) != 2:
        return 1  # not a llama file: migrate names the problem
    shard = embd.ne[0]
    n_embd = first.hparams.n_embd
    if n_embd % shard:
        raise GGUFError(
            f"{first.path.name}: tok_embeddings rows have {shard} values, which does not "
            f"divide n_embd={n_embd}"
        )
    return n_embd // shard


def part_path(path: Path, index: int) -> Path:
    """`model.bin` -> `model.bin.1`, `model.bin.2`, ... (part 0 is the file itself)."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


def is_column_split(name: str) -> bool:
    return name.startswith(_BY_COLUMNS[0]) or name.endswith(_BY_COLUMNS[1:])


def join(name: str, shards: list[LegacyTensor], where: str) -> LegacyTensor:
    """One tensor from its shards, one per part in part order."""
    first = shards[0]
    for s in shards[1:]:
        if s.type is not first.type or s.ne != first.ne:
            raise GGUFError(
                f"{where}: the parts disagree on tensor '{name}': {first.type.name} "
                f"{first.ne} in the first, {s.type.name} {s.ne} in another"
            )
    n = len(shards)
    if len(first.ne) == 1:  # repeated in every part
        return first
    if len(first.ne) != 2:
        raise GGUFError(
            f"{where}: tensor '{name}' has {len(first.ne)} dimensions; llama has 1 or 2"
        )
    cols, rows = first.ne[0], first.ne[1]
    if is_column_split(name):
        # [rows, shard row bytes] per part, side by side: whole rows again
        pieces = [np.asarray(s.data).reshape(rows, -1) for s in shards]
        data = np.concatenate(pieces, axis=1).reshape(-1)
        ne = (cols * n, rows)
    else:
        data = np.concatenate([np.asarray(s.data) for s in shards])
        ne = (cols, rows * n)
    return LegacyTensor(name, first.type, ne, data)


def read_legacy(path: str | os.PathLike[str]) -> LegacyModel:
    """A legacy llama model, joined from its parts when it was split over several files.

    Joined tensors are copies in memory (a split model's rows are not contiguous in any
    one file); a single-part model stays mapped."""
    path = Path(path)
    first = read_legacy_file(path)
    count = n_parts(first)
    if count == 1:
        return first
    parts = [first]
    for i in range(1, count):
        p = part_path(path, i)
        if not p.is_file():
            raise GGUFError(
                f"{path.name}: tok_embeddings holds 1/{count} of n_embd, so the model is split "
                f"over {count} files, but {p.name} is missing"
            )
        part = read_legacy_file(p)
        if part.hparams != first.hparams or part.container is not first.container:
            raise GGUFError(
                f"{p.name}: its header differs from {path.name}'s (not a part of the same model)"
            )
        if set(part.tensors) != set(first.tensors):
            odd = sorted(set(part.tensors) ^ set(first.tensors))
            raise GGUFError(
                f"{p.name}: its tensors differ from {path.name}'s ({', '.join(odd[:3])})"
            )
        parts.append(part)
    tensors = {
        name: join(name, [pt.tensors[name] for pt in parts], path.name) for name in first.tensors
    }
    return LegacyModel(path, first.container, first.hparams, first.vocab, tensors)
