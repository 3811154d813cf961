"""OpenAI routes against a tiny model: response shapes, streaming, options, refusals."""

from __future__ import annotations

import json

from starlette.testclient import TestClient

CHAT = "/v1/chat/completions"


def chat_body(**kw: object) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], **kw}


def sse_events(text: str) -> list[object]:
    """The data of each server-sent event ("[DONE]" kept as a string)."""
    out: list[object] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models_lists_the_store(client: TestClient) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    ids = {m["id"] for m in r.json()["data"]}
    assert ids == {"tiny:latest", "other:latest"}
    assert client.get("/v1/models/tiny").json()["id"] == "tiny:latest"


def test_chat_completion_shape_and_usage(client: TestClient) -> None:
    r = client.post(CHAT, json=chat_body(max_tokens=5, temperature=0))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny:latest"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    use = body["usage"]
    assert use["prompt_tokens"] > 0 and 0 < use["completion_tokens"] <= 5
    assert use["total_tokens"] == use["prompt_tokens"] + use["completion_tokens"]


def test_seed_repeats_and_max_completion_tokens(client: TestClient) -> None:
    body = chat_body(max_completion_tokens=6, temperature=1.0, seed=7)
    a = client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    b = client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    assert a == b
    r = client.post(CHAT, json=chat_body(max_tokens=0))
    assert r.json()["choices"][0]["finish_reason"] == "length"
    assert r.json()["usage"]["completion_tokens"] == 0


def test_n_choices_and_logprobs(client: TestClient) -> None:
    body = chat_body(max_tokens=4, n=3, seed=1, logprobs=True, top_logprobs=2)
    body = client.post(CHAT, json=body).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    for c in body["choices"]:
        entries = c["logprobs"]["content"]
        assert all(e["logprob"] <= 0 and isinstance(e["bytes"], list) for e in entries)
        for e in entries:
            alts = e["top_logprobs"]  # the two likeliest tokens, best first
            assert len(alts) == 2 and 0 >= alts[0]["logprob"] >= alts[1]["logprob"]
    assert body["usage"]["completion_tokens"] == sum(
        len(c["logprobs"]["content"]) for c in body["choices"]
    )


def test_chat_stream_wire_format(client: TestClient) -> None:
    body = chat_body(max_tokens=6, stream=True, stream_options={"include_usage": True})
    with client.stream("POST", CHAT, json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)  # type: ignore[index]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"  # type: ignore[index]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]  # type: ignore[index]
    assert len(finals) == 1
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0  # type: ignore[index]
    assert all(c["usage"] is None for c in chunks[:-1])  # type: ignore[index]


def test_stream_without_usage_has_no_usage_field(client: TestClient) -> None:
    with client.stream("POST", CHAT, json=chat_body(max_tokens=3, stream=True)) as r:
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    assert all("usage" not in c for c in events[:-1])  # type: ignore[operator]


def test_completions_echo_logprobs_and_prompts(client: TestClient) -> None:
    r = client.post(
        "/v1/completions",
        json={"model": "tiny", "prompt": ["hello", "world"], "max_tokens": 3, "echo": True,
              "logprobs": 1, "n": 2, "seed": 3},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    texts = [c["text"] for c in body["choices"]]
    assert len(texts) == 4 and texts[0].startswith("hello") and texts[2].startswith("world")
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"])
    assert lp["text_offset"][:1] == [5] or lp["tokens"] == []


def test_completions_token_prompt_and_stream(client: TestClient) -> None:
    body = {"model": "tiny", "prompt": [100, 101, 102], "max_tokens": 4, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")  # type: ignore[index]


def test_suffix_needs_fim_tokens(client: TestClient) -> None:
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "a", "suffix": "b"})
    assert r.status_code == 400
    assert "fill-in-the-middle" in r.json()["error"]["message"]


def test_unsupported_features_are_refused(client: TestClient) -> None:
    tools = [{"type": "function", "function": {"name": "f g", "parameters": {}}}]
    cases = [
        (chat_body(tools=tools), "function.name"),
        (chat_body(response_format={"type": "xml"}), "response_format"),
        (chat_body(logit_bias={"5": 1.0}), "logit_bias"),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "x"}}]}]},
            "image_url",
        ),
    ]  # fmt: skip
    for body, needle in cases:
        r = client.post(CHAT, json=body)
        assert r.status_code == 400, body
        assert needle in r.json()["error"]["message"]
    # an empty tools list is no tools (clients send it)
    assert client.post(CHAT, json=chat_body(tools=[], max_tokens=1)).status_code == 200


def test_text_content_parts_and_developer_role(client: TestClient) -> None:
    msgs = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
    ]  # fmt: skip
    r = client.post(CHAT, json={"model": "tiny", "messages": msgs, "max_tokens": 2})
    assert r.status_code == 200, r.text


def test_embeddings_refuse_a_generation_model(client: TestClient) -> None:
    # embeddings themselves are tested in test_embeddings_api.py
    r = client.post("/v1/embeddings", json={"model": "tiny", "input": "x"})
    assert r.status_code == 400 and "not an embedding model" in r.json()["error"]["message"]
