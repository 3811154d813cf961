"""The FIM routes through the app: llama.cpp /infill, Tabby /v1/completions (segments),
and the OpenAI / ollama `suffix` fields, on tiny models with and without FIM tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from corral.fim import ExtraFile, FimBuilder, FimRequest, prompt_budget, require_fim_tokens
from corral.model import load
from corral.server import ServerConfig, create_app
from corral.store import Store
from tiny_gguf import write_tiny

STARCODER = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<repo_name>",
             "<file_sep>"]  # fmt: skip
PRE, SUF = "def add(a, b):\n    ", "\n    return c\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fimroutes")
    return {
        "coder": write_tiny(d / "coder.gguf", context=256, extra_specials=STARCODER),
        "plain": write_tiny(d / "plain.gguf", context=256),
    }


def _client(home: Path, files: dict[str, Path], names: list[str]) -> Iterator[TestClient]:
    store = Store(home)
    for n in names:
        store.add_file(files[n], n)
    with TestClient(create_app(ServerConfig(store_home=home)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def client(tmp_path: Path, files: dict[str, Path]) -> Iterator[TestClient]:
    yield from _client(tmp_path / "home", files, ["coder", "plain"])


def _expected_len(path: Path, req: FimRequest, max_tokens: int | None) -> int:
    m = load(path)
    tokens = require_fim_tokens(m.tokenizer, m.info.metadata)
    return len(FimBuilder(m.tokenizer, tokens).build(req, prompt_budget(256, max_tokens)).ids)


def test_infill_whole_and_streamed(client: TestClient, files: dict[str, Path]) -> None:
    body = {"model": "coder", "input_prefix": PRE, "input_suffix": SUF, "n_predict": 4,
            "input_extra": [{"filename": "util.py", "text": "X = 1\n"}], "temperature": 0}  # fmt: skip
    r = client.post("/infill", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert isinstance(out["content"], str) and out["stop"] is True
    assert 1 <= out["tokens_predicted"] <= 4
    req = FimRequest(PRE, SUF, extra=[ExtraFile("util.py", "X = 1\n")])
    assert out["tokens_evaluated"] == _expected_len(files["coder"], req, 4)
    with client.stream("POST", "/infill", json={**body, "stream": True}) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1]["stop"] is True and all(e["stop"] is False for e in events[:-1])
    # greedy: the stream says the same as the whole answer
    assert "".join(e["content"] for e in events) == out["content"]


def test_infill_needs_fim_tokens(client: TestClient) -> None:
    r = client.post("/infill", json={"model": "plain", "input_prefix": "a", "input_suffix": "b"})
    assert r.status_code == 400
    assert "no fill-in-the-middle tokens" in r.json()["error"]["message"]


def test_tabby_and_openai_share_the_path(client: TestClient) -> None:
    seg = {"prefix": PRE, "suffix": SUF, "filepath": "m.py",
           "declarations": [{"filepath": "u.py", "body": "def sub(a, b): ..."}]}  # fmt: skip
    r = client.post(
        "/v1/completions", json={"model": "coder", "language": "python", "segments": seg}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"].startswith("cmpl-") and set(out["choices"][0]) == {"index", "text"}
    # Tabby has no streaming: `stream` is ignored and the answer is the same JSON
    streamed = client.post(
        "/v1/completions", json={"model": "coder", "segments": seg, "stream": True}
    )
    assert streamed.headers["content-type"] == "application/json"
    assert set(streamed.json()) == {"id", "choices"}
    # no segments: OpenAI's route answers, reading the same body
    r = client.post("/v1/completions", json={"model": "coder", "prompt": "x", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["object"] == "text_completion"
    r = client.post("/v1/completions", content=b"{not json")
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]


def test_tabby_without_fim_tokens(client: TestClient) -> None:
    ok = {"model": "plain", "segments": {"prefix": "def f():\n"}, "max_tokens": 2}
    assert client.post("/v1/completions", json=ok).status_code == 200  # nothing to drop
    bad = {"model": "plain", "segments": {"prefix": "a", "suffix": "b"}}
    r = client.post("/v1/completions", json=bad)
    assert r.status_code == 400 and "fill-in-the-middle" in r.json()["error"]["message"]


def test_unnamed_model_is_the_only_stored_one(tmp_path: Path, files: dict[str, Path]) -> None:
    for c in _client(tmp_path / "one", files, ["coder"]):
        r = c.post("/v1/completions", json={"segments": {"prefix": PRE, "suffix": SUF}})
        assert r.status_code == 200, r.text
        r = c.post("/infill", json={"input_prefix": PRE, "input_suffix": SUF, "n_predict": 2})
        assert r.status_code == 200, r.text


def test_openai_and_ollama_suffix_use_the_fim_builder(
    client: TestClient, files: dict[str, Path]
) -> None:
    body = {"model": "coder", "prompt": PRE, "suffix": SUF, "max_tokens": 3}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    expected = _expected_len(files["coder"], FimRequest(PRE, SUF), None)
    assert r.json()["usage"]["prompt_tokens"] == expected
    r = client.post(
        "/api/generate",
        json={"model": "coder", "prompt": PRE, "suffix": SUF, "stream": False,
              "options": {"num_predict": 2}},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["prompt_eval_count"] == expected
