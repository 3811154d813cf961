"""Structured output and tools over HTTP, on the tiny random model: whatever its weights
say, the grammar decides what can come out, so shapes and validity are checked exactly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from starlette.testclient import TestClient

from corral.store import Store
from tiny_gguf import write_tiny

SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green"]},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["color", "n"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "pick",
            "description": "Pick a color",
            "parameters": {
                "type": "object",
                "properties": {"color": {"enum": ["red", "blue"]}, "n": {"type": "integer",
                               "minimum": 1, "maximum": 3}},
                "required": ["color", "n"],
            },
        },
    },
    {"type": "function", "function": {"name": "noop", "parameters": {"type": "object",
     "properties": {}}}},
]  # fmt: skip
USER = [{"role": "user", "content": "hello"}]


@pytest.fixture
def client(home: Path, make_client: Callable[..., TestClient], tmp_path: Path) -> TestClient:
    """The tiny model with room for a tool prompt: its byte-level vocabulary spends a token
    per character, and the generic tool prompt is long."""
    Store(home).add_file(write_tiny(tmp_path / "big.gguf", context=2048), "tiny")
    return make_client()


def _chat(client: TestClient, **body: object) -> dict:
    r = client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": USER, "max_tokens": 80, "seed": 1, **body},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_response_format_json_schema(client: TestClient) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}
    out = _chat(client, response_format=fmt, n=2)
    for choice in out["choices"]:
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)


def test_json_object_and_grammar_fields(client: TestClient) -> None:
    out = _chat(client, response_format={"type": "json_object"}, max_tokens=200)
    if out["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(out["choices"][0]["message"]["content"]), dict)
    out = _chat(client, grammar='root ::= "yes" | "no"')
    assert out["choices"][0]["message"]["content"] in ("yes", "no")
    r = client.post(
        "/v1/completions",
        json={"model": "tiny", "prompt": "x", "max_tokens": 40, "json_schema": SCHEMA},
    )
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), SCHEMA)


@pytest.mark.parametrize(
    ("body", "status", "words", "code"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {
            "type": "strin"}}}}, 400, "Invalid type", "invalid_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {
            "not": {}}}}}, 400, "cannot compile", "unsupported_schema"),
        ({"grammar": "root ::= [a-"}, 400, "invalid GBNF", "invalid_schema"),
        ({"response_format": {"type": "xml"}}, 400, "json_object", None),
        ({"grammar": 'root ::= "a"', "json_schema": {}}, 400, "only one", None),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "nope"}}}}}],
          "tool_choice": "required"}, 400, "Invalid type", "invalid_schema"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "zz"}}},
         400, "not among the tools", None),
        ({"tool_choice": "required"}, 400, "needs 'tools'", None),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_naming_it(
    client: TestClient, body: dict, status: int, words: str, code: str | None
) -> None:
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": USER, **body})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and err["code"] == code


def test_tool_choice_required_gives_valid_calls(client: TestClient) -> None:
    for seed in range(3):
        out = _chat(client, tools=TOOLS, tool_choice="required", seed=seed, max_tokens=120)
        choice = out["choices"][0]
        if choice["finish_reason"] == "length":  # parallel calls ran past max_tokens
            continue
        assert choice["finish_reason"] == "tool_calls"
        for call in choice["message"]["tool_calls"]:
            assert call["type"] == "function" and call["id"]
            args = json.loads(call["function"]["arguments"])
            tool = next(t for t in TOOLS if t["function"]["name"] == call["function"]["name"])
            jsonschema.validate(args, tool["function"]["parameters"])


def test_named_tool_choice_and_length_cut(client: TestClient) -> None:
    named = {"type": "function", "function": {"name": "pick"}}
    out = _chat(client, tools=TOOLS, tool_choice=named, parallel_tool_calls=False)
    calls = out["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["pick"]
    out = _chat(client, tools=TOOLS, tool_choice=named, max_tokens=5)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "length" and "tool_calls" not in choice["message"]


def test_tool_choice_none_and_tool_history(client: TestClient) -> None:
    history = USER + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "abc", "type": "function",
         "function": {"name": "pick", "arguments": '{"color": "red", "n": 1}'}}]},
        {"role": "tool", "tool_call_id": "abc", "content": "picked"},
    ]  # fmt: skip
    r = client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": history, "tools": TOOLS, "tool_choice": "none",
              "max_tokens": 4},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert "tool_calls" not in r.json()["choices"][0]["message"]
    bad = history[:1] + [{**history[1], "tool_calls": [{"function": {"name": "pick",
                          "arguments": "{oops"}}]}]  # fmt: skip
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": bad})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_streamed_tool_call_deltas(client: TestClient) -> None:
    named = {"type": "function", "function": {"name": "pick"}}
    body = {"model": "tiny", "messages": USER, "tools": TOOLS, "tool_choice": named,
            "stream": True, "max_tokens": 80, "seed": 3}  # fmt: skip
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = [x[6:] for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    first = calls[0]
    assert first["id"] and first["type"] == "function" and first["function"]["name"] == "pick"
    assert all("id" not in c for c in calls[1:])
    args = "".join(c["function"]["arguments"] for c in calls if c["index"] == 0)
    jsonschema.validate(json.loads(args), TOOLS[0]["function"]["parameters"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_ollama_format_and_tools(client: TestClient) -> None:
    r = client.post(
        "/api/chat",
        json={"model": "tiny", "messages": USER, "format": SCHEMA, "stream": False,
              "options": {"num_predict": 60, "seed": 1}},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["message"]["content"]), SCHEMA)
    r = client.post(
        "/api/generate",
        json={"model": "tiny", "prompt": "x", "format": "json", "stream": False,
              "options": {"num_predict": 300, "seed": 2}},
    )  # fmt: skip
    assert r.status_code == 200
    r = client.post("/api/chat", json={"model": "tiny", "messages": USER, "format": 3})
    assert r.status_code == 400 and "format" in r.json()["error"]
    r = client.post(
        "/api/chat", json={"model": "tiny", "messages": USER, "format": {"type": "strin"}}
    )
    assert r.status_code == 400 and "Invalid type" in r.json()["error"]


def test_ollama_streamed_tools_are_whole_calls(client: TestClient) -> None:
    # the tiny model's template has no tool support: the generic format, auto choice
    history = USER + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "pick", "arguments": {"color": "red", "n": 2}}}]},
        {"role": "tool", "content": "done", "tool_name": "pick"},
    ]  # fmt: skip
    body = {"model": "tiny", "messages": history, "tools": TOOLS, "stream": True,
            "options": {"num_predict": 8, "seed": 0}}  # fmt: skip
    with client.stream("POST", "/api/chat", json=body) as r:
        assert r.status_code == 200
        objs = [json.loads(x) for x in r.iter_lines() if x]
    assert objs[-1]["done"] is True
    for o in objs:
        for call in o["message"].get("tool_calls", []):
            assert isinstance(call["function"]["arguments"], dict)
