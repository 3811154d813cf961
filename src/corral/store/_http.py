"""Resumable HTTP(S) download into a `.partial` file, hashing as it writes.

An interrupted download keeps its `.partial` (plus a small `.json` holding the server's
ETag / Last-Modified); the next attempt asks only for the missing bytes with `Range` and
`If-Range`, so a file that changed on the server in between is fetched whole instead of
being spliced onto stale bytes. Without such a validator we start over, for the same reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from corral import __version__
from corral.errors import DownloadError
from corral.store._fsutil import CHUNK, finish_file
from corral.store.progress import ProgressCallback

TIMEOUT_S = 60
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _sidecar(partial: Path) -> Path:
    return partial.with_suffix(".json")


def discard_partial(partial: Path) -> None:
    """Forget a partial download (after success, or when it cannot be trusted)."""
    partial.unlink(missing_ok=True)
    _sidecar(partial).unlink(missing_ok=True)


def _read_validator(partial: Path, url: str) -> str | None:
    try:
        meta = json.loads(_sidecar(partial).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("validator") if meta.get("url") == url else None


def _hash_existing(partial: Path, hasher: hashlib._Hash) -> int:
    with open(partial, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return partial.stat().st_size


def _open(url: str, offset: int, validator: str | None) -> tuple[http.client.HTTPResponse, int]:
    """Open `url`, asking for bytes from `offset` on; return (response, start offset)."""
    headers = {"User-Agent": f"corral/{__version__}", "Accept-Encoding": "identity"}
    if offset and validator:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = validator
    try:
        request = urllib.request.Request(url, headers=headers)
        resp: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # our partial is as long as (or longer than) the file
            return _open(url, 0, None)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: {reason}") from None
    if resp.status == 206:
        m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
        if m and int(m.group(1)) == offset:
            return resp, offset
        resp.close()  # a range we did not ask for: start over
        return _open(url, 0, None)
    return resp, 0  # 200: the server ignored Range, or the file changed (If-Range)


def download(url: str, partial: Path, progress: ProgressCallback, desc: str) -> tuple[str, int]:
    """Fetch `url` into `partial`, resuming it if it exists; return (sha256 hex, size).

    On any failure the partial file stays for the next attempt; on success it is fsynced and
    the caller moves it into the store.
    """
    partial.parent.mkdir(parents=True, exist_ok=True)
    offset = partial.stat().st_size if partial.exists() else 0
    resp, start = _open(url, offset, _read_validator(partial, url) if offset else None)
    with contextlib.closing(resp):
        headers = resp.headers
        hasher = hashlib.sha256()
        if start:
            _hash_existing(partial, hasher)
        validator = headers.get("ETag") or headers.get("Last-Modified")
        # Strong validators only: If-Range with a weak ETag is always answered with 200.
        if validator and validator.startswith("W/"):
            validator = None
        _sidecar(partial).write_text(json.dumps({"url": url, "validator": validator}))
        length = headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        done = start
        with open(partial, "ab" if start else "wb") as f:
            progress(desc, done, total)
            try:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                    progress(desc, done, total)
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(
                    f"{url}: download interrupted ({e}); pull again to resume"
                ) from e
            finally:
                finish_file(f)  # what did arrive is kept, durably, for the resume
    if total is not None and done != total:
        raise DownloadError(
            f"{url}: connection closed after {done} of {total} bytes (pull again to resume)"
        )
    return hasher.hexdigest(), done
