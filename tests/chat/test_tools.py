"""Tool calling without a model: formats from templates, prompts, parsers on hand-written
outputs of each format (whole and streamed), tool schemas from Python functions."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Annotated, Literal

import pytest

import corral
from corral.chat import ChatTemplate
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
from corral.errors import InvalidRequestError

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
NAMES = frozenset({"get_weather", "add"})

QWEN_LIKE = (
    "{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}"
    "</tools><|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}'
    "\n</tool_call>{% endfor %}{% elif m.role == 'tool' %}<tool_response>\n{{ m.content }}"
    "\n</tool_response>{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MISTRAL_LIKE = "{{ bos_token }}[AVAILABLE_TOOLS] {{ tools|tojson }}[/AVAILABLE_TOOLS][TOOL_CALLS]"
LLAMA3_LIKE = (
    '<|start_header_id|>{% if tools %}Given the following functions {"name": function name, '
    '"parameters": dictionary}{% endif %}'
)


@pytest.mark.parametrize(
    ("source", "fmt"),
    [
        (QWEN_LIKE, ToolFormat.HERMES),
        (MISTRAL_LIKE, ToolFormat.MISTRAL),
        (LLAMA3_LIKE, ToolFormat.LLAMA3),
        ("{% for m in messages %}{{ m.content }}{% endfor %}", ToolFormat.GENERIC),
        (None, ToolFormat.GENERIC),
    ],
)
def test_format_from_template(source: str | None, fmt: ToolFormat) -> None:
    assert detect_format(source) is fmt


@pytest.mark.parametrize(
    ("fmt", "text", "calls", "content"),
    [
        (
            ToolFormat.HERMES,
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            [("get_weather", {"city": "Paris"})],
            "",
        ),
        (
            ToolFormat.HERMES,
            'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "a}b"}}'
            '\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": [2, {}]}}'
            "\n</tool_call>",
            [("get_weather", {"city": "a}b"}), ("add", {"a": 1, "b": [2, {}]})],
            "Let me check.",
        ),
        (
            ToolFormat.MISTRAL,
            '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}, '
            '{"name": "add", "arguments": {"a": 2, "b": 3}}]',
            [("get_weather", {"city": "Oslo"}), ("add", {"a": 2, "b": 3})],
            "",
        ),
        (
            ToolFormat.LLAMA3,
            '{"name": "add", "parameters": {"a": 2, "b": 3}}',
            [("add", {"a": 2, "b": 3})],
            "",
        ),
        (
            ToolFormat.GENERIC,
            '{"name": "get_weather", "arguments": {"city": "Rome"}}',  # bare, no tags
            [("get_weather", {"city": "Rome"})],
            "",
        ),
        (ToolFormat.LLAMA3, "The answer is {42}.", [], "The answer is {42}."),
        (ToolFormat.HERMES, "Just text, <b>bold</b>.", [], "Just text, <b>bold</b>."),
    ],
)
def test_parse_hand_written_outputs(
    fmt: ToolFormat, text: str, calls: list[tuple[str, dict]], content: str
) -> None:
    out = parse_output(text, SPECS[fmt], NAMES)
    assert [(c.name, c.arguments) for c in out.calls] == calls
    assert out.content == content and not out.broken


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',  # cut by max_tokens
        '<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>',  # not a tool
        '<tool_call>\n{"name": "add", "arguments": "1 + 2"}\n</tool_call>',  # not an object
    ],
)
def test_broken_calls_are_never_calls(text: str) -> None:
    out = parse_output(text, SPECS[ToolFormat.HERMES], NAMES)
    assert out.calls == [] and out.broken and out.content == text


def test_complete_calls_survive_a_cut_one() -> None:
    text = (
        '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "add", "arguments": {"a": '
    )
    out = parse_output(text, SPECS[ToolFormat.HERMES], NAMES)
    assert [c.arguments for c in out.calls] == [{"a": 1}] and out.broken


def test_streamed_events_in_small_pieces() -> None:
    text = (
        'Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        '\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    )
    p = ToolCallParser(SPECS[ToolFormat.HERMES], NAMES)
    events = []
    for i in range(0, len(text), 3):
        events += p.push(text[i : i + 3])
    events += p.finish()
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    starts = [e for e in events if isinstance(e, CallStart)]
    assert content == "Sure. "
    assert [(s.index, s.name) for s in starts] == [(0, "get_weather"), (1, "add")]
    for s in starts:
        args = "".join(e.text for e in events if isinstance(e, ArgsDelta) and e.index == s.index)
        end = next(e for e in events if isinstance(e, CallEnd) and e.index == s.index)
        assert json.loads(args) == end.call.arguments and end.call.id == s.id
    # the name comes before any argument fragment of its call
    first_args = next(i for i, e in enumerate(events) if isinstance(e, ArgsDelta))
    assert events.index(starts[0]) < first_args


def test_trigger_without_a_call_is_text() -> None:
    p = ToolCallParser(SPECS[ToolFormat.HERMES], NAMES)
    events = p.push("a <tool_call> b") + p.finish()
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == "a <tool_call> b"


def test_tools_and_choice_validation() -> None:
    tools = parse_tools([WEATHER, {"type": "function", "function": {"name": "add"}}])
    assert tools[1].parameters == {"type": "object", "properties": {}}
    assert parse_tool_choice(None, tools).mode is ToolChoiceMode.AUTO
    assert parse_tool_choice("required", tools).mode is ToolChoiceMode.REQUIRED
    named = parse_tool_choice({"type": "function", "function": {"name": "add"}}, tools)
    assert named.mode is ToolChoiceMode.NAMED and named.name == "add"
    for bad in ("sometimes", {"type": "function", "function": {"name": "zzz"}}, 3):
        with pytest.raises(InvalidRequestError):
            parse_tool_choice(bad, tools)
    for bad_tools in ([{"type": "code"}], [{"function": {"name": "a b"}}], [WEATHER, WEATHER]):
        with pytest.raises(InvalidRequestError):
            parse_tools(bad_tools)


def test_generic_prompt_describes_tools_and_folds_results() -> None:
    plan = ToolPlan.create(None, parse_tools([WEATHER]))
    history = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]  # fmt: skip
    msgs, template_tools = plan.prepare(history)
    assert template_tools is None
    assert msgs[0]["role"] == "system" and "get_weather" in msgs[0]["content"]
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in msgs[2]["content"]
    )
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert "sunny" in msgs[3]["content"] and "rain" in msgs[3]["content"]
    text = ChatTemplate.named("chatml").render(msgs)
    assert "<tool_response>\nsunny\n</tool_response>" in text


def test_native_prompt_passes_tools_and_object_arguments() -> None:
    plan = ToolPlan.create(QWEN_LIKE, parse_tools([WEATHER]))
    history = [
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]  # fmt: skip
    msgs, template_tools = plan.prepare(history)
    text = ChatTemplate(QWEN_LIKE).render(msgs, tools=template_tools)
    assert '"name": "get_weather"' in text and "<tools>" in text
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in text  # not re-encoded
    assert "<tool_response>\nsunny\n</tool_response>" in text


def test_mistral_ids_become_nine_characters() -> None:
    plan = ToolPlan.create(MISTRAL_LIKE, parse_tools([WEATHER]))
    msgs, _ = plan.prepare(
        [
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_abc123456789",
                        "function": {"name": "get_weather", "arguments": {}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc123456789", "content": "x"},
        ]  # fmt: skip
    )
    call_id = msgs[0]["tool_calls"][0]["id"]
    assert len(call_id) == 9 and call_id.isalnum() and msgs[1]["tool_call_id"] == call_id


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


@dataclasses.dataclass
class Place:
    city: str
    country: str = "FR"


def test_tool_decorator_schema() -> None:
    @corral.tool
    def forecast(
        place: Place,
        days: Annotated[int, "how many days"],
        unit: Unit = Unit.C,
        kind: Literal["brief", "full"] | None = None,
        tags: list[str] | None = None,
    ) -> str:
        """Forecast the weather.

        More detail that is not the summary.

        Args:
            place: Where to forecast.
            days: ignored, the annotation wins.
            unit: Temperature unit.
        """
        return f"{place.city} {days}"

    fn = forecast.schema["function"]
    assert fn["name"] == "forecast" and fn["description"] == "Forecast the weather."
    props = fn["parameters"]["properties"]
    assert fn["parameters"]["required"] == ["place", "days"]
    assert props["place"]["properties"]["city"] == {"type": "string"}
    assert props["place"]["required"] == ["city"] and props["place"]["description"]
    assert props["days"] == {"type": "integer", "description": "how many days"}
    assert props["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert props["kind"] == {"anyOf": [{"enum": ["brief", "full"]}, {"type": "null"}]}
    assert props["tags"]["anyOf"][0] == {"type": "array", "items": {"type": "string"}}
    assert forecast(Place("Nice"), 2) == "Nice 2"


def test_tool_decorator_options_and_sphinx_docs() -> None:
    @corral.tool(name="sum_two")
    def add(a: int, b: float = 1.5) -> float:
        """Add numbers.

        :param a: the first
        :param b: the second
        """
        return a + b

    fn = add.schema["function"]
    assert fn["name"] == "sum_two" and fn["description"] == "Add numbers."
    assert fn["parameters"]["properties"]["b"] == {
        "type": "number", "description": "the second", "default": 1.5,
    }  # fmt: skip


def test_repeated_calls_are_dropped_also_when_streamed() -> None:
    call = '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>\n'
    other = '<tool_call>\n{"name": "add", "arguments": {"a": 2}}\n</tool_call>\n'
    text = call + call + other
    out = parse_output(text, SPECS[ToolFormat.HERMES], NAMES)
    assert [c.arguments for c in out.calls] == [{"a": 1}, {"a": 2}]
    p = ToolCallParser(SPECS[ToolFormat.HERMES], NAMES)
    events = [e for i in range(0, len(text), 4) for e in p.push(text[i : i + 4])] + p.finish()
    starts = [e for e in events if isinstance(e, CallStart)]
    assert [s.index for s in starts] == [0, 1]
    args = "".join(e.text for e in events if isinstance(e, ArgsDelta) and e.index == 1)
    assert json.loads(args) == {"a": 2}


@pytest.mark.parametrize(
    ("fmt", "text", "n_calls", "content"),
    [
        # [TOOL_CALLS] is a control token: the text the engine gives back lacks it
        (ToolFormat.MISTRAL, ' [{"name": "add", "arguments": {"a": 1}}]', 1, ""),
        (ToolFormat.MISTRAL, "[link](x) and text", 0, "[link](x) and text"),
        (ToolFormat.MISTRAL, "[", 0, "["),
        (ToolFormat.LLAMA3, '{"type": "function", "x": 1}', 0, '{"type": "function", "x": 1}'),
    ],
)
def test_format_edges(fmt: ToolFormat, text: str, n_calls: int, content: str) -> None:
    out = parse_output(text, SPECS[fmt], NAMES)
    assert len(out.calls) == n_calls and out.content == content
