"""Constrained decoding: specs and their errors, the bitmask, and generation on a tiny
random model (random weights still give valid output: the grammar decides what is allowed)."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch

import corral
from corral.engine.generate import FinishReason
from corral.engine.sampling import SamplingParams
from corral.engine.scheduler import Request, Scheduler
from corral.grammar import GrammarError, GrammarSpec, make_constraint, to_llguidance
from corral.grammar.mask import apply_bitmask
from corral.grammar.schema import close_objects
from tiny_gguf import write_tiny

SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "n": {"type": "integer", "minimum": 1, "maximum": 9},
        "ok": {"type": "boolean"},
    },
    "required": ["color", "n", "ok"],
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> corral.Model:
    return corral.load(write_tiny(tmp_path_factory.mktemp("g") / "tiny.gguf", context=256))


def test_apply_bitmask_matches_bits() -> None:
    rng = np.random.default_rng(0)
    v = 1000
    words = rng.integers(-(2**31), 2**31 - 1, (v + 31) // 32, dtype=np.int64).astype(np.int32)
    logits = torch.randn(v)
    out = apply_bitmask(logits, torch.from_numpy(words))
    allowed = np.unpackbits(words.view(np.uint8), bitorder="little")[:v].astype(bool)
    assert torch.equal(out[torch.from_numpy(allowed)], logits[torch.from_numpy(allowed)])
    assert torch.isneginf(out[torch.from_numpy(~allowed)]).all()


def test_apply_bitmask_pads_wider_logits() -> None:
    out = apply_bitmask(torch.zeros(40), torch.tensor([-1], dtype=torch.int32))
    assert torch.isfinite(out[:32]).all() and torch.isneginf(out[32:]).all()


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "Invalid type"),
        ({"type": "integer", "minimum": 5, "maximum": 2}, "minimum"),
        ({"properties": {"a": {"$ref": "#/nowhere"}}}, "nowhere"),
        ({"type": "string", "pattern": "[a-"}, "regex"),
    ],
)
def test_invalid_schema_names_the_problem(schema: dict, words: str) -> None:
    with pytest.raises(GrammarError, match="invalid JSON schema") as e:
        to_llguidance(GrammarSpec.json_schema(schema))
    assert words in str(e.value) and not e.value.unsupported


def test_schema_the_engine_cannot_compile_says_so() -> None:
    with pytest.raises(GrammarError, match="cannot compile") as e:
        to_llguidance(GrammarSpec.json_schema({"not": {"type": "string"}}))
    assert e.value.unsupported


@pytest.mark.parametrize("text", ["not json", "[1, 2]", "3"])
def test_schema_must_be_an_object(text: str) -> None:
    with pytest.raises(GrammarError):
        GrammarSpec.json_schema(text)


@pytest.mark.parametrize(
    ("grammar", "words"),
    [('root ::= "a" | b', "'b' not found"), ("root ::= [a-z", "Unexpected end"), ("", "empty")],
)
def test_bad_gbnf(grammar: str, words: str) -> None:
    with pytest.raises(GrammarError, match=words):
        to_llguidance(GrammarSpec.gbnf(grammar))


def test_close_objects_only_adds_what_is_missing() -> None:
    schema = {
        "type": "object",
        "properties": {"properties": {"type": "object", "properties": {"x": {}}}},
        "allOf": [{"properties": {"a": {}}}],
        "anyOf": [{"properties": {"b": {}}, "additionalProperties": True}],
    }
    out = close_objects(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["properties"]["additionalProperties"] is False
    assert "additionalProperties" not in out["allOf"][0]  # parts of allOf stay open
    assert out["anyOf"][0]["additionalProperties"] is True
    assert "additionalProperties" not in schema  # the input is left alone


def test_json_schema_output_validates(model: corral.Model) -> None:
    ids = model.tokenize("hello")
    for seed in range(4):
        c = make_constraint(model.tokenizer, GrammarSpec.json_schema(SCHEMA))
        params = SamplingParams(temperature=1.0, seed=seed)
        r = model.generate_with(ids, 60, params, constraint=c)
        assert r.finish_reason is FinishReason.STOP, r.text
        jsonschema.validate(json.loads(r.text), SCHEMA)


def test_gbnf_and_regex(model: corral.Model) -> None:
    ids = model.tokenize("hello")
    c = make_constraint(model.tokenizer, GrammarSpec.gbnf('root ::= ("yes" | "no") "!"'))
    r = model.generate_with(ids, 10, SamplingParams(temperature=0), constraint=c)
    assert r.text in ("yes!", "no!") and r.finish_reason is FinishReason.STOP
    c = make_constraint(model.tokenizer, GrammarSpec.regex(r"[0-9]{3}-[a-c]{2}"))
    r = model.generate_with(ids, 20, SamplingParams(temperature=1.0, seed=1), constraint=c)
    assert len(r.text) == 6 and r.text[3] == "-"


def test_cut_by_max_tokens_reports_length(model: corral.Model) -> None:
    c = make_constraint(model.tokenizer, GrammarSpec.json_schema(SCHEMA))
    r = model.generate_with(model.tokenize("hi"), 3, SamplingParams(temperature=0), constraint=c)
    assert r.finish_reason is FinishReason.LENGTH
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)


def test_each_request_its_own_matcher_in_a_batch(model: corral.Model) -> None:
    s = Scheduler(model, slots=3)
    try:
        ids = model.tokenize("hello")
        free = s.submit(Request(ids, 8, SamplingParams(temperature=0), ignore_eos=True))
        handles = [
            s.submit(
                Request(
                    ids,
                    60,
                    SamplingParams(temperature=1.0, seed=i),
                    constraint=make_constraint(model.tokenizer, GrammarSpec.json_schema(SCHEMA)),
                )  # fmt: skip
            )
            for i in range(2)
        ]
        for h in handles:
            text = "".join(e.text for e in h)
            jsonschema.validate(json.loads(text), SCHEMA)
        assert len([e for e in free if e.token_id is not None]) == 8
    finally:
        s.close()
