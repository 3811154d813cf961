"""ollama blob uploads (HEAD/POST /api/blobs/sha256:<hex>) and /api/create from them:
`files` (the model's GGUF) and `adapters` (GGUF LoRA files)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

import corral
from adapters.lora_files import random_pairs, write_gguf_lora
from corral.store import Store

TARGETS = ["blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight"]
N_PREDICT = 6


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(client: TestClient, path: Path) -> str:
    """POST a file to /api/blobs; its digest."""
    data = path.read_bytes()
    digest = digest_of(data)
    r = client.post(f"/api/blobs/{digest}", content=data)
    assert r.status_code == 201, r.text
    return digest


def generate(client: TestClient, model: str, n: int = N_PREDICT) -> list[int]:
    """Prompt + greedy continuation ids of /api/generate (its `context`)."""
    body = {"model": model, "prompt": "hello there", "stream": False,
            "options": {"temperature": 0, "num_predict": n}}  # fmt: skip
    r = client.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    return list(r.json()["context"])


def greedy(model: corral.Model, ids: list[int], n: int) -> list[int]:
    """Greedy continuation from full forward passes (no cache, no scheduler)."""
    seq = list(ids)
    for _ in range(n):
        t = int(np.argmax(model.logits(seq)[-1]))
        if model.tokenizer.is_eog(t):
            break
        seq.append(t)
    return seq


def leftovers(home: Path) -> list[Path]:
    """Files in the store's temp folder (an upload must not leave any)."""
    tmp = Store(home).tmp_dir
    return sorted(tmp.iterdir()) if tmp.is_dir() else []


def misfit_lora(path: Path) -> Path:
    """A GGUF LoRA whose output.weight pair fits no `tiny` shape."""
    pair = (np.ones((2, 7), np.float32), np.ones((9, 2), np.float32))
    return write_gguf_lora(path, {"output.weight": pair}, 1.0)


@pytest.fixture
def lora(tmp_path: Path, tiny_files: dict[str, Path]) -> Path:
    """A GGUF LoRA adapter for the `tiny` model."""
    pairs = random_pairs(tiny_files["tiny"], TARGETS, 4, seed=1)
    return write_gguf_lora(tmp_path / "lora.gguf", pairs, 8.0)


def test_upload_then_head(
    make_client: Callable[..., TestClient], home: Path, tiny_files: dict[str, Path]
) -> None:
    # a body far over the request limit: uploads stream to disk, unbuffered
    client = make_client(max_body_bytes=1024)
    tiny = digest_of(tiny_files["tiny"].read_bytes())
    assert client.head(f"/api/blobs/{tiny}").status_code == 200  # a stored model's blob
    # GGUF readers ignore trailing bytes: a new digest, a blob the store lacks
    data = tiny_files["tiny"].read_bytes() + b"\0" * 32
    assert len(data) > 1024
    digest = digest_of(data)
    assert client.head(f"/api/blobs/{digest}").status_code == 404
    chunks = (data[i : i + 4096] for i in range(0, len(data), 4096))
    r = client.post(f"/api/blobs/{digest}", content=chunks)
    assert r.status_code == 201, r.text
    assert client.head(f"/api/blobs/{digest}").status_code == 200
    blob = Store(home).blob_path(digest)
    assert blob.read_bytes() == data and not blob.stat().st_mode & 0o222  # read-only
    assert client.post(f"/api/blobs/{digest}", content=data).status_code == 200  # had it
    assert leftovers(home) == []


def test_digest_mismatch_and_malformed_digests_leave_nothing(
    client: TestClient, home: Path
) -> None:
    claimed = digest_of(b"the real thing")
    r = client.post(f"/api/blobs/{claimed}", content=b"something else")
    assert r.status_code == 400
    message = r.json()["error"]
    assert "digest mismatch" in message and "\n" not in message
    assert client.head(f"/api/blobs/{claimed}").status_code == 404
    assert not Store(home).blob_path(claimed).exists() and leftovers(home) == []
    for bad in ("sha256:abc", "md5:" + "0" * 64, "sha256:" + "g" * 64):
        assert client.post(f"/api/blobs/{bad}", content=b"x").status_code == 400
        assert client.head(f"/api/blobs/{bad}").status_code == 400
    r = client.post("/api/blobs/sha256:abc", content=b"x")
    assert "invalid digest 'sha256:abc'" in r.json()["error"]
    assert leftovers(home) == []


