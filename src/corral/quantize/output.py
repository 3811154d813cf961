"""Writing GGUF files safely: metadata copied with its value types, tensors streamed one at
a time, and the output appearing only when complete.

`atomic_output` gives a temporary path next to the destination and renames it into place
when the block succeeds; on any error (or Ctrl-C) the half-written file is deleted, so a
failed `corral quantize` or `corral migrate` never leaves a truncated model behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType, GGUFWriter

from corral.errors import CorralError
from corral.gguf.reader import GGUFFile

_ARRAY_TYPES = {
    np.dtype(np.uint8): GGUFValueType.UINT8,
    np.dtype(np.int8): GGUFValueType.INT8,
    np.dtype(np.uint16): GGUFValueType.UINT16,
    np.dtype(np.int16): GGUFValueType.INT16,
    np.dtype(np.uint32): GGUFValueType.UINT32,
    np.dtype(np.int32): GGUFValueType.INT32,
    np.dtype(np.float32): GGUFValueType.FLOAT32,
    np.dtype(np.uint64): GGUFValueType.UINT64,
    np.dtype(np.int64): GGUFValueType.INT64,
    np.dtype(np.float64): GGUFValueType.FLOAT64,
    np.dtype(np.bool_): GGUFValueType.BOOL,
}


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it to `dest` if the block succeeds."""
    dest = Path(dest)
    if dest.is_dir():
        raise CorralError(f"{dest}: is a directory; give the output file's name")
    if not dest.parent.exists():
        raise CorralError(f"{dest.parent}: no such directory")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        # still there: the block failed (or the rename did); leave nothing half-written
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def copy_metadata(
    writer: GGUFWriter, src: GGUFFile, skip: set[str] | frozenset[str] = frozenset()
) -> None:
    """Every key of `src` except `skip` (and general.architecture, which the writer sets)."""
    for key, value in src.metadata.items():
        if key in skip or key == "general.architecture":
            continue
        if key == "general.alignment":
            # the writer must pad the data to it too, not only record it
            writer.add_custom_alignment(int(value))
            continue
        vtype = src.value_types[key]
        if vtype == GGUFValueType.ARRAY:
            add_array(writer, key, value)
        else:
            writer.add_key_value(key, value, vtype)


def add_array(writer: GGUFWriter, key: str, value: Any) -> None:
    """An array value as our reader returns it (numpy array or list) with its element type."""
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return
        writer.add_key_value(key, value.tolist(), GGUFValueType.ARRAY, _ARRAY_TYPES[value.dtype])
    elif value:
        sub = GGUFValueType.STRING if isinstance(value[0], str) else None
        writer.add_key_value(key, list(value), GGUFValueType.ARRAY, sub)
