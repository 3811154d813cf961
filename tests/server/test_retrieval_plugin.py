"""The ChatGPT retrieval plugin's API (/upsert, /upsert-file, /query, /delete) over a
collection, with a stub embedder standing in for the model: shapes, filters, replacement,
deletion, bearer token, `corral serve --bearer-token`, and bad input."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from corral.errors import ModelNotFoundError
from corral.rag.db import Collection
from corral.rag.indexer import Indexer
from corral.server import ServerConfig, create_app
from corral.server.embedders import EmbedderPool, Held
from rag_stubs import StubEmbedder

DOCS = [
    {"id": "zeb", "text": "Zebras run fast across the plains.",
     "metadata": {"source": "email", "source_id": "m1", "author": "ann",
                  "created_at": "2024-03-01T10:00:00Z", "url": "https://x.test/z"}},
    {"id": "fish", "text": "Fish swim in the cold river.",
     "metadata": {"source": "chat", "author": "bob", "created_at": "2024-06-01"}},
    {"id": "bird", "text": "Birds fly south in winter.\n\nZebras do not fly."},
]  # fmt: skip
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> StubEmbedder:
    """The server's embedder pool hands out one stub embedder (no model is loaded)."""
    emb = StubEmbedder()

    async def get(self: EmbedderPool, name: str | None) -> Held:
        if name not in (None, "stub"):
            raise ModelNotFoundError(f"model '{name}' not found")
        return Held(emb, 0.0)  # type: ignore[arg-type]

    monkeypatch.setattr(EmbedderPool, "get", get)
    return emb


@pytest.fixture
def make_client(tmp_path: Path, stub: StubEmbedder) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**kw: Any) -> TestClient:
        config = ServerConfig(store_home=tmp_path / "home", **kw)
        client = TestClient(create_app(config), raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    c = make_client()
    r = c.post("/upsert", json={"documents": DOCS})
    assert r.status_code == 200, r.text
    assert r.json() == {"ids": ["zeb", "fish", "bird"]}
    return c


def query(client: TestClient, q: str, **kw: Any) -> list[dict[str, Any]]:
    r = client.post("/query", json={"queries": [{"query": q, **kw}]})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["results"]


def doc_ids(results: list[dict[str, Any]]) -> list[str]:
    return [c["metadata"]["document_id"] for c in results]


def error(r: Any) -> str:
    """The one-line error message of a failed response."""
    msg = r.json()["error"]["message"]
    assert "\n" not in msg
    return msg


# -- upsert and query ------------------------------------------------------------------------


def test_query_answers_in_the_plugins_shape(client: TestClient) -> None:
    r = client.post("/query", json={"queries": [{"query": "zebras run", "top_k": 2},
                                                {"query": "river fish"}]})  # fmt: skip
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["query"] == "zebras run" and len(first["results"]) == 2
    top = first["results"][0]
    assert top["id"] == "zeb_0" and top["text"] == DOCS[0]["text"]
    assert top["embedding"] is None and top["score"] > 0
    assert {k: top["metadata"][k] for k in DOCS[0]["metadata"]} == DOCS[0]["metadata"]
    assert top["metadata"]["document_id"] == "zeb"
    assert second["results"][0]["metadata"]["document_id"] == "fish"
    assert len(second["results"]) == 3  # top_k defaults to 3, as the plugin's does


def test_chunk_ids_count_within_a_document(make_client: Callable[..., TestClient]) -> None:
    c = make_client()
    long = "\n\n".join(f"Paragraph {i} " + "word " * 30 for i in range(3))  # > 40 "tokens"
    assert c.post("/upsert", json={"documents": [{"id": "long", "text": long}]}).status_code == 200
    ids = {x["id"] for x in query(c, "paragraph word", top_k=10)}
    assert ids == {"long_0", "long_1", "long_2"}


def test_documents_without_ids_get_new_ones(make_client: Callable[..., TestClient]) -> None:
    c = make_client()
    r = c.post("/upsert", json={"documents": [{"text": "One."}, {"text": "Two."}]})
    ids = r.json()["ids"]
    assert len(set(ids)) == 2 and all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids)
    assert doc_ids(query(c, "two"))[0] == ids[1]


