"""The server on models the scheduler runs slot by slot: a tiny rwkv6 (recurrent state) and a
tiny t5 (encoder-decoder; converted from transformers, skipped without it), through the
OpenAI and Ollama routes. Answers are checked against Model.generate on the same file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import corral
from corral.server import ServerConfig, create_app
from corral.store import Store
from tiny_rwkv import write_tiny_rwkv

COMPLETIONS = "/v1/completions"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("seqmodels")
    write_tiny_rwkv(folder / "rwkv6.gguf", "rwkv6")
    return {"rwkv6": folder / "rwkv6.gguf"}


@pytest.fixture(scope="module")
def t5_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from convert.test_t5_parity import save_tiny_t5
    from corral.convert import convert_hf

    folder = tmp_path_factory.mktemp("t5")
    save_tiny_t5(folder / "hf", "flan-t5")
    return convert_hf(folder / "hf", folder / "t5.gguf", "f32")


@pytest.fixture
def client(tmp_path: Path, files: dict[str, Path]) -> Iterator[TestClient]:
    """A client over an app whose store holds `rwkv6`."""
    store = Store(tmp_path / "home")
    for name, path in files.items():
        store.add_file(path, name)
    app = create_app(ServerConfig(store_home=tmp_path / "home", slots=2))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _sse(text: str) -> list[dict]:
    """The JSON events of a server-sent event stream ([DONE] dropped)."""
    blocks = [b.removeprefix("data: ") for b in text.split("\n\n") if b.strip()]
    return [json.loads(b) for b in blocks if b != "[DONE]"]


def test_openai_completion_on_rwkv_matches_generate(
    client: TestClient, files: dict[str, Path]
) -> None:
    want = corral.load(files["rwkv6"]).generate("hello world", 6, temperature=0)
    body = {"model": "rwkv6", "prompt": "hello world", "max_tokens": 6, "temperature": 0}
    r = client.post(COMPLETIONS, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["text"] == want.text
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 6
    # streamed, the chunks add up to the same text
    r = client.post(COMPLETIONS, json=body | {"stream": True})
    assert r.status_code == 200, r.text
    assert "".join(e["choices"][0]["text"] for e in _sse(r.text)) == want.text
    # two choices run concurrently in the scheduler's two slots, both exact
    r = client.post(COMPLETIONS, json=body | {"n": 2})
    assert [c["text"] for c in r.json()["choices"]] == [want.text, want.text]


def test_chat_and_ollama_routes_answer_on_rwkv(client: TestClient) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    r = client.post(
        "/v1/chat/completions",
        json={"model": "rwkv6", "messages": msgs, "max_tokens": 4, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 4
    opts = {"num_predict": 4, "temperature": 0}
    r = client.post(
        "/api/generate",
        json={"model": "rwkv6", "prompt": "hello", "stream": False, "options": opts},
    )
    assert r.status_code == 200, r.text
    assert r.json()["done"] and r.json()["eval_count"] == 4
    r = client.post(
        "/api/chat", json={"model": "rwkv6", "messages": msgs, "stream": False, "options": opts}
    )
    assert r.status_code == 200, r.text
    assert r.json()["done"] and r.json()["eval_count"] == 4


def test_t5_is_served(tmp_path: Path, t5_file: Path) -> None:
    Store(tmp_path / "home").add_file(t5_file, "t5")
    want = corral.load(t5_file).generate("the house", 5, temperature=0)
    app = create_app(ServerConfig(store_home=tmp_path / "home"))
    with TestClient(app, raise_server_exceptions=False) as c:
        body = {"model": "t5", "prompt": "the house", "max_tokens": 5, "temperature": 0}
        r = c.post(COMPLETIONS, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == want.text
        assert r.json()["usage"]["completion_tokens"] == len(want.token_ids)
        r = c.post(
            "/api/chat",
            json={
                "model": "t5",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": False,
                "options": {"num_predict": 3},
            },
        )
        assert r.status_code == 200, r.text
