"""Embedding routes: OpenAI /v1/embeddings, ollama /api/embed and /api/embeddings, TEI
/embed, /similarity, /tokenize, /info — through TestClient and through the real client
libraries against a live server. The models are tiny random encoders (a sentence-transformers
folder and a nomic-bert GGUF) in a store next to a tiny generation model."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from server_helpers import free_port, inprocess_server
from starlette.testclient import TestClient

from corral.embed import Embedder, load_embedder
from corral.server import ServerConfig, create_app
from corral.store import Store
from tiny_encoders import N_CTX, N_EMBD, random_state, write_folder, write_gguf
from tiny_gguf import write_tiny

TEXTS = ["hello world", "the cat sat on the mat.", "a dog"]
LONG = " ".join(["cat"] * (N_CTX + 10))


@pytest.fixture(scope="module")
def emb_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with `bert` (folder), `nomic` (GGUF) and `tiny` (a generation model)."""
    root = tmp_path_factory.mktemp("emb")
    store = Store(root / "home")
    store.add_folder(write_folder(root / "bert", "bert", random_state("bert", seed=3)), "bert")
    store.add_file(write_gguf(root / "n.gguf", "nomic-bert", random_state("nomic-bert")), "nomic")
    store.add_file(write_tiny(root / "tiny.gguf", context=512), "tiny")
    return root / "home"


@pytest.fixture(scope="module")
def bert(emb_home: Path) -> Embedder:
    return load_embedder(Store(emb_home).resolve("bert").path)


@pytest.fixture
def client(emb_home: Path) -> Iterator[TestClient]:
    with TestClient(
        create_app(ServerConfig(store_home=emb_home)), raise_server_exceptions=False
    ) as c:
        yield c


def _b64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4")


def test_openai_float_base64_tokens_dimensions(client: TestClient, bert: Embedder) -> None:
    want = bert.embed(TEXTS)
    r = client.post("/v1/embeddings", json={"model": "bert", "input": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "bert:latest"
    got = np.array([d["embedding"] for d in body["data"]])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert body["usage"]["prompt_tokens"] == sum(bert.count_tokens(TEXTS))
    r = client.post(
        "/v1/embeddings", json={"model": "bert", "input": "a dog", "encoding_format": "base64"}
    )
    np.testing.assert_allclose(_b64(r.json()["data"][0]["embedding"]), want[2], atol=1e-6)
    ids = bert.text.backend.plain(["a dog"])[0]  # raw token ids: the route adds the specials
    for inp in (ids, [ids]):
        r = client.post("/v1/embeddings", json={"model": "bert", "input": inp})
        np.testing.assert_allclose(r.json()["data"][0]["embedding"], want[2], atol=1e-6)
    r = client.post("/v1/embeddings", json={"model": "bert", "input": TEXTS, "dimensions": 8})
    cut = np.array([d["embedding"] for d in r.json()["data"]])
    assert cut.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "bert", "input": LONG}, 400, "at most"),
        ({"model": "bert", "input": []}, 400, "empty"),
        ({"model": "bert", "input": "x", "dimensions": N_EMBD + 1}, 400, "dimensions"),
        ({"model": "bert", "input": [[2, 99999, 3]]}, 400, "outside"),
        ({"model": "tiny", "input": "x"}, 400, "not an embedding model"),
        ({"model": "nope", "input": "x"}, 404, "not found"),
        ({"input": "x"}, 400, "model"),
    ],
)
def test_openai_errors(client: TestClient, body: dict, status: int, needle: str) -> None:
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_openai_long_input_code(client: TestClient) -> None:
    r = client.post("/v1/embeddings", json={"model": "bert", "input": LONG})
    assert r.json()["error"]["code"] == "context_length_exceeded"


def test_generation_route_refuses_an_embedding_model(client: TestClient) -> None:
    r = client.post("/api/generate", json={"model": "bert", "prompt": "hi", "stream": False})
    assert r.status_code == 400 and "embedding model" in r.json()["error"]