def test_upsert_replaces_a_document_and_a_resend_does_no_work(
    client: TestClient, stub: StubEmbedder
) -> None:
    new = {"id": "zeb", "text": "Zebras sleep standing up.", "metadata": {"author": "cy"}}
    assert client.post("/upsert", json={"documents": [new]}).status_code == 200
    hits = [c for c in query(client, "zebras", top_k=5, mode="keyword") if c["id"] == "zeb_0"]
    assert hits[0]["text"] == new["text"] and hits[0]["metadata"]["author"] == "cy"
    assert hits[0]["metadata"]["source"] is None  # the old metadata went with the old text
    assert "plains" not in str(query(client, "plains", top_k=5))
    calls = stub.calls
    assert client.post("/upsert", json={"documents": [new]}).status_code == 200
    assert stub.calls == calls  # same text and metadata: nothing embedded


def test_indexed_files_read_back_as_file_documents(
    tmp_path: Path, make_client: Callable[..., TestClient], stub: StubEmbedder
) -> None:
    note = tmp_path / "note.md"
    note.write_text("# Cheetahs\n\nCheetahs are the fastest runners.\n")
    with Collection.open_or_create("default", "stub", 32, home=tmp_path / "home") as col:
        Indexer(col, stub).add([note])
    c = make_client()
    c.post("/upsert", json={"documents": DOCS})
    top = query(c, "cheetahs fastest")[0]
    meta = top["metadata"]
    assert meta["document_id"] == str(note.resolve()) and meta["source"] == "file"
    assert meta["url"] == note.resolve().as_uri() and meta["created_at"].startswith("20")
    assert top["id"] == f"{note.resolve()}_0"
    assert doc_ids(query(c, "cheetahs", filter={"source": "file"})) == [str(note.resolve())]
    assert str(note.resolve()) not in doc_ids(query(c, "cheetahs", filter={"source": "email"}))


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"source": "email"}, ["zeb"]),
        ({"source": "chat"}, ["fish"]),
        ({"author": "bob"}, ["fish"]),
        ({"source_id": "m1"}, ["zeb"]),
        ({"document_id": "bird"}, ["bird"]),
        ({"start_date": "2024-04-01"}, ["fish"]),
        ({"end_date": "2024-04-01T00:00:00+00:00"}, ["zeb"]),
        ({"start_date": "2024-01-01", "end_date": "2024-12-31", "author": "ann"}, ["zeb"]),
        ({"start_date": "1717200000"}, ["fish"]),  # unix seconds: 2024-06-01 00:00 UTC
        ({"author": "nobody"}, []),
    ],
)
def test_query_filters(client: TestClient, flt: dict[str, str], expected: list[str]) -> None:
    assert sorted(doc_ids(query(client, "zebras fish birds", top_k=10, filter=flt))) == expected


def test_collection_parameter(make_client: Callable[..., TestClient]) -> None:
    c = make_client(retrieval_collection="plugin")
    assert c.post("/upsert", json={"documents": DOCS[:1]}).status_code == 200
    assert c.post("/upsert?collection=other", json={"documents": DOCS[1:2]}).status_code == 200
    assert doc_ids(query(c, "zebras fish")) == ["zeb"]
    r = c.post("/query?collection=other", json={"queries": [{"query": "zebras fish"}]})
    assert doc_ids(r.json()["results"][0]["results"]) == ["fish"]


