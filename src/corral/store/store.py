"""The local model store: content-addressed GGUF blobs plus small JSON manifests naming them.

Layout under `$CORRAL_HOME` (default `~/.cache/corral`):

    blobs/sha256-<hex>        the GGUF files, named by their content (read-only); a model
                              that is a folder (sentence-transformers: safetensors, configs,
                              tokenizer.json) is a directory here, named by `folder_digest`
    manifests/<name>/<tag>    JSON: digest, size, source, created, format, GGUF summary
    partial/                  resumable downloads (kept across interrupted pulls)
    tmp/                      files being written; never visible under blobs/ or manifests/

Every write is a temp file in the same file system, fsynced, then `os.replace`d into place,
blob before manifest: a crash or Ctrl-C at any point leaves either the old state or the new
one, never a manifest pointing at half a file.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.errors import CorralError, GGUFError, ModelNotFoundError
from corral.gguf import sniff_format
from corral.store._fsutil import (
    atomic_write_text,
    copy_hashing,
    finish_file,
    folder_digest,
    fsync_dir,
    is_sha256_hex,
)
from corral.store._summary import gguf_summary
from corral.store.known import KNOWN_MODELS
from corral.store.progress import ProgressCallback, no_progress

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; single-writer use is still safe
    fcntl = None  # type: ignore[assignment]

DEFAULT_TAG = "latest"
FOLDER_FORMAT = "folder"  # manifest "format" of a model stored as a directory blob
MANIFEST_SCHEMA = 1
PULL_HINT = "(corral pull NAME fetches one)"
# Temp files older than this come from a killed process (no `finally` ran), not a live pull.
STALE_TEMP_S = 24 * 3600
_PART_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def default_home() -> Path:
    """`$CORRAL_HOME`, or `~/.cache/corral`."""
    return Path(os.environ.get("CORRAL_HOME") or "~/.cache/corral").expanduser()


def parse_name(text: str) -> tuple[str, str]:
    """Split `name[:tag]` into (name, tag); names are lower-cased, the tag defaults to latest."""
    name, sep, tag = text.strip().lower().partition(":")
    tag = tag if sep else DEFAULT_TAG
    if not (_PART_RE.fullmatch(name) and _PART_RE.fullmatch(tag)):
        raise CorralError(
            f"invalid model name '{text}': use letters, digits, '.', '_' and '-', then :TAG"
        )
    return name, tag


def slugify(stem: str) -> str:
    """A valid model name made from a file name stem ('SmolLM2 Q4' -> 'smollm2-q4')."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).lstrip("._-")[:128]
    return slug or "model"


