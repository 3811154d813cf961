"""Small file-system helpers for crash-safe writes: hash while copying, fsync, atomic replace."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from corral.store.progress import ProgressCallback

CHUNK = 1 << 20
SHA256_HEX_LEN = 64


def copy_hashing(
    src: BinaryIO,
    dst: BinaryIO,
    hasher: hashlib._Hash,
    progress: ProgressCallback,
    desc: str,
    total: int | None,
    done: int = 0,
) -> int:
    """Copy `src` to `dst` in chunks, feeding `hasher`; return the byte count after `done`."""
    progress(desc, done, total)
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        hasher.update(chunk)
        done += len(chunk)
        progress(desc, done, total)
    return done


def sha256_file(path: Path, progress: ProgressCallback | None = None, desc: str = "") -> str:
    """Hex sha256 of a file, read in chunks."""
    hasher = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            done += len(chunk)
            if progress:
                progress(desc, done, total)
    return hasher.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def finish_file(f: BinaryIO) -> None:
    """Flush and fsync an open file, so a later `os.replace` never exposes unwritten data."""
    f.flush()
    os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` all or nothing: temp file in the same folder, fsync, replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # BaseException too: Ctrl-C mid-write must not leave the temp file behind.
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def is_sha256_hex(text: str) -> bool:
    """Whether `text` looks like a hex sha256 digest."""
    return len(text) == SHA256_HEX_LEN and all(c in "0123456789abcdef" for c in text.lower())


def folder_digest(folder: Path) -> tuple[str, int]:
    """(hex sha256, total bytes) naming a model folder by its content.

    The digest is the sha256 of one line per file, sorted by path: "path NUL sha256 NUL size",
    so it changes with any file's bytes, name or presence, and not with timestamps or the
    order a file system lists them in. Symlinks and empty folders are not content.
    """
    lines, total = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        size = path.stat().st_size
        lines.append(f"{rel}\0{sha256_file(path)}\0{size}\n")
        total += size
    return hashlib.sha256("".join(lines).encode()).hexdigest(), total
