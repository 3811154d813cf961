"""Per-request LoRA adapters on the server: `corral serve --lora`, GET/POST /lora-adapters,
and the `lora: [{id, scale}]` field, each adapter set on its own model instance."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import numpy as np
import pytest
from lora_files import random_pairs, write_gguf_lora
from starlette.testclient import TestClient

import corral
from corral.cli.main import main
from corral.server import ServerConfig, create_app
from corral.server.loras import parse_lora_arg
from corral.store import Store
from tiny_gguf import write_tiny

TARGETS = ["blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight"]
N_PREDICT = 6


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """tiny.gguf in a store, two adapters for it, one adapter for a wider model."""
    base = write_tiny(tmp_path / "tiny.gguf", context=256)
    Store(tmp_path / "home").add_file(base, "tiny")
    wide = write_tiny(tmp_path / "wide.gguf", n_embd=96)
    return {
        "home": tmp_path / "home",
        "base": base,
        "a1": write_gguf_lora(tmp_path / "a1.gguf", random_pairs(base, TARGETS, 4, seed=1), 8.0),
        "a2": write_gguf_lora(tmp_path / "a2.gguf", random_pairs(base, TARGETS, 4, seed=2), 8.0),
        "wide": write_gguf_lora(tmp_path / "w.gguf", random_pairs(wide, TARGETS, 4, seed=3), 8.0),
    }


@pytest.fixture
def client(files: dict[str, Path]) -> Iterator[TestClient]:
    """A server started with adapters a1 (id 0, scale 1), a2 (id 1, scale 0.5), wide (id 2)."""
    lora = ((str(files["a1"]), 1.0), (str(files["a2"]), 0.5), (str(files["wide"]), 1.0))
    config = ServerConfig(store_home=files["home"], models_max=4, lora=lora)
    with TestClient(create_app(config), raise_server_exceptions=False) as c:
        yield c


def greedy(model: corral.Model, ids: list[int], n: int) -> list[int]:
    """Greedy continuation from full forward passes (no cache, no scheduler)."""
    seq = list(ids)
    for _ in range(n):
        t = int(np.argmax(model.logits(seq)[-1]))
        if model.tokenizer.is_eog(t):
            break  # the end token is not part of ollama's `context`
        seq.append(t)
    return seq


def generate(
    client: TestClient, lora: list[dict[str, float]] | None, n: int = N_PREDICT
) -> list[int]:
    """Prompt + generated ids of a greedy /api/generate (its `context`)."""
    body = {"model": "tiny", "prompt": "hello there", "stream": False,
            "options": {"temperature": 0, "num_predict": n}}  # fmt: skip
    if lora is not None:
        body["lora"] = lora
    r = client.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    return list(r.json()["context"])


def test_lora_arg_parsing() -> None:
    assert parse_lora_arg("a.gguf") == ("a.gguf", 1.0)
    assert parse_lora_arg("a.gguf:0.25") == ("a.gguf", 0.25)
    assert parse_lora_arg("dir:x/a.gguf") == ("dir:x/a.gguf", 1.0)


def test_lora_adapters_listing_and_global_scales(client: TestClient, files) -> None:  # type: ignore[no-untyped-def]
    listed = client.get("/lora-adapters").json()
    assert [(a["id"], Path(a["path"]).name, a["scale"]) for a in listed] == [
        (0, "a1.gguf", 1.0), (1, "a2.gguf", 0.5), (2, "w.gguf", 1.0)]  # fmt: skip
    # llama.cpp's body is a bare array; adapters it leaves out go to 0
    r = client.post("/lora-adapters", json=[{"id": 1, "scale": 2.0}])
    assert r.status_code == 200 and r.json() == {"success": True}
    assert [a["scale"] for a in client.get("/lora-adapters").json()] == [0.0, 2.0, 0.0]
    r = client.post("/lora-adapters", json=[{"id": 7, "scale": 1.0}])
    assert r.status_code == 400
    assert "unknown LoRA adapter id 7" in r.json()["error"]["message"]
    assert [a["scale"] for a in client.get("/lora-adapters").json()] == [0.0, 2.0, 0.0]


def test_request_adapters_match_a_model_loaded_with_them(client: TestClient, files) -> None:  # type: ignore[no-untyped-def]
    plain = corral.load(files["base"])
    tuned = corral.load(files["base"], adapters=[(files["a2"], 0.75)])
    prompt = generate(client, [], n=0)
    got_plain = generate(client, [])
    got_tuned = generate(client, [{"id": 1, "scale": 0.75}])
    assert got_plain == greedy(plain, prompt, N_PREDICT)
    assert got_tuned == greedy(tuned, prompt, N_PREDICT)
    assert got_plain != got_tuned
    # without the field: the global scales (a1 at 1, a2 at 0.5; `wide` does not fit tiny,
    # so the default skips it rather than failing every request)
    default = corral.load(files["base"], adapters=[(files["a1"], 1.0), (files["a2"], 0.5)])
    assert generate(client, None) == greedy(default, prompt, N_PREDICT)
    # three adapter sets: three instances of one model, one scheduler each
    st = client.app.state.corral  # type: ignore[attr-defined]
    entries = st.manager.loaded()
    assert {e.name for e in entries} == {"tiny:latest"} and len(entries) == 3
    assert len({id(e.scheduler) for e in entries}) == 3
    # unloading the model by name unloads every instance of it
    r = client.post("/api/generate", json={"model": "tiny", "keep_alive": 0})
    assert r.status_code == 200 and st.manager.loaded() == []


def test_concurrent_requests_with_different_adapters(client: TestClient, files) -> None:  # type: ignore[no-untyped-def]
    choices = [[{"id": 0, "scale": 1.0}], [{"id": 1, "scale": 1.0}], []] * 2
    barrier = Barrier(len(choices))

    def one(lora: list[dict[str, float]]) -> list[int]:
        barrier.wait()
        return generate(client, lora)

    with ThreadPoolExecutor(len(choices)) as pool:
        results = list(pool.map(one, choices))
    prompt = generate(client, [], n=0)
    want = [
        greedy(corral.load(files["base"], adapters=[(files["a1"], 1.0)]), prompt, N_PREDICT),
        greedy(corral.load(files["base"], adapters=[(files["a2"], 1.0)]), prompt, N_PREDICT),
        greedy(corral.load(files["base"]), prompt, N_PREDICT),
    ]
    assert results == want * 2
    assert len({tuple(w) for w in want}) == 3


@pytest.mark.parametrize(
    ("path", "body", "family"),
    [
        ("/v1/completions", {"prompt": "hi", "max_tokens": 2}, "openai"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "openai"),
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "stream": False}, "ollama"),
        ("/infill", {"input_prefix": "a", "n_predict": 2}, "openai"),
    ],
)
def test_unknown_adapter_id_is_a_one_line_400(
    client: TestClient, path: str, body: dict[str, object], family: str
) -> None:
    r = client.post(path, json={"model": "tiny", **body, "lora": [{"id": 9, "scale": 1}]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    message = err if family == "ollama" else err["message"]
    assert message.startswith("unknown LoRA adapter id 9") and "\n" not in message


def test_naming_an_adapter_for_another_model_is_a_400(client: TestClient) -> None:
    r = client.post("/v1/completions", json={
        "model": "tiny", "prompt": "hi", "max_tokens": 2, "lora": [{"id": 2, "scale": 1}]})  # fmt: skip
    assert r.status_code == 400
    assert "in the adapter" in r.json()["error"]["message"]


def test_init_without_apply_starts_at_scale_zero(files) -> None:  # type: ignore[no-untyped-def]
    config = ServerConfig(
        store_home=files["home"], lora=((str(files["a1"]), 1.0),), lora_apply=False
    )
    with TestClient(create_app(config)) as c:
        assert [a["scale"] for a in c.get("/lora-adapters").json()] == [0.0]
        plain = generate(c, [])
        assert generate(c, None) == plain
        assert len(c.app.state.corral.manager.loaded()) == 1  # type: ignore[attr-defined]


def test_serve_refuses_a_missing_adapter_file(files, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert main(["serve", "--lora", str(files["home"] / "nope.gguf:0.5")]) == 1
    assert "nope.gguf: no such file or folder" in capsys.readouterr().err
    assert main(["serve", "--lora-scaled", str(files["a1"]), "x"]) == 1
    assert "'x' is not a number" in capsys.readouterr().err


def test_create_reloads_idle_adapter_instances_and_names_a_missing_adapter_blob(
    client: TestClient,
) -> None:
    st = client.app.state.corral  # type: ignore[attr-defined]
    generate(client, [])
    generate(client, [{"id": 0, "scale": 1.0}])
    assert len(st.manager.loaded()) == 2
    r = client.post("/api/create", json={"model": "tiny", "from": "tiny", "system": "be brief"})
    assert r.status_code == 200, r.text
    assert st.manager.loaded() == []  # both idle instances dropped their old defaults
    r = client.post("/api/create", json={"model": "x", "from": "tiny",
                                         "adapters": {"a.gguf": "sha256:" + "0" * 64}})  # fmt: skip
    assert r.status_code == 400
    assert "no uploaded blob sha256:" + "0" * 64 in r.json()["error"]
