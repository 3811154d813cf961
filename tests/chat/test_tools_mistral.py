"""Mistral's two tool-call formats: v3's `[TOOL_CALLS] [{...}]` array and v11's
`[TOOL_CALLS]name[ARGS]{...}` (Mistral Small 3.1+, Devstral, Magistral), told apart by the
chat template, parsed from hand-written outputs (markers shown as text, or left out as the
control tokens they are), and produced by the grammar on a tiny model whose vocabulary has
the markers as special tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import corral
from corral.chat import template_for
from corral.chat.tools import (
    ToolCallParser,
    ToolChoiceMode,
    ToolFormat,
    ToolPlan,
    detect_format,
    parse_output,
    parse_tool_choice,
    parse_tools,
)
from corral.chat.tools.formats import SPECS
from corral.chat.tools.parse import ArgsDelta, CallEnd, CallStart, ContentDelta
from tiny_gguf import write_tiny
from tool_fixtures import WEATHER

NAMES = frozenset({"get_weather", "add"})
V3_TEMPLATE = "{{ bos_token }}[AVAILABLE_TOOLS] {{ tools|tojson }}[/AVAILABLE_TOOLS][TOOL_CALLS]"
# the call-rendering part of Mistral Small 3.2's template (v11 tokenizer)
V11_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}"
    "{% if tools and loop.last %}[AVAILABLE_TOOLS]{{ tools|tojson }}[/AVAILABLE_TOOLS]{% endif %}"
    "[INST]{{ m.content }}[/INST]{% elif m.role == 'assistant' %}{{ m.content or '' }}"
    "{% for c in m.tool_calls or [] %}[TOOL_CALLS]{{ c.function.name }}[ARGS]"
    "{{ c.function.arguments|tojson }}{% endfor %}</s>{% elif m.role == 'tool' %}"
    "[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]{% endif %}{% endfor %}"
)
V11 = SPECS[ToolFormat.MISTRAL_V11]


def test_template_picks_the_format() -> None:
    assert detect_format(V3_TEMPLATE) is ToolFormat.MISTRAL
    assert detect_format(V11_TEMPLATE) is ToolFormat.MISTRAL_V11


@pytest.mark.parametrize(
    ("text", "calls", "content"),
    [
        (  # markers as text (a server that renders special tokens)
            '[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}[TOOL_CALLS]add[ARGS]{"a": 2, "b": 3}',
            [("get_weather", {"city": "Oslo"}), ("add", {"a": 2, "b": 3})],
            "",
        ),
        (  # markers left out of the text, as control tokens are
            'get_weather{"city": "Oslo"}add{"a": 2}',
            [("get_weather", {"city": "Oslo"}), ("add", {"a": 2})],
            "",
        ),
        (
            'Let me look.[TOOL_CALLS]add[ARGS]{"a": 1, "b": {"c": "}"}}',
            [("add", {"a": 1, "b": {"c": "}"}})],
            "Let me look.",
        ),
        ("address: 5 Main St {apt 2}", [], "address: 5 Main St {apt 2}"),
        ("The weather is fine.", [], "The weather is fine."),
    ],
)
def test_v11_hand_written_outputs(text: str, calls: list[tuple[str, dict]], content: str) -> None:
    out = parse_output(text, V11, NAMES)
    assert [(c.name, c.arguments) for c in out.calls] == calls
    assert out.content == content and not out.broken


def test_v11_call_ids_and_broken_calls() -> None:
    out = parse_output('[TOOL_CALLS]add[CALL_ID]a1B2c3D4e[ARGS]{"a": 1}', V11, NAMES)
    assert [(c.name, c.id) for c in out.calls] == [("add", "a1B2c3D4e")]
    cut = parse_output('[TOOL_CALLS]add[ARGS]{"a": ', V11, NAMES)  # max_tokens inside JSON
    assert cut.calls == [] and cut.broken
    unknown = parse_output('[TOOL_CALLS]nope[ARGS]{"a": 1}', V11, NAMES)
    assert unknown.calls == [] and unknown.broken
    # the older parser does not take the new format for calls, nor the reverse
    assert (
        parse_output('[TOOL_CALLS]add[ARGS]{"a": 1}', SPECS[ToolFormat.MISTRAL], NAMES).calls == []
    )
    assert parse_output('[{"name": "add", "arguments": {"a": 1}}]', V11, NAMES).calls == []


@pytest.mark.parametrize("names", [NAMES, None])
def test_v11_streamed_in_small_pieces(names: frozenset[str] | None) -> None:
    text = 'get_weather{"city": "Paris"}add{"a": 1, "b": 2}'
    p = ToolCallParser(V11, names)
    events = []
    for i in range(0, len(text), 2):
        events += p.push(text[i : i + 2])
    events += p.finish()
    assert not [e for e in events if isinstance(e, ContentDelta)]
    starts = [e for e in events if isinstance(e, CallStart)]
    assert [(s.index, s.name) for s in starts] == [(0, "get_weather"), (1, "add")]
    for s in starts:
        args = "".join(e.text for e in events if isinstance(e, ArgsDelta) and e.index == s.index)
        end = next(e for e in events if isinstance(e, CallEnd) and e.index == s.index)
        assert json.loads(args) == end.call.arguments and end.call.id == s.id


def test_v11_plain_text_streams_at_once_when_names_are_known() -> None:
    p = ToolCallParser(V11, NAMES)
    assert p.push("Sure") == [ContentDelta("Sure")]  # no tool name starts so


ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 99},
                "b": {"type": "integer", "minimum": 0, "maximum": 99},
            },
            "required": ["a", "b"],
        },
    },
}


@pytest.fixture(scope="module")
def v11_model(tmp_path_factory: pytest.TempPathFactory) -> corral.Model:
    path: Path = tmp_path_factory.mktemp("mistral") / "tiny.gguf"
    specials = ["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"]
    return corral.load(
        write_tiny(path, context=1024, chat_template=V11_TEMPLATE, extra_specials=specials)
    )


def _plan(model: corral.Model, choice: object, parallel: bool = True) -> ToolPlan:
    tools = parse_tools([WEATHER, ADD])
    source = template_for(model.info.metadata).source
    return ToolPlan.create(source, tools, parse_tool_choice(choice, tools), parallel)


def test_v11_grammar_takes_the_new_format_only(v11_model: corral.Model) -> None:
    tok = v11_model.tokenizer
    plan = _plan(v11_model, "required")
    assert plan.fmt is ToolFormat.MISTRAL_V11
    trig, marker = tok.vocab.token_to_id["[TOOL_CALLS]"], tok.vocab.token_to_id["[ARGS]"]
    c = plan.constraint(tok)
    inner = c._inner  # NoRepeatedCalls around the grammar (parallel calls)
    inner.accept(trig)
    assert inner.consume_text(b"add")
    inner.accept(marker)
    assert inner.consume_text(b'{"a": 1, "b": 2}') and inner.complete
    # the arguments follow the named tool's own schema, not another tool's
    wrong = plan.constraint(tok)._inner
    wrong.accept(trig)
    assert wrong.consume_text(b"add")
    wrong.accept(marker)
    assert not wrong.consume_text(b'{"city": "Oslo"}')
    # v3's array after the trigger is not this format
    old = plan.constraint(tok)._inner
    old.accept(trig)
    assert not old.consume_text(b'[{"name"')


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v11_required_call_from_a_random_model(v11_model: corral.Model, seed: int) -> None:
    """Random weights, so only the grammar makes this a call: the generated tokens are the
    markers as special tokens, and the parsed call validates."""
    r = v11_model.chat(
        [{"role": "user", "content": "add 1 and 2"}], 60, tools=[WEATHER, ADD],
        tool_choice="required", parallel_tool_calls=False, seed=seed,
    )  # fmt: skip
    assert r.finish == "tool_calls" and len(r.tool_calls) == 1, r
    vocab = v11_model.tokenizer.vocab.token_to_id
    assert r.token_ids[0] == vocab["[TOOL_CALLS]"] and vocab["[ARGS]"] in r.token_ids
    call = r.tool_calls[0]
    assert call.name in NAMES
    if call.name == "add":
        assert set(call.arguments) == {"a", "b"}
    else:
        assert isinstance(call.arguments["city"], str) and len(call.arguments["city"]) <= 12


def test_v11_auto_opens_the_grammar_at_the_trigger(v11_model: corral.Model) -> None:
    tok = v11_model.tokenizer
    plan = _plan(v11_model, "auto", parallel=False)
    assert plan.choice.mode is ToolChoiceMode.AUTO
    c = plan.constraint(tok)
    for t in tok.encode("Let me see.", add_special=False):
        c.accept(t)
    assert c.active_constraint is None  # free text until the call opens
    c.accept(tok.vocab.token_to_id["[TOOL_CALLS]"])
    inner = c.active_constraint
    assert inner is not None and inner.consume_text(b"get_weather")
    inner.accept(tok.vocab.token_to_id["[ARGS]"])
    assert inner.consume_text(b'{"city": "Rome"}') and inner.complete