def test_create_from_files_then_generate(
    client: TestClient, home: Path, tiny_files: dict[str, Path]
) -> None:
    data = tiny_files["other"].read_bytes() + b"\0" * 16  # not a blob of the store yet
    digest = digest_of(data)
    assert client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    r = client.post("/api/create", json={"model": "uploaded", "files": {"m.gguf": digest},
                                         "parameters": {"top_k": 1}, "stream": False})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "success"}
    tags = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
    assert tags["uploaded:latest"]["digest"] == digest.removeprefix("sha256:")
    show = client.post("/api/show", json={"model": "uploaded"}).json()
    assert f"FROM {Store(home).blob_path(digest)}" in show["modelfile"]
    assert "top_k" in show["parameters"] and show["details"]["family"] == "llama"
    # the same weights as `other`: the same greedy answer
    assert generate(client, "uploaded") == generate(client, "other")


def test_create_with_adapters_lists_and_applies_them(
    client: TestClient, home: Path, tiny_files: dict[str, Path], lora: Path
) -> None:
    digest = upload(client, lora)
    blob = Store(home).blob_path(digest)
    r = client.post("/api/create", json={"model": "tuned", "from": "tiny",
                                         "adapters": {"lora.gguf": digest}})  # fmt: skip
    assert r.status_code == 200, r.text
    show = client.post("/api/show", json={"model": "tuned"}).json()
    assert f"ADAPTER {blob}" in show["modelfile"]
    assert show["details"]["parent_model"] == "tiny:latest"
    plain, tuned = generate(client, "tiny"), generate(client, "tuned")
    assert plain != tuned
    prompt = generate(client, "tiny", n=0)
    model = corral.load(tiny_files["tiny"], adapters=[(lora, 1.0)])
    assert tuned == greedy(model, prompt, N_PREDICT)
    # the adapter blob is the model's: removing another model does not collect it
    assert client.request("DELETE", "/api/delete", json={"model": "other"}).status_code == 200
    assert blob.is_file() and client.head(f"/api/blobs/{digest}").status_code == 200
    r = client.post("/api/generate", json={"model": "tuned", "keep_alive": 0})
    assert r.status_code == 200
    assert generate(client, "tuned") == tuned


def test_files_and_adapters_together(
    client: TestClient, tiny_files: dict[str, Path], lora: Path, tmp_path: Path
) -> None:
    base = tmp_path / "base.gguf"
    base.write_bytes(tiny_files["tiny"].read_bytes() + b"\0" * 8)
    body = {"model": "both", "files": {"base.gguf": upload(client, base)},
            "adapters": {"lora.gguf": upload(client, lora)}}  # fmt: skip
    r = client.post("/api/create", json=body)
    assert r.status_code == 200, r.text
    client.post("/api/create", json={"model": "tuned", "from": "tiny",
                                     "adapters": body["adapters"]})  # fmt: skip
    assert generate(client, "both") == generate(client, "tuned") != generate(client, "tiny")


def test_unknown_or_unusable_blobs_are_400s(
    client: TestClient, tiny_files: dict[str, Path], tmp_path: Path
) -> None:
    missing = digest_of(b"not uploaded")
    text = tmp_path / "config.json"
    text.write_text('{"model_type": "llama"}')
    wide = misfit_lora(tmp_path / "wide.gguf")
    not_gguf, wrong_shape = upload(client, text), upload(client, wide)
    cases = [
        ({"files": {"m.gguf": missing}}, ["files 'm.gguf'", missing, "/api/blobs/"]),
        ({"from": "tiny", "adapters": {"a.gguf": missing}}, ["adapters 'a.gguf'", missing]),
        ({"files": {"m.gguf": "sha256:00"}}, ["invalid digest 'sha256:00'"]),
        ({"files": {"m.gguf": not_gguf}}, ["not a GGUF file", "JSON"]),
        ({"from": "tiny", "adapters": {"a.gguf": not_gguf}}, ["not a GGUF file"]),
        ({"from": "tiny", "files": {"m.gguf": not_gguf}}, ["not both"]),
        ({"files": {"a.gguf": not_gguf, "b.gguf": missing}}, ["one GGUF"]),
        ({"from": "tiny", "adapters": {"w.gguf": wrong_shape}}, ["output.weight"]),
        ({"from": "tiny", "quantize": "q4_0"}, ["quantize"]),
    ]
    for fields, needles in cases:
        r = client.post("/api/create", json={"model": "x", **fields})
        assert r.status_code == 400, (fields, r.text)
        message = r.json()["error"]
        assert all(n in message for n in needles), (fields, message)
        assert "\n" not in message
    assert client.post("/api/show", json={"model": "x"}).status_code == 404


