"""llama.cpp's POST /completion on the tiny random model: whatever its weights say, a
`grammar` or `json_schema` decides what can come out, so the output is checked exactly;
bad grammars and schemas are 400s naming the field."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from starlette.testclient import TestClient

SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green"]},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["color", "n"],
}
GBNF = 'root ::= "yes" | "no" | "n=" [0-9] [0-9]?'


def _complete(client: TestClient, **body: object) -> dict:
    r = client.post("/completion", json={"model": "tiny", "prompt": "Answer:", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_plain_completion_shape(client: TestClient) -> None:
    out = _complete(client, n_predict=5, temperature=0)
    assert out["stop"] is True and out["model"].startswith("tiny") and out["stop_type"] == "limit"
    assert out["tokens_predicted"] == 5 and out["tokens_evaluated"] > 0
    again = _complete(client, n_predict=5, temperature=0)  # greedy: the same text
    assert again["content"] == out["content"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_json_schema_constrains_output(client: TestClient, seed: int) -> None:
    out = _complete(client, json_schema=SCHEMA, n_predict=60, seed=seed, temperature=1.0)
    jsonschema.validate(json.loads(out["content"]), SCHEMA)
    assert out["stop_type"] == "eos"  # ended by the grammar, not by n_predict


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gbnf_grammar_constrains_output(client: TestClient, seed: int) -> None:
    out = _complete(client, grammar=GBNF, n_predict=10, seed=seed, temperature=1.0)
    assert re.fullmatch(r"yes|no|n=[0-9][0-9]?", out["content"]), out["content"]


def test_token_id_prompt_and_stream_with_schema(client: TestClient) -> None:
    ids = client.post("/tokenize", json={"model": "tiny", "content": "Answer:"}).json()["tokens"]
    body = {"model": "tiny", "prompt": ids, "json_schema": SCHEMA, "n_predict": 60,
            "seed": 5, "temperature": 1.0, "stream": True}  # fmt: skip
    with client.stream("POST", "/completion", json=body) as r:
        assert r.status_code == 200
        events = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: ")]
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    text = "".join(e["content"] for e in events)
    jsonschema.validate(json.loads(text), SCHEMA)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"grammar": "root ::= ("}, "grammar"),
        ({"json_schema": {"type": "nonsense"}}, "json_schema"),
        ({"grammar": GBNF, "json_schema": SCHEMA}, None),  # one constraint at a time
    ],
)
def test_bad_constraints_are_400s(client: TestClient, body: dict, param: str | None) -> None:
    r = client.post("/completion", json={"model": "tiny", "prompt": "x", **body})
    assert r.status_code == 400, r.text
    if param:
        assert r.json()["error"]["param"] == param
