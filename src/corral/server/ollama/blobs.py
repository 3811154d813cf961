"""ollama's blob uploads: HEAD and POST /api/blobs/sha256:<hex>, and the lookup /api/create
uses for its `files` and `adapters` fields.

An upload streams to a temp file next to the store's blobs (the body never sits in memory;
the body-size limit does not apply to these paths), hashing as it goes; only a body whose
sha256 matches the digest in the path is moved into blobs/, so a blob's name always states
its content. A mismatch, a malformed digest or a client that leaves mid-body answers 400
and leaves nothing behind. A blob that no model uses yet goes at the store's next garbage
collection (`corral rm`), as ollama prunes unused layers.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import BinaryIO

from fastapi import APIRouter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from corral.server.errors import ApiError, bad_request
from corral.server.state import get_state
from corral.store import Store
from corral.store._fsutil import CHUNK, finish_file

router = APIRouter()

# ollama writes "sha256:<hex>"; its on-disk form "sha256-<hex>" is accepted too
_DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")


def parse_digest(text: str, param: str = "digest") -> str:
    """The lower-case hex of "sha256:<64 hex digits>"; a 400 naming `text` otherwise."""
    match = _DIGEST_RE.fullmatch(text.strip())
    if match is None:
        raise bad_request(f"invalid digest '{text}': expected sha256:<64 hex digits>", param)
    return match.group(1).lower()


def uploaded_blob(store: Store, digest: str, file_name: str, param: str) -> Path:
    """The stored blob `digest` that /api/create's `param` (files or adapters) names for
    `file_name`; a 400 naming the digest if it is malformed or was never uploaded."""
    hexdigest = parse_digest(digest, param)
    if not store.has_blob(hexdigest) or store.blob_path(hexdigest).is_dir():
        raise bad_request(
            f"{param} '{file_name}': no uploaded blob sha256:{hexdigest} "
            f"(POST the file to /api/blobs/sha256:{hexdigest} first)",
            param,
        )
    return store.blob_path(hexdigest)


@router.head("/api/blobs/{digest}")
async def blob_exists(digest: str, request: Request) -> Response:
    """200 if the blob is in the store, 404 if not."""
    hexdigest = parse_digest(digest)
    present = await asyncio.to_thread(get_state(request).store.has_blob, hexdigest)
    return Response(status_code=200 if present else 404)


@router.post("/api/blobs/{digest}")
async def upload_blob(digest: str, request: Request) -> Response:
    """Store the request body as blob `digest`: 201 when stored, 200 if it already was."""
    store = get_state(request).store
    hexdigest = parse_digest(digest)
    if await asyncio.to_thread(store.has_blob, hexdigest):
        return Response(status_code=200)  # content-addressed: the body can only be the same
    hasher = hashlib.sha256()
    with store.temp_file(".upload") as tmp:
        with open(tmp, "wb") as f:
            await _receive(request, f, hasher)
        if hasher.hexdigest() != hexdigest:
            raise bad_request(
                f"digest mismatch: the body's sha256 is {hasher.hexdigest()}, not {hexdigest}",
                "digest",
            )
        await asyncio.to_thread(store.add_blob, tmp, hexdigest)
    return Response(status_code=201)


async def _receive(request: Request, f: BinaryIO, hasher: hashlib._Hash) -> None:
    """Write the body to `f` and `hasher` in CHUNK-sized batches, off the event loop."""
    batch: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            batch.append(chunk)
            size += len(chunk)
            if size >= CHUNK:
                await asyncio.to_thread(_write, f, hasher, b"".join(batch))
                batch, size = [], 0
    except ClientDisconnect:
        raise ApiError(400, "the client left before the whole blob arrived") from None
    await asyncio.to_thread(_write, f, hasher, b"".join(batch), True)


def _write(f: BinaryIO, hasher: hashlib._Hash, data: bytes, last: bool = False) -> None:
    f.write(data)
    hasher.update(data)
    if last:
        finish_file(f)  # fsynced before add_blob renames it into place