def test_a_bad_adapter_leaves_an_existing_name_alone(client: TestClient, tmp_path: Path) -> None:
    wide = misfit_lora(tmp_path / "wide.gguf")
    before = client.post("/api/show", json={"model": "tiny"}).json()
    other = client.get("/api/tags").json()["models"]
    other_digest = next(m["digest"] for m in other if m["name"] == "other:latest")
    r = client.post("/api/create", json={
        "model": "tiny", "files": {"m.gguf": "sha256:" + other_digest},
        "adapters": {"w.gguf": upload(client, wide)}})  # fmt: skip
    assert r.status_code == 400 and "output.weight" in r.json()["error"]
    assert client.post("/api/show", json={"model": "tiny"}).json() == before


def test_unused_uploads_are_collected(client: TestClient, home: Path) -> None:
    data = b"an upload no model uses"
    digest = digest_of(data)
    assert client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    assert digest in Store(home).garbage_collect()
    assert client.head(f"/api/blobs/{digest}").status_code == 404


def test_real_server_streams_big_uploads_and_drops_cut_ones(
    home: Path, tiny_files: dict[str, Path]
) -> None:
    import socket
    import time

    import httpx
    from server_helpers import free_port, inprocess_server

    from corral.server import ServerConfig

    data = tiny_files["other"].read_bytes() * 8  # several MiB, in chunks over a socket
    digest = digest_of(data)
    config = ServerConfig(store_home=home, port=free_port(), max_body_bytes=1024)
    with inprocess_server(config) as (base, _):
        chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
        r = httpx.post(f"{base}/api/blobs/{digest}", content=chunks, timeout=60)
        assert r.status_code == 201, r.text
        assert Store(home).blob_path(digest).read_bytes() == data
        # a client that leaves mid-body: no blob, no temp file
        cut = digest_of(b"x" * 100_000)
        with socket.create_connection(("127.0.0.1", config.port)) as s:
            head = f"POST /api/blobs/{cut} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
            s.sendall(head.encode() + b"x" * 50_000)
            deadline = time.monotonic() + 10
            while not leftovers(home) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert leftovers(home)  # the upload's temp file, while the body is arriving
        deadline = time.monotonic() + 10
        while leftovers(home) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(home) == [] and not Store(home).blob_path(cut).exists()
        assert httpx.head(f"{base}/api/blobs/{cut}").status_code == 404


def test_ollama_sdk_create_blob_then_create(
    live: tuple[str, object], tmp_path: Path, tiny_files: dict[str, Path], lora: Path
) -> None:
    import ollama

    base, _ = live
    oll = ollama.Client(host=base, timeout=60)
    model = tmp_path / "model.gguf"
    model.write_bytes(tiny_files["tiny"].read_bytes() + b"\0" * 4)
    files = {"model.gguf": oll.create_blob(model)}
    adapters = {"lora.gguf": oll.create_blob(lora)}
    assert oll.create_blob(lora) == adapters["lora.gguf"]  # again: already there
    assert oll.create("sdk", files=files, adapters=adapters).status == "success"
    shown = oll.show("sdk")
    assert "ADAPTER " in (shown.modelfile or "")
    options = {"temperature": 0, "num_predict": 4}
    tuned = oll.generate("sdk", "hello there", options=options).context
    plain = oll.generate("tiny", "hello there", options=options).context
    assert tuned and tuned != plain
    with pytest.raises(ollama.ResponseError) as e:
        oll.create("bad", files={"m.gguf": "sha256:" + "1" * 64})
    assert e.value.status_code == 400 and "1" * 64 in e.value.error
