"""Bad input never makes a 500 or kills the server: each gets a 4xx in its family's shape."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from corral.server import ServerConfig, create_app

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
OLLAMA_CHAT = {**CHAT, "stream": False, "options": {"num_predict": 2}}


def openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def ollama_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return body["error"]


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"model": 5}'],
)
def test_malformed_bodies(client: TestClient, content: bytes) -> None:
    openai_error(client.post("/v1/chat/completions", content=content), 400)
    openai_error(client.post("/v1/completions", content=content), 400)
    ollama_error(client.post("/api/chat", content=content), 400)
    ollama_error(client.post("/api/generate", content=content), 400)


def test_wrong_types_name_the_field(client: TestClient) -> None:
    err = openai_error(
        client.post("/v1/chat/completions", json={**CHAT, "max_tokens": "many"}), 400
    )
    assert err["param"] == "max_tokens" and "max_tokens" in err["message"]
    err = openai_error(client.post("/v1/chat/completions", json={**CHAT, "temperature": 9}), 400)
    assert "temperature" in err["message"]
    err = openai_error(
        client.post("/v1/chat/completions", json={"messages": CHAT["messages"]}), 400
    )
    assert "model" in err["message"]
    msg = ollama_error(client.post("/api/generate", json={"model": "tiny", "raw": "maybe"}), 400)
    assert "raw" in msg
    msg = ollama_error(client.post("/api/chat", json={"messages": []}), 400)
    assert "model" in msg
    bad_role = {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}
    ollama_error(client.post("/api/chat", json=bad_role), 400)


def test_form_encoded_json_is_accepted_as_curl_sends_it(client: TestClient) -> None:
    r = client.post(
        "/api/generate",
        content=b'{"model": "tiny", "prompt": "x", "stream": false, "options": {"num_predict": 1}}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text


def test_unknown_model_is_404(client: TestClient) -> None:
    err = openai_error(client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}), 404)
    assert err["code"] == "model_not_found"
    openai_error(client.get("/v1/models/nope"), 404)
    assert "not found" in ollama_error(
        client.post("/api/chat", json={**OLLAMA_CHAT, "model": "nope"}), 404
    )
    ollama_error(client.post("/api/show", json={"model": "nope"}), 404)
    ollama_error(client.post("/api/generate", json={"model": "nope"}), 404)
    # a file path is not a model name over the API: no opening files on the server's disk
    ollama_error(client.post("/api/generate", json={"model": "/etc/passwd", "prompt": "x"}), 404)


def test_prompt_over_the_context_is_400(client: TestClient) -> None:
    long = "hi " * 600  # > 512 tokens
    body = {**CHAT, "messages": [{"role": "user", "content": long}]}
    err = openai_error(client.post("/v1/chat/completions", json=body), 400)
    assert err["code"] == "context_length_exceeded"
    openai_error(client.post("/v1/completions", json={"model": "tiny", "prompt": long}), 400)
    body = {"model": "tiny", "prompt": long, "stream": True}
    assert "context" in ollama_error(client.post("/api/generate", json=body), 400)
    # and the server still answers
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_bad_token_ids(client: TestClient) -> None:
    openai_error(client.post("/v1/completions", json={"model": "tiny", "prompt": [1, 99999]}), 400)
    body = {"model": "tiny", "prompt": "x", "context": [-1]}
    ollama_error(client.post("/api/generate", json=body), 400)
    openai_error(client.post("/detokenize", json={"model": "tiny", "tokens": [10**9]}), 400)


def test_unknown_route_and_method(client: TestClient) -> None:
    openai_error(client.get("/v1/nothing"), 404)
    ollama_error(client.get("/api/nothing"), 404)
    ollama_error(client.get("/api/chat"), 405)


def test_body_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=2048)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    openai_error(client.post("/v1/chat/completions", json=big), 413)
    ollama_error(client.post("/api/chat", json=big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "tiny", "prompt": "'
        yield b"x" * 4096
        yield b'"}'

    ollama_error(client.post("/api/generate", content=chunks()), 413)
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_api_key(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_key="sekrit")
    assert client.get("/health").status_code == 200
    err = openai_error(client.get("/v1/models"), 401)
    assert err["code"] == "invalid_api_key"
    openai_error(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    ollama_error(client.get("/api/tags"), 401)
    openai_error(client.get("/metrics"), 401)
    ok = {"Authorization": "Bearer sekrit"}
    assert client.get("/v1/models", headers=ok).status_code == 200
    assert client.get("/api/tags", headers=ok).status_code == 200


async def until(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.01)):
        if cond():
            return True
        await asyncio.sleep(0.01)
    return False


def test_full_queue_is_503_with_retry_after(home: object) -> None:
    """With max_queue 1 and slots 1: one request runs, one waits, the third is refused."""
    app = create_app(ServerConfig(store_home=home, max_queue=1, slots=1))  # type: ignore[arg-type]
    gate = threading.Event()

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as c:
            await c.post("/api/generate", json={"model": "tiny"})  # load it
            entry = app.state.corral.manager.loaded()[0]
            net = entry.model.net
            real = net.forward

            def slow(*a, **k):  # type: ignore[no-untyped-def]
                gate.wait(10)
                return real(*a, **k)

            net.forward = slow
            try:
                body = {**CHAT, "max_tokens": 1}
                first = asyncio.create_task(c.post("/v1/chat/completions", json=body))
                # one at a time: a request counts as queued until the worker takes it
                assert await until(lambda: entry.scheduler.active == 1)
                second = asyncio.create_task(c.post("/v1/chat/completions", json=body))
                assert await until(lambda: entry.scheduler.queue_depth == 1)
                r = await c.post("/v1/chat/completions", json=body)
                err = openai_error(r, 503)
                assert r.headers["retry-after"] == "1" and "busy" in err["message"]
                r = await c.post("/api/chat", json=OLLAMA_CHAT)
                assert "busy" in ollama_error(r, 503)
                gate.set()
                assert (await first).status_code == 200 and (await second).status_code == 200
            finally:
                gate.set()
                net.forward = real
            await app.state.corral.manager.close()

    asyncio.run(scenario())