def test_ollama_embed_and_legacy_embeddings(client: TestClient, bert: Embedder) -> None:
    r = client.post("/api/embed", json={"model": "bert", "input": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    np.testing.assert_allclose(body["embeddings"], bert.embed(TEXTS), atol=1e-6)
    assert body["prompt_eval_count"] == sum(bert.count_tokens(TEXTS))
    assert body["model"] == "bert:latest" and body["total_duration"] > 0
    one = client.post("/api/embed", json={"model": "bert", "input": LONG}).json()
    np.testing.assert_allclose(one["embeddings"][0], bert.embed(LONG)[0], atol=1e-6)  # cut
    r = client.post("/api/embed", json={"model": "bert", "input": LONG, "truncate": False})
    assert r.status_code == 400 and "at most" in r.json()["error"]
    assert client.post("/api/embed", json={"model": "bert", "input": []}).json()["embeddings"] == []
    r = client.post("/api/embeddings", json={"model": "bert", "prompt": "a dog"})
    np.testing.assert_allclose(
        r.json()["embedding"], bert.embed("a dog", normalize=False)[0], atol=1e-5
    )
    assert client.post("/api/embeddings", json={"model": "bert", "prompt": ""}).json() == {
        "embedding": []
    }


def test_tei_embed_similarity_info(client: TestClient, bert: Embedder) -> None:
    r = client.post("/embed", json={"model": "bert", "inputs": TEXTS})
    assert r.status_code == 200, r.text
    vecs = np.array(r.json())
    np.testing.assert_allclose(vecs, bert.embed(TEXTS), atol=1e-6)
    raw = client.post("/embed", json={"model": "bert", "inputs": "a dog", "normalize": False})
    np.testing.assert_allclose(raw.json()[0], bert.embed("a dog", normalize=False)[0], atol=1e-5)
    r = client.post("/embed", json={"model": "bert", "inputs": LONG})
    assert r.status_code == 400  # TEI's default: no truncation
    left = {"model": "bert", "inputs": LONG + " dog", "truncate": True}
    left["truncation_direction"] = "Left"
    got = client.post("/embed", json=left).json()[0]
    np.testing.assert_allclose(got, bert.embed(LONG + " dog", truncate="left")[0], atol=1e-6)
    sim = {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}
    r = client.post("/similarity", json={"model": "bert", "inputs": sim})
    np.testing.assert_allclose(r.json(), vecs[1:] @ vecs[0], atol=1e-5)
    info = client.get("/info", params={"model": "bert"}).json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == N_CTX and info["model_id"] == "bert:latest"
    assert info["model_sha"] == Store(bert.info.path.parents[1]).get("bert").digest[7:]


def test_tei_tokenize_next_to_llamacpp_tokenize(client: TestClient) -> None:
    r = client.post("/tokenize", json={"model": "bert", "inputs": "Hello cats"})
    assert r.status_code == 200, r.text
    (toks,) = r.json()
    assert [t["text"] for t in toks] == ["[CLS]", "hello", "cat", "##s", "[SEP]"]
    assert [t["special"] for t in toks] == [True, False, False, False, True]
    assert (toks[1]["start"], toks[1]["stop"], toks[3]["start"], toks[3]["stop"]) == (0, 5, 9, 10)
    plain = client.post(
        "/tokenize", json={"model": "bert", "inputs": ["a", "b"], "add_special_tokens": False}
    )
    assert [[t["text"] for t in s] for s in plain.json()] == [["a"], ["b"]]
    # llama.cpp's body shape still reaches the llama.cpp route
    r = client.post("/tokenize", json={"model": "tiny", "content": "hello"})
    assert r.status_code == 200 and isinstance(r.json()["tokens"][0], int)


def test_tei_model_may_be_left_out_when_unambiguous(client: TestClient) -> None:
    r = client.post("/embed", json={"inputs": "x"})
    assert r.status_code == 400 and "'model' is required" in r.json()["error"]["message"]
    client.post("/embed", json={"model": "nomic", "inputs": "x"})  # loads nomic
    assert client.get("/info").json()["model_id"] == "nomic:latest"
    assert len(client.post("/embed", json={"inputs": ["x", "y"]}).json()) == 2


def test_real_clients(emb_home: Path, bert: Embedder) -> None:
    import ollama
    import openai

    with inprocess_server(ServerConfig(store_home=emb_home, port=free_port())) as (base, _):
        oa = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
        res = oa.embeddings.create(model="bert", input=TEXTS)  # the client asks for base64
        got = np.array([d.embedding for d in res.data])
        np.testing.assert_allclose(got, bert.embed(TEXTS), atol=1e-6)
        assert res.usage.prompt_tokens == sum(bert.count_tokens(TEXTS))
        ol = ollama.Client(host=base).embed(model="nomic", input=["a dog", "a cat"])
        assert np.array(ol.embeddings).shape == (2, N_EMBD)