def looks_like_path(text: str) -> bool:
    """Whether `text` names a file rather than a store model (names never hold '/')."""
    return text.lower().endswith(".gguf") or "/" in text or os.sep in text or text[:1] == "~"


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: where its GGUF file is and what the store knows about it.

    `digest` is "sha256:<hex>" for stored models and None for a plain file path given
    directly (not hashed: that would read the whole file on every `corral run`).
    """

    name: str
    tag: str
    path: Path
    digest: str | None
    size: int
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def full_name(self) -> str:
        """`name:tag`, or just the name for a plain file."""
        return f"{self.name}:{self.tag}" if self.tag else self.name


class Store:
    """The model store rooted at `home` (default `$CORRAL_HOME` or ~/.cache/corral)."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.blobs_dir = self.home / "blobs"
        self.manifests_dir = self.home / "manifests"
        self.partial_dir = self.home / "partial"
        self.tmp_dir = self.home / "tmp"

    def __repr__(self) -> str:
        return f"Store({str(self.home)!r})"

    # ---- reading -------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Path of the blob for "sha256:<hex>" (or a bare hex digest)."""
        hexdigest = digest.removeprefix("sha256:")
        if not is_sha256_hex(hexdigest):
            raise CorralError(f"invalid digest '{digest}'")
        return self.blobs_dir / f"sha256-{hexdigest.lower()}"

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        """Whether the blob is present (and `size` bytes long, when given)."""
        path = self.blob_path(digest)
        if path.is_dir():  # a folder model: its files' sizes add up to `size`
            total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            return size is None or total == size
        return path.is_file() and (size is None or path.stat().st_size == size)

    def get(self, name: str) -> ModelRef | None:
        """The stored model `name[:tag]`, or None (also for an invalid or unreadable one)."""
        try:
            model, tag = parse_name(name)
        except CorralError:
            return None
        return self._read_manifest(model, tag)

    def resolve(self, name_or_path: str | os.PathLike[str]) -> ModelRef:
        """A stored model by `name[:tag]`, or a `.gguf` file path (used in place, not copied)."""
        text = os.fspath(name_or_path)
        if isinstance(name_or_path, os.PathLike) or looks_like_path(text):
            path = Path(text).expanduser()
            if not path.is_file():
                raise ModelNotFoundError(f"model file '{text}' not found")
            path = path.resolve()
            manifest = {"format": "gguf", "source": str(path), "file_name": path.name}
            return ModelRef(slugify(path.stem), "", path, None, path.stat().st_size, manifest)
        ref = self.get(text)
        if ref is None:
            raise ModelNotFoundError(self._not_found_message(text))
        if not ref.path.exists():
            raise ModelNotFoundError(
                f"model '{ref.full_name}' is damaged: blob {ref.path.name} is missing "
                f"(corral pull it again, or corral rm it)"
            )
        return ref

    def list(self) -> list[ModelRef]:
        """Every stored model, sorted by name:tag (unreadable manifests are skipped)."""
        refs = []
        if self.manifests_dir.is_dir():
            for model_dir in sorted(self.manifests_dir.iterdir()):
                if not model_dir.is_dir():
                    continue
                for tag_file in sorted(model_dir.iterdir()):
                    ref = self._read_manifest(model_dir.name, tag_file.name)
                    if ref is not None:
                        refs.append(ref)
        return refs

    def names(self) -> list[str]:
        """`name:tag` of every stored model."""
        return [ref.full_name for ref in self.list()]

    def _manifest_path(self, name: str, tag: str) -> Path:
        return self.manifests_dir / name / tag

    def _read_manifest(self, name: str, tag: str) -> ModelRef | None:
        # Names come from parse_name or a directory listing; the regex also keeps temp files
        # (".tag.xxx.tmp") out of listings.
        if not (_PART_RE.fullmatch(name) and _PART_RE.fullmatch(tag)):
            return None
        try:
            manifest = json.loads(self._manifest_path(name, tag).read_text(encoding="utf-8"))
            digest = manifest["digest"]
            path = self.blob_path(digest)
            size = int(manifest["size"])
        except (OSError, ValueError, KeyError, TypeError, CorralError):
            return None
        return ModelRef(name, tag, path, digest, size, manifest)

    def _not_found_message(self, text: str) -> str:
        query = text.strip().lower()
        if query.removesuffix(f":{DEFAULT_TAG}") in KNOWN_MODELS:
            known = query.removesuffix(f":{DEFAULT_TAG}")
            return f"model '{text}' not found; corral pull {known} fetches it"
        # Match against both "name:tag" and, for :latest, the bare name people usually type.
        candidates: dict[str, str] = {}
        for full in self.names():
            candidates[full] = full
            bare, _, tag = full.partition(":")
            if tag == DEFAULT_TAG:
                candidates.setdefault(bare, full)
        for known in KNOWN_MODELS:
            candidates.setdefault(known, known)
        shown = dict.fromkeys(candidates[m] for m in difflib.get_close_matches(query, candidates))
        if shown:
            return f"model '{text}' not found; did you mean {', '.join(shown)}? {PULL_HINT}"
        return f"model '{text}' not found {PULL_HINT}"

    # ---- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise blob/manifest changes between processes (a pull racing a `corral rm`)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "a+b") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    @contextlib.contextmanager
    def temp_file(self, suffix: str = ".tmp") -> Iterator[Path]:
        """An empty temp file next to the blobs (same file system), removed on exit unless
        `commit` moved it into the store."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, suffix=suffix)
        os.close(fd)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def temp_dir(self) -> Iterator[Path]:
        """A scratch folder next to the blobs, removed with its contents on exit."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=self.tmp_dir, suffix=".d"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(
        self,
        file: Path,
        sha256: str,
        name: str,
        *,
        source: str,
        file_name: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ModelRef:
        """Move a complete, fsynced, checksum-verified `file` (on this file system) into the
        store as blob `sha256` and point manifest `name[:tag]` at it.

        The file must be a readable GGUF (GGUFError otherwise; it is then left for the caller
        to clean up).
        """
        model, tag = parse_name(name)
        summary = gguf_summary(file)
        size = file.stat().st_size
        digest = f"sha256:{sha256.lower()}"
        blob = self.blob_path(digest)
        with self._lock():
            self._place_blob(file, blob, size)
            manifest = {
                "schema": MANIFEST_SCHEMA,
                "name": model,
                "tag": tag,
                "format": "gguf",
                "digest": digest,
                "size": size,
                "source": source,
                "file_name": file_name or file.name,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                **(extra or {}),
                "gguf": summary,
            }
            self._write_manifest(model, tag, manifest)
        return ModelRef(model, tag, blob, digest, size, manifest)

    def add_blob(self, file: Path, sha256: str) -> Path:
        """Move a complete, fsynced, checksum-verified `file` (on this file system) into the
        store as blob `sha256`, with no manifest naming it yet (an upload that a model made
        later will use); return the blob's path. An unused blob goes at the next collection.
        """
        blob = self.blob_path(sha256)
        with self._lock():
            self._place_blob(file, blob, file.stat().st_size)
        return blob

    def _place_blob(self, file: Path, blob: Path, size: int) -> None:
        # Caller holds the lock.
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        if blob.is_file() and blob.stat().st_size == size:
            file.unlink()  # same digest already stored: content-addressing dedupes it
        else:
            file.chmod(0o444)  # blobs are immutable; mmap readers rely on it
            os.replace(file, blob)
            fsync_dir(self.blobs_dir)

    def tag(self, src: ModelRef, name: str, extra: dict[str, Any] | None = None) -> ModelRef:
        """Point manifest `name` at the blob of `src` (no bytes copied)."""
        model, tag = parse_name(name)
        if src.digest is None:
            raise CorralError(f"'{src.full_name}' is a plain file, not a stored model")
        manifest = {
            **src.manifest,
            **(extra or {}),
            "name": model,
            "tag": tag,
            # a new name is a new entry: `list` shows when it was made, as ollama does
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with self._lock():
            if not self.has_blob(src.digest):
                raise ModelNotFoundError(f"blob {src.path.name} is missing from the store")
            self._write_manifest(model, tag, manifest)
        return ModelRef(model, tag, src.path, src.digest, src.size, manifest)

    def _write_manifest(self, name: str, tag: str, manifest: dict[str, Any]) -> None:
        atomic_write_text(self._manifest_path(name, tag), json.dumps(manifest, indent=2) + "\n")

    def commit_folder(
        self,
        folder: Path,
        sha256: str,
        name: str,
        *,
        source: str,
        extra: dict[str, Any] | None = None,
    ) -> ModelRef:
        """Move a complete model folder (fsynced, on this file system, digest `sha256` from
        `folder_digest`) into the store as a directory blob and point `name` at it."""
        model, tag = parse_name(name)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files)
        digest = f"sha256:{sha256.lower()}"
        blob = self.blob_path(digest)
        with self._lock():
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
            if blob.is_dir():
                shutil.rmtree(folder)  # same content already stored
            else:
                for p in files:
                    p.chmod(0o444)  # immutable, as file blobs; the folders stay removable
                os.replace(folder, blob)
                fsync_dir(self.blobs_dir)
            manifest = {
                "schema": MANIFEST_SCHEMA,
                "name": model,
                "tag": tag,
                "format": FOLDER_FORMAT,
                "digest": digest,
                "size": size,
                "source": source,
                "file_name": folder.name,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                **(extra or {}),
                "files": [p.relative_to(folder).as_posix() for p in files],
            }
            self._write_manifest(model, tag, manifest)
        return ModelRef(model, tag, blob, digest, size, manifest)

    def add_folder(self, path: str | os.PathLike[str], name: str | None = None) -> ModelRef:
        """Copy a model folder (sentence-transformers / Hugging Face) into the store."""
        src = Path(path).expanduser()
        if not (src / "config.json").is_file():
            raise ModelNotFoundError(f"'{path}' is not a model folder (no config.json)")
        name = name or slugify(src.resolve().name)
        parse_name(name)
        with self.temp_dir() as tmp:
            dst = tmp / src.resolve().name
            shutil.copytree(src, dst, symlinks=False)
            for p in dst.rglob("*"):
                if p.is_file():
                    with open(p, "rb+") as f:
                        finish_file(f)
            sha, _ = folder_digest(dst)
            return self.commit_folder(dst, sha, name, source=str(src.resolve()))

    def add_file(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> ModelRef:
        """Copy a GGUF file into the store as `name` (default: from the file name)."""
        src = Path(path).expanduser()
        if not src.is_file():
            raise ModelNotFoundError(f"model file '{path}' not found")
        name = name or slugify(src.stem)
        parse_name(name)  # fail on a bad name before copying gigabytes
        kind = sniff_format(src)
        if kind != "GGUF":
            raise GGUFError(f"{src.name}: not a GGUF file, it looks like {kind}")
        hasher = hashlib.sha256()
        size, desc = src.stat().st_size, f"copy {src.name}"
        with self.temp_file() as tmp:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                copy_hashing(fin, fout, hasher, progress or no_progress, desc, size)
                finish_file(fout)
            return self.commit(
                tmp, hasher.hexdigest(), name, source=str(src.resolve()), file_name=src.name
            )

    def copy(self, src: str, dst: str) -> ModelRef:
        """Give stored model `src` a second name `dst` (sharing its blob)."""
        return self.tag(self.resolve_stored(src), dst, {"copied_from": src})

    def resolve_stored(self, name: str) -> ModelRef:
        """Like `resolve`, but only for store names (no file paths)."""
        if looks_like_path(name):
            raise ModelNotFoundError(f"'{name}' is a file path, not a stored model")
        return self.resolve(name)

    def remove(self, name: str) -> ModelRef:
        """Delete manifest `name[:tag]`, then any blob no manifest uses any more."""
        ref = self.get(name)
        if ref is None:
            raise ModelNotFoundError(self._not_found_message(name))
        with self._lock():
            self._manifest_path(ref.name, ref.tag).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # other tags still in it
                self._manifest_path(ref.name, ref.tag).parent.rmdir()
            self._collect()
        return ref

    def garbage_collect(self) -> list[str]:
        """Delete unreferenced blobs and stale temp files; return the digests removed."""
        with self._lock():
            return self._collect()

    def _digests_used(self, ref: ModelRef) -> set[str | None]:
        """The blobs a manifest keeps: its own, and the LoRA adapters its "modelfile" entry
        applies from blobs/ (uploaded through ollama's /api/blobs)."""
        used: set[str | None] = {ref.digest}
        entry = ref.manifest.get("modelfile")
        adapters = entry.get("adapters") if isinstance(entry, dict) else None
        blobs = self.blobs_dir.resolve()
        for adapter in adapters if isinstance(adapters, list) else []:
            path = Path(str(adapter.get("path", ""))) if isinstance(adapter, dict) else None
            if path is not None and path.parent == blobs and path.name.startswith("sha256-"):
                used.add("sha256:" + path.name.removeprefix("sha256-"))
        return used

    def _collect(self) -> list[str]:
        # Caller holds the lock, so no commit can be between its blob and its manifest.
        used = {digest for ref in self.list() for digest in self._digests_used(ref)}
        removed = []
        if self.blobs_dir.is_dir():
            for blob in self.blobs_dir.iterdir():
                digest = "sha256:" + blob.name.removeprefix("sha256-")
                if blob.name.startswith("sha256-") and digest not in used:
                    if blob.is_dir():
                        shutil.rmtree(blob, ignore_errors=True)
                    else:
                        blob.unlink(missing_ok=True)
                    removed.append(digest)
        if self.tmp_dir.is_dir():
            cutoff = time.time() - STALE_TEMP_S
            for tmp in self.tmp_dir.iterdir():
                with contextlib.suppress(OSError):  # may vanish under us: a pull finishing
                    if tmp.stat().st_mtime < cutoff:
                        if tmp.is_dir():
                            shutil.rmtree(tmp, ignore_errors=True)
                        else:
                            tmp.unlink()
        return removed
