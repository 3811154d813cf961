"""A Hugging Face checkpoint folder: config.json plus its weights, indexed by tensor name.

Weights come from `*.safetensors` (read here directly: a JSON header, then raw little-endian
arrays, mapped without a copy) or, failing that, `pytorch_model*.bin` through
`torch.load(weights_only=True)`, which refuses pickled code. Sharded checkpoints are read
through their `*.index.json`, and a shard the index names but the folder lacks is an error.

`meta(name)` gives a tensor of the right shape and dtype with no data, so a converter can run
its transforms once on shapes alone (to lay out the GGUF header) before touching the weights.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corral.errors import CorralError


class ConvertError(CorralError):
    """A checkpoint that cannot be converted: missing files, unknown architecture, bad tensors."""


# safetensors dtype names -> torch dtypes (the ones model checkpoints use)
_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class _Entry:
    """Where one tensor lives and how to read it."""

    def __init__(
        self, shape: tuple[int, ...], dtype: torch.dtype, load: Callable[[], torch.Tensor]
    ) -> None:
        self.shape = shape
        self.dtype = dtype
        self.load = load


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConvertError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a JSON object")
    return data


def _safetensors_entries(path: Path) -> dict[str, _Entry]:
    """Index one .safetensors file: an 8-byte header length, a JSON header, then the data."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as e:
        raise ConvertError(f"{path.name}: not a readable safetensors file ({e})") from None
    data_start = 8 + n
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out: dict[str, _Entry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ConvertError(
                f"{path.name}: tensor '{name}' has unsupported dtype {info['dtype']}"
            )
        begin, end = info["data_offsets"]
        shape = tuple(int(x) for x in info["shape"])

        def load(
            b: int = data_start + begin,
            e: int = data_start + end,
            s: tuple[int, ...] = shape,
            dt: torch.dtype = dtype,
        ) -> torch.Tensor:
            raw = torch.from_numpy(np.array(mm[b:e]))  # a copy: the map stays read-only
            return raw.view(dt).reshape(s)

        out[name] = _Entry(shape, dtype, load)
    return out


def _torch_bin_entries(path: Path) -> dict[str, _Entry]:
    """Index a pytorch .bin; weights_only refuses anything but tensors and plain containers."""
    try:
        sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # pickle errors come in many types
        raise ConvertError(f"{path.name}: cannot load safely ({e})") from None
    return {
        k: _Entry(tuple(v.shape), v.dtype, lambda v=v: v)
        for k, v in sd.items()
        if isinstance(v, torch.Tensor)
    }


def _shard_files(folder: Path, index_name: str, pattern: str) -> list[Path]:
    index = folder / index_name
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ConvertError(f"{index}: no 'weight_map'")
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise ConvertError(f"{folder}: missing weight files {', '.join(missing)}")
        return [folder / n for n in names]
    return sorted(p for p in folder.iterdir() if re.fullmatch(pattern, p.name))


class Checkpoint:
    """config.json and the tensors of a Hugging Face model folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ConvertError(f"{self.folder}: not a folder")
        if not (self.folder / "config.json").is_file():
            raise ConvertError(f"{self.folder}: no config.json (not a Hugging Face model folder)")
        self.config = _read_json(self.folder / "config.json")
        self._entries: dict[str, _Entry] = {}
        files = _shard_files(
            self.folder, "model.safetensors.index.json", r"model(-\d+-of-\d+)?\.safetensors"
        )
        index = _safetensors_entries
        if not files:
            files = _shard_files(
                self.folder, "pytorch_model.bin.index.json", r"pytorch_model(-\d+-of-\d+)?\.bin"
            )
            index = _torch_bin_entries
        if not files:
            raise ConvertError(
                f"{self.folder}: no weights (model*.safetensors or pytorch_model*.bin)"
            )
        for f in files:
            self._entries.update(index(f))

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def load(self, name: str) -> torch.Tensor:
        return self._entries[name].load()

    def meta(self, name: str) -> torch.Tensor:
        e = self._entries[name]
        return torch.empty(e.shape, dtype=e.dtype, device="meta")

    def file(self, name: str) -> Path | None:
        """A file of the folder, if present (tokenizer.json, tokenizer.model, ...)."""
        p = self.folder / name
        return p if p.is_file() else None
