"""POST /retrieval/query over a collection indexed with a stub embedder (keyword mode:
no model needed), and its errors."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from corral.rag.db import Collection
from corral.rag.indexer import Indexer
from corral.server.app import create_app
from corral.server.config import ServerConfig
from rag_stubs import StubEmbedder


def test_query_route(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Zebras run fast.\n\nFish swim.\n")
    emb = StubEmbedder()
    with Collection.open_or_create("t", emb.name, emb.dimensions, home=tmp_path) as col:
        Indexer(col, emb).add([tmp_path / "a.txt"])
    client = TestClient(create_app(ServerConfig(store_home=tmp_path)))
    r = client.post(
        "/retrieval/query", json={"collection": "t", "query": "zebras", "mode": "keyword"}
    )
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert res[0]["text"].startswith("Zebras run fast.") and res[0]["start_line"] == 1
    r = client.post(
        "/retrieval/query", json={"collection": "nope", "query": "x", "mode": "keyword"}
    )
    assert r.status_code in (400, 404)
    r = client.post("/retrieval/query", json={"collection": "t", "query": " ", "mode": "keyword"})
    assert r.status_code == 400