# -- upsert-file -----------------------------------------------------------------------------


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF whose page says `text` (Helvetica, no compression)."""
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        "",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    stream = f"BT /F1 12 Tf 72 712 Td ({text}) Tj ET".encode()
    out = io.BytesIO(b"%PDF-1.4\n")
    out.seek(0, io.SEEK_END)
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(out.tell())
        if obj:
            out.write(f"{i} 0 obj\n{obj}\nendobj\n".encode())
        else:
            head = f"{i} 0 obj\n<< /Length {len(stream)} >>\nstream\n".encode()
            out.write(head + stream + b"\nendstream\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    out.write(b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets))
    trailer = f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    out.write(trailer.encode())
    return out.getvalue()


def test_upsert_file_markdown_with_metadata(make_client: Callable[..., TestClient]) -> None:
    c = make_client()
    md = b"# Lions\n\nLions hunt at night.\n\n# Owls\n\nOwls hoot.\n"
    r = c.post(
        "/upsert-file",
        files={"file": ("animals.md", md, "text/markdown")},
        data={"metadata": '{"author": "dee", "created_at": "2023-05-05"}', "id": "animals"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"ids": ["animals"]}
    top = query(c, "lions hunt")[0]
    assert top["text"] == "Lions hunt at night." and top["metadata"]["author"] == "dee"
    assert top["metadata"]["source"] == "file"  # a file upload's default source
    assert doc_ids(query(c, "owls", filter={"author": "dee", "end_date": "2023-06-01"}))


def test_upsert_file_pdf_and_generated_id(make_client: Callable[..., TestClient]) -> None:
    c = make_client()
    r = c.post("/upsert-file", files={"file": ("z.pdf", tiny_pdf("Zebras graze at dawn."))})
    assert r.status_code == 200, r.text
    (doc_id,) = r.json()["ids"]
    top = query(c, "zebras graze")[0]
    assert top["metadata"]["document_id"] == doc_id and "Zebras graze at dawn." in top["text"]


def test_upsert_file_bad_input(make_client: Callable[..., TestClient]) -> None:
    c = make_client()
    r = c.post("/upsert-file", files={"file": ("b.txt", b"\x00\x01\x02binary")})
    assert r.status_code == 400 and "binary" in error(r)
    r = c.post("/upsert-file", files={"file": ("b.pdf", b"%PDF-1.4 not really")})
    assert r.status_code == 400 and "b.pdf" in error(r)
    r = c.post("/upsert-file", files={"file": ("a.txt", b"ok text")}, data={"metadata": "{"})
    assert r.status_code == 400 and "metadata" in error(r)
    r = c.post("/upsert-file", files={"file": ("a.txt", b"ok")}, data={"metadata": '{"source": 5}'})
    assert r.status_code == 400 and "metadata.source" in error(r)
    r = c.post("/upsert-file", files={"file": ("e.txt", b"  \n\n ")})
    assert r.status_code == 400 and "no text" in error(r)
    r = c.post("/upsert-file", data={"metadata": "{}"})  # no file at all
    assert r.status_code == 400 and "file" in error(r)
    assert not (Path(c.app.state.corral.config.store_home) / "rag").exists()  # nothing made


# -- delete ----------------------------------------------------------------------------------


def test_delete_by_ids_filter_and_all(client: TestClient) -> None:
    r = client.post("/delete", json={"ids": ["zeb", "unknown"]})
    assert r.status_code == 200 and r.json() == {"success": True}
    assert sorted(doc_ids(query(client, "zebras fish birds", top_k=10))) == ["bird", "fish"]
    r = client.request("DELETE", "/delete", json={"filter": {"source": "chat"}})  # upstream verb
    assert r.status_code == 200
    assert doc_ids(query(client, "zebras fish birds", top_k=10)) == ["bird"]
    assert client.post("/delete", json={"delete_all": True}).status_code == 200
    assert query(client, "zebras fish birds", top_k=10) == []


def test_delete_needs_something_to_delete(client: TestClient) -> None:
    for body in ({}, {"ids": []}, {"filter": {}}, {"delete_all": False}):
        r = client.post("/delete", json=body)
        assert r.status_code == 400 and "one of ids, filter or delete_all" in error(r)
    r = client.post("/delete", json={"filter": {"sauce": "email"}})  # misspelt: no wide delete
    assert r.status_code == 400 and "sauce" in error(r)
    assert len(query(client, "zebras fish birds", top_k=10)) == 3


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/upsert", {"documents": [{"id": "x"}]}, "documents.0.text"),
        ("/upsert", {"docs": []}, "documents"),
        ("/upsert", {"documents": [{"text": "  "}]}, "document 0 has no text"),
        ("/upsert", {"documents": [{"text": "a", "metadata": {"source": "fax"}}]}, "source"),
        ("/upsert", {"documents": [{"text": "a", "metadata": {"created_at": "soon"}}]},
         "created_at"),
        ("/query", {"queries": []}, "queries"),
        ("/query", {"queries": [{"query": ""}]}, "query 0 is empty"),
        ("/query", {"queries": [{"query": "x", "top_k": 0}]}, "top_k"),
        ("/query", {"queries": [{"query": "x", "filter": {"start_date": "May"}}]}, "bad date"),
        ("/query", {"queries": [{"query": "x", "filter": {"colour": "red"}}]}, "colour"),
        ("/query", {"queries": [{"query": "x", "mode": "fuzzy"}]}, "mode"),
        ("/query", {"query": "x"}, "queries"),
    ],
)  # fmt: skip
def test_bad_bodies_are_400_with_one_line(
    client: TestClient, path: str, body: dict[str, Any], needle: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert needle in error(r)


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/query", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    error(r)


def test_unknown_collection_is_404(make_client: Callable[..., TestClient]) -> None:
    c = make_client()
    r = c.post("/query", json={"queries": [{"query": "x"}]})
    assert r.status_code == 404 and "no collection 'default'" in error(r)
    r = c.post("/delete?collection=nope", json={"delete_all": True})
    assert r.status_code == 404 and "nope" in error(r)
    r = c.post("/upsert?collection=bad/name", json={"documents": [{"text": "a"}]})
    assert r.status_code == 400 and "bad collection name" in error(r)


# -- bearer token ----------------------------------------------------------------------------


def test_bearer_token_guards_the_plugin_routes(make_client: Callable[..., TestClient]) -> None:
    c = make_client(bearer_token=TOKEN)
    body = {"documents": DOCS}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = c.post("/upsert", json=body, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in error(r)
    # the token is checked before the body: a malformed one still gets 401, not 400
    assert c.post("/query", json={"bad": 1}).status_code == 401
    assert c.post("/delete", json={"delete_all": True}).status_code == 401
    assert c.post("/upsert-file", files={"file": ("a.txt", b"hi")}).status_code == 401
    assert c.post("/upsert", json=body, headers=AUTH).status_code == 200
    r = c.post("/query", json={"queries": [{"query": "zebras"}]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["results"][0]["results"]
    assert c.get("/health").status_code == 200  # other routes keep their own rules


def test_bearer_token_and_api_key_each_guard_their_routes(
    make_client: Callable[..., TestClient],
) -> None:
    c = make_client(bearer_token=TOKEN, api_key="k")
    assert c.post("/upsert", json={"documents": DOCS}, headers=AUTH).status_code == 200
    key = {"Authorization": "Bearer k"}
    assert c.post("/upsert", json={"documents": DOCS}, headers=key).status_code == 401
    assert c.get("/v1/models", headers=AUTH).status_code == 401
    assert c.get("/v1/models", headers=key).status_code == 200


def test_api_key_alone_guards_the_plugin_routes(make_client: Callable[..., TestClient]) -> None:
    c = make_client(api_key="k")
    assert c.post("/upsert", json={"documents": DOCS}).status_code == 401
    headers = {"Authorization": "Bearer k"}
    assert c.post("/upsert", json={"documents": DOCS}, headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--bearer-token", "flag"], "env", "flag"),
        ([], "env", "env"),
        ([], None, None),
    ],
)
def test_serve_takes_the_token_from_flag_or_env(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str | None, expected: str | None
) -> None:
    import uvicorn

    from corral.cli.main import main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app))
    if env is None:
        monkeypatch.delenv("CORRAL_BEARER_TOKEN", raising=False)
    else:
        monkeypatch.setenv("CORRAL_BEARER_TOKEN", env)
    assert main(["serve", "--retrieval-collection", "notes", *argv]) == 0
    config = seen["app"].state.corral.config
    assert config.bearer_token == expected and config.retrieval_collection == "notes"
