"""Llama 3.1+ tool calls: a bare JSON object `{"name": ..., "parameters": {...}}` with no
special token around it. With tool_choice auto nothing constrains the output (an opening
brace is no safe trigger), so the call is recognised by the parser alone: an answer that
opens with a call object is calls, anything else is text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import corral
from corral.chat.tools import ToolCallParser, ToolChoiceMode, ToolFormat, ToolPlan, parse_tools
from corral.chat.tools.parse import ArgsDelta, CallEnd, CallStart, ContentDelta
from tiny_gguf import write_tiny
from tool_fixtures import WEATHER

# the tool part of Llama 3.1's own template (tools in the user turn, JSON calls back)
LLAMA31_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{% if m.role == 'user' and tools and loop.last %}Given the following functions, please "
    "respond with a JSON for a function call with its proper arguments that best answers the "
    'given prompt.\n\nRespond in the format {"name": function name, "parameters": dictionary '
    "of argument name and its value}. Do not use variables.\n\n{% for t in tools %}"
    "{{ t|tojson }}\n\n{% endfor %}{% endif %}{% if m.tool_calls %}{% for c in m.tool_calls %}"
    '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments|tojson }}}'
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _plan(choice: str = "auto") -> ToolPlan:
    from corral.chat.tools import parse_tool_choice

    tools = parse_tools([WEATHER])
    return ToolPlan.create(LLAMA31_TEMPLATE, tools, parse_tool_choice(choice, tools))


def test_auto_has_no_grammar_and_parses_the_bare_object() -> None:
    plan = _plan()
    assert plan.fmt is ToolFormat.LLAMA3 and plan.choice.mode is ToolChoiceMode.AUTO
    assert plan.constraint(None) is None  # type: ignore[arg-type]  # no tokenizer needed
    out = plan.parse('  {"name": "get_weather", "parameters": {"city": "Paris"}}')
    assert [(c.name, c.arguments) for c in out.calls] == [("get_weather", {"city": "Paris"})]
    assert out.content == "" and not out.broken


@pytest.mark.parametrize(
    ("text", "calls", "content"),
    [
        (  # llama.cpp's parser also takes a leading "type": "function"
            '{"type": "function", "name": "get_weather", "parameters": {"city": "Oslo"}}',
            [("get_weather", {"city": "Oslo"})],
            "",
        ),
        ("The weather in {city} is sunny.", [], "The weather in {city} is sunny."),
        # JSON that is no call of a given tool stays the answer's text
        ('{"city": "Paris"}', [], '{"city": "Paris"}'),
        ('{"name": "other", "parameters": {}}', [], '{"name": "other", "parameters": {}}'),
        # a call only counts at the start: Llama 3 writes no text before its call
        (
            'Call: {"name": "get_weather", "parameters": {"city": "X"}}',
            [],
            'Call: {"name": "get_weather", "parameters": {"city": "X"}}',
        ),
    ],
)
def test_auto_outputs(text: str, calls: list[tuple[str, dict]], content: str) -> None:
    out = _plan().parse(text)
    assert [(c.name, c.arguments) for c in out.calls] == calls
    assert out.content == content


def test_auto_streamed_call_and_streamed_text() -> None:
    text = '\n{"name": "get_weather", "parameters": {"city": "Lima"}}'
    p: ToolCallParser = _plan().parser()
    events = []
    for i in range(0, len(text), 3):
        events += p.push(text[i : i + 3])
    events += p.finish()
    assert not [e for e in events if isinstance(e, ContentDelta)]
    start = next(e for e in events if isinstance(e, CallStart))
    args = "".join(e.text for e in events if isinstance(e, ArgsDelta))
    end = next(e for e in events if isinstance(e, CallEnd))
    assert (
        start.name == "get_weather" and json.loads(args) == {"city": "Lima"} == end.call.arguments
    )
    # text streams as soon as its first character shows it is no call
    p = _plan().parser()
    assert p.push("Hel") == [ContentDelta("Hel")] and p.push("lo") == [ContentDelta("lo")]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> corral.Model:
    path: Path = tmp_path_factory.mktemp("llama3") / "tiny.gguf"
    return corral.load(write_tiny(path, context=1024, chat_template=LLAMA31_TEMPLATE))


def test_prompt_and_required_call_from_a_random_model(model: corral.Model) -> None:
    """The template shows the tools; required (grammar) gives a parsed call even from
    random weights; auto leaves the random model's text as text."""
    ask = [{"role": "user", "content": "weather in Paris?"}]
    assert '"get_weather"' in model.render_chat(ask, [WEATHER])
    r = model.chat(ask, 120, tools=[WEATHER], tool_choice="required", seed=0)
    assert r.finish == "tool_calls" and r.tool_calls[0].name == "get_weather"
    assert isinstance(r.tool_calls[0].arguments["city"], str)
    free = model.chat(ask, 8, tools=[WEATHER], tool_choice="auto", seed=0)
    assert free.tool_calls == [] and free.finish != "tool_calls"
