"""llama.cpp extras: /health, /tokenize, /detokenize, /apply-template, /metrics."""

from __future__ import annotations

from starlette.testclient import TestClient


def test_health_loads_nothing(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/api/ps").json()["models"] == []


def test_tokenize_roundtrip_and_pieces(client: TestClient) -> None:
    ids = client.post("/tokenize", json={"model": "tiny", "content": "hello world"}).json()[
        "tokens"
    ]
    assert ids and all(isinstance(i, int) for i in ids)
    text = client.post("/detokenize", json={"model": "tiny", "tokens": ids}).json()["content"]
    assert text == "hello world"
    pieces = client.post(
        "/tokenize", json={"model": "tiny", "content": "hello é", "with_pieces": True}
    ).json()["tokens"]
    assert pieces[0] == {"id": ids[0], "piece": "hello"}
    # "é" is two byte tokens: each piece is half a character, given as bytes
    assert [p["piece"] for p in pieces[-2:]] == [[0xC3], [0xA9]]
    special = client.post("/tokenize", json={"model": "tiny", "content": "<|im_end|>"}).json()
    assert special["tokens"] == [2]


def test_model_may_be_left_out_when_one_is_loaded(client: TestClient) -> None:
    r = client.post("/tokenize", json={"content": "x"})
    assert r.status_code == 400 and "'model' is required" in r.json()["error"]["message"]
    client.post("/api/generate", json={"model": "tiny"})
    assert client.post("/tokenize", json={"content": "x"}).status_code == 200


def test_apply_template(client: TestClient) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    prompt = client.post("/apply-template", json={"model": "tiny", "messages": msgs}).json()
    assert prompt == {"prompt": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"}


def test_metrics_count_requests_tokens_and_ttft(client: TestClient) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    client.post("/v1/chat/completions", json=body)
    client.post("/v1/chat/completions", json=body)  # the same prompt again: from the cache
    client.post("/v1/chat/completions", json={"model": "nope", "messages": body["messages"]})
    text = client.get("/metrics").text
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert samples['corral_requests_total{route="/v1/chat/completions",status="200"}'] == "2"
    assert samples['corral_requests_total{route="/v1/chat/completions",status="404"}'] == "1"
    assert int(samples["corral_prompt_tokens_total"]) > 0
    assert int(samples["corral_prompt_tokens_cached_total"]) > 0
    assert 0 < int(samples["corral_generated_tokens_total"]) <= 6
    assert samples["corral_time_to_first_token_seconds_count"] == "2"
    assert samples["corral_queue_depth"] == "0" and samples["corral_models_loaded"] == "1"
    assert "# TYPE corral_time_to_first_token_seconds histogram" in text
