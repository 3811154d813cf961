"""Chat templates: built-in formats, HF helpers, oracle renders, hostile templates."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from corral.chat import BuiltinTemplate, ChatTemplate, RenderLimits, builtin_for, template_for
from corral.errors import CorralError, TemplateError

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "2+2?"},
]

# Each format's layout for system + user + assistant + user, with a generation prompt,
# written out from the format's published spec (see builtin.py for the sources).
EXPECTED = {
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama-2": (
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] 2+2? [/INST]"
    ),
    "mistral": " [INST] Be brief.\n\nHi! [/INST] Hello.</s> [INST] 2+2? [/INST]",
    "zephyr": (
        "<|system|>\nBe brief.</s>\n<|user|>\nHi!</s>\n<|assistant|>\nHello.</s>\n"
        "<|user|>\n2+2?</s>\n<|assistant|>\n"
    ),
    "gemma": (
        "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello."
        "<end_of_turn>\n<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n"
    ),
    "alpaca": (
        "Be brief.\n\n### Instruction:\nHi!\n\n### Response:\nHello.\n\n"
        "### Instruction:\n2+2?\n\n### Response:\n"
    ),
    "vicuna": "Be brief. USER: Hi! ASSISTANT: Hello.</s>USER: 2+2? ASSISTANT:",
    # llama.cpp's own format (src/llama-chat.cpp); more in test_llamacpp_names.py
    "rwkv-world": "System: Be brief.\n\nUser: Hi!\n\nAssistant: Hello.\n\nUser: 2+2?\n\nAssistant:",
}


def _raises(source: str, messages: list | None = None, **kwargs: object) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        ChatTemplate(source).render(messages or [], **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return info.value


# --- built-in formats ------------------------------------------------------------------


@pytest.mark.parametrize("name", [t.value for t in BuiltinTemplate])
def test_builtin_renders_its_spec(name: str) -> None:
    assert ChatTemplate.named(name).render(CONVERSATION) == EXPECTED[name]


def test_every_builtin_has_an_expected_render() -> None:
    assert set(EXPECTED) == {t.value for t in BuiltinTemplate}


def test_builtins_without_system_message() -> None:
    user = [{"role": "user", "content": "Hi!"}]
    assert ChatTemplate.named("gemma").render(user) == (
        "<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n"
    )
    assert ChatTemplate.named("llama-2").render(user) == "[INST] Hi! [/INST]"
    assert ChatTemplate.named("vicuna").render(user).startswith("A chat between a curious user")
    assert ChatTemplate.named("alpaca").render(user).startswith("Below is an instruction")


def test_generation_prompt_can_be_left_off() -> None:
    user = [{"role": "user", "content": "Hi!"}]
    rendered = ChatTemplate.named("chatml").render(user, add_generation_prompt=False)
    assert rendered == "<|im_start|>user\nHi!<|im_end|>\n"
    rendered = ChatTemplate.named("gemma").render(user, add_generation_prompt=False)
    assert rendered == "<start_of_turn>user\nHi!<end_of_turn>\n"


def test_builtin_tokens_come_from_the_caller() -> None:
    template = ChatTemplate.named("llama-2", bos_token="<BOS>", eos_token="<EOS>")
    assert "Hello. <EOS><BOS>[INST] 2+2?" in template.render(CONVERSATION)


def test_content_given_as_text_parts() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image"}]}]
    rendered = ChatTemplate.named("chatml").render(parts)
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_gemma_enforces_alternating_roles() -> None:
    error = _raises(ChatTemplate.named("gemma").source, [{"role": "assistant", "content": "x"}])
    assert "must alternate user and assistant" in str(error)


def test_named_accepts_enum_and_aliases_and_refuses_unknown() -> None:
    assert ChatTemplate.named(BuiltinTemplate.ZEPHYR).name == "zephyr"
    assert ChatTemplate.named("Llama2").name == "llama-2"
    with pytest.raises(TemplateError, match="unknown chat template 'nope'.*chatml"):
        ChatTemplate.named("nope")


# --- choosing a format from GGUF metadata ----------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"general.architecture": "gemma3", "tokenizer.ggml.tokens": ["<start_of_turn>"]}, "gemma"),
        ({"general.architecture": "gemma2"}, "gemma"),
        ({"general.architecture": "llama", "tokenizer.ggml.tokens": ["<|im_start|>"]}, "chatml"),
        (
            {"general.name": "OpenHermes Mistral", "tokenizer.ggml.tokens": ["<|im_start|>"]},
            "chatml",
        ),
        ({"general.architecture": "llama", "general.name": "Zephyr 7B Beta"}, "zephyr"),
        ({"general.architecture": "llama", "general.name": "Llama-2-7b-chat"}, "llama-2"),
        ({"general.architecture": "llama", "general.name": "Mistral 7B Instruct v0.1"}, "mistral"),
        ({"general.architecture": "llama", "general.basename": "vicuna"}, "vicuna"),
        ({"general.architecture": "llama", "general.finetune": "alpaca"}, "alpaca"),
        ({"general.architecture": "llama", "tokenizer.ggml.tokens": ["<s>", "[INST]"]}, "mistral"),
        ({"general.architecture": "qwen2"}, "chatml"),
        ({}, "chatml"),
    ],
)
def test_builtin_for_metadata(metadata: dict, expected: str) -> None:
    assert builtin_for(metadata) == expected


def test_template_for_prefers_the_files_template() -> None:
    metadata = {
        "tokenizer.chat_template": "{{ bos_token }}|{{ messages[0].content }}|{{ eos_token }}",
        "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>"],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    assert template_for(metadata).render([{"role": "user", "content": "x"}]) == "<s>|x|</s>"
    del metadata["tokenizer.chat_template"]
    metadata["general.architecture"] = "gemma3"
    assert template_for(metadata).name == "gemma"


def test_gemma_builtin_matches_llama_cpp(oracle_gemma3: dict) -> None:
    chat = oracle_gemma3["chat"]
    assert chat["gguf_chat_template"] is None  # why corral must pick a built-in for Gemma 3
    assert ChatTemplate.named("gemma").render(chat["messages"]) == chat["rendered_prompt"]


def test_smollm2_template_matches_oracle(oracle_smollm2: dict) -> None:
    chat = oracle_smollm2["chat"]
    rendered = ChatTemplate(chat["gguf_chat_template"]).render(chat["messages"])
    assert rendered == chat["rendered_prompt"]


@pytest.mark.realmodel
def test_real_files_get_the_right_template(
    smollm2_path: Path, gemma3_path: Path, oracle_smollm2: dict, oracle_gemma3: dict
) -> None:
    from corral.gguf import open_gguf

    smollm2 = open_gguf(smollm2_path).metadata
    gemma3 = open_gguf(gemma3_path).metadata
    assert "tokenizer.chat_template" not in gemma3
    assert builtin_for(gemma3) == BuiltinTemplate.GEMMA
    assert builtin_for(smollm2) == BuiltinTemplate.CHATML
    for metadata, oracle in ((smollm2, oracle_smollm2), (gemma3, oracle_gemma3)):
        chat = oracle["chat"]
        assert template_for(metadata).render(chat["messages"]) == chat["rendered_prompt"]


# --- Hugging Face helpers and variables ------------------------------------------------


def test_raise_exception_surfaces_the_templates_message() -> None:
    error = _raises("{{ raise_exception('Roles must alternate!\\nreally') }}")
    assert isinstance(error, CorralError)
    assert "Roles must alternate! really" in str(error)


def test_tojson_has_hf_semantics() -> None:
    value = {"b": "héllo <tag>", "a": [1, 2]}
    render = lambda src: ChatTemplate(src).render([], value=value)  # noqa: E731
    assert render("{{ value|tojson }}") == json.dumps(value, ensure_ascii=False)
    assert render("{{ value|tojson(indent=2) }}") == json.dumps(value, ensure_ascii=False, indent=2)
    assert render("{{ value|tojson(sort_keys=true) }}") == '{"a": [1, 2], "b": "héllo <tag>"}'
    assert render("{{ value|tojson(ensure_ascii=true) }}") == json.dumps(value)
    assert render("{{ value|tojson(separators=(',', ':')) }}") == '{"b":"héllo <tag>","a":[1,2]}'


def test_strftime_now() -> None:
    before = datetime.now().strftime("%Y-%m-%d")
    rendered = ChatTemplate("{{ strftime_now('%Y-%m-%d') }}").render([])
    assert rendered in {before, datetime.now().strftime("%Y-%m-%d")}


def test_variables_and_options_match_transformers() -> None:
    template = ChatTemplate(
        "{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}{{ tools }}{{ mode }}",
        bos_token="<s>",
        eos_token="</s>",
    )
    assert template.render([], add_generation_prompt=False, mode="x") == "<s></s>FalseNonex"
    assert ChatTemplate("{{ tools[0].name }}").render([], tools=[{"name": "f"}]) == "f"
    # trim_blocks + lstrip_blocks, loop controls, and {% generation %} blocks
    source = "  {% for i in range(5) %}\n{% if i == 2 %}{% break %}{% endif %}{{ i }}\n{% endfor %}"
    assert ChatTemplate(source).render([]) == "0\n1\n"
    assert ChatTemplate("{% generation %}x{% endgeneration %}").render([]) == "x"


# A template using the features real ones do (namespace, selectattr, list building, dict
# items, slicing, str methods, format, loop controls); corral must render it exactly as
# transformers' plain sandbox does.
FEATURE_TEMPLATE = """
{%- set ns = namespace(system='', calls=0, kept=[]) -%}
{%- if messages and messages[0].role == 'system' -%}
  {%- set ns.system = messages[0].content | trim -%}
  {%- set rest = messages[1:] -%}
{%- else -%}
  {%- set rest = messages -%}
{%- endif -%}
{{ bos_token }}[SYS]{{ ns.system or 'default' }}[/SYS]
{% if tools %}
[TOOLS]{% for tool in tools %}{{ tool.function | tojson }}{{ ', ' if not loop.last }}{% endfor %}
{% endif %}
{%- set users = rest | selectattr('role', 'equalto', 'user') | list -%}
{%- for m in rest -%}{%- if m.role != 'tool' -%}{%- set ns.kept = ns.kept + [m] -%}{%- endif -%}{%- endfor -%}
{% for m in rest %}
  {% if m.role == 'user' %}
<u{{ loop.index }}{{ ' last' if m == users[-1] }}>{{ m.content | replace('\\n', ' ') }}</u>
  {% elif m.role == 'assistant' and m.tool_calls is defined %}
    {% for call in m.tool_calls %}
      {% set ns.calls = ns.calls + 1 %}
<call id="{{ call.id[-4:] }}">{{ call.function.name }}({% for k, v in call.function.arguments | dictsort %}{{ k }}={{ v | tojson }}{% if not loop.last %}, {% endif %}{% endfor %})</call>
    {% endfor %}
  {% elif m.role == 'assistant' %}
<a>{{ m.content.split('</think>')[-1].lstrip() }}{{ eos_token }}</a>
  {% elif m.role == 'tool' %}
<r>{{ m.content | string | truncate(20) }}</r>
  {% else %}
    {{ raise_exception('bad role ' ~ m.role) }}
  {% endif %}
  {% if loop.index > 50 %}{% break %}{% endif %}
{% endfor %}
{{ '%d calls, %d kept, %s' | format(ns.calls, ns.kept | length, '{:>4}|{}'.format('x', 1.5)) }}
{% if add_generation_prompt %}<a>{% endif %}
"""

FEATURE_MESSAGES = [
    {"role": "system", "content": "  Sys  "},
    {"role": "user", "content": "line one\nline two"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_0001", "function": {"name": "f", "arguments": {"b": "é", "a": 1}}}
        ],
    },
    {"role": "tool", "content": "a tool result long enough to truncate here"},
    {"role": "assistant", "content": "<think>hmm</think>  Done."},
    {"role": "user", "content": "again"},
]


def _reference_render(source: str, **variables: object) -> str:
    """The same template in a stock sandbox configured as transformers configures it."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = (
        lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )
    )
    return env.from_string(source).render(**variables)


def test_feature_rich_template_renders_like_transformers() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    variables = {"bos_token": "<s>", "eos_token": "</s>", "tools": tools}
    expected = _reference_render(
        FEATURE_TEMPLATE, messages=FEATURE_MESSAGES, add_generation_prompt=True, **variables
    )
    template = ChatTemplate(FEATURE_TEMPLATE, bos_token="<s>", eos_token="</s>")
    assert template.render(FEATURE_MESSAGES, tools=tools) == expected
    assert "1 calls, 4 kept,    x|1.5" in expected  # the template really ran its paths


def test_long_conversation_renders_quickly() -> None:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 40}
        for i in range(4000)
    ]
    start = time.perf_counter()
    rendered = ChatTemplate.named("chatml").render(messages)
    assert time.perf_counter() - start < 2.0
    assert rendered.count("<|im_start|>") == 4001


# --- errors and hostile templates ------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{% for %}", "does not compile: line 1"),
        ("{{ 1 +\n\n }}", "does not compile: line"),
        ("{% if x %}", "does not compile"),
        ("{{ (" * 3000 + "1" + ")" * 3000 + " }}", "does not compile"),
    ],
)
def test_broken_templates_fail_at_construction(source: str, says: str) -> None:
    with pytest.raises(TemplateError, match=says) as info:
        ChatTemplate(source)
    assert "\n" not in str(info.value)


def test_source_must_be_text_of_sane_size() -> None:
    with pytest.raises(TemplateError, match="not text"):
        ChatTemplate(None)  # type: ignore[arg-type]
    with pytest.raises(TemplateError, match="characters long"):
        ChatTemplate("x" * 20, limits=RenderLimits(max_source_chars=10))


def test_runtime_errors_become_template_errors() -> None:
    assert "failed" in str(_raises("{{ messages[0].content.nope() }}", [{"content": "x"}]))
    assert "failed" in str(_raises("{% include 'other' %}"))
    assert "failed" in str(_raises("{{ lipsum(10**9) }}"))  # not offered to templates
    with pytest.raises(TypeError):
        ChatTemplate("x").render("not a list")  # type: ignore[arg-type]


ESCAPES = [
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{{ ().__class__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ joiner.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ namespace.__init__.__globals__['os'].system('touch MARKER') }}",
    "{{ raise_exception.__globals__['os'].system('touch MARKER') }}",
    "{{ ()|attr('__class__') }}",
    "{{ ('{0.__class__.__mro__}'|attr('format'))(1) }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ dict.mro() }}",
    "{{ messages.append(1) }}",
    "{{ (messages|map('string')).gi_frame }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_attribute_escapes_are_blocked(source: str, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    error = _raises(source.replace("MARKER", str(marker)), [{"content": "x"}])
    assert "unsafe" in str(error)
    assert not marker.exists()


# Each must fail fast with a clear message instead of hanging or eating memory.
HOSTILE = [
    ("{% for i in range(10**9) %}x{% endfor %}", r"range\(\)"),
    ("{% for i in range(10**30) %}x{% endfor %}", r"range\(\)"),
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "steps"),
    ("{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}", "steps"),
    ("{{ 'x' * 10**10 }}", "larger than"),
    ("{{ 'x' * 10000000000 }}", "larger than"),
    ("{{ [0] * 10**10 }}", "larger than"),
    ("{{ 10 ** (10 ** 10) }}", "bits"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "deeper than"),
    ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "deeper than"),
    (
        "{% macro f(n) %}{% if n < 40 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}{{ f(0) }}",
        "",
    ),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(99) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "larger",
    ),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(99) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "larger",
    ),
    (
        "{% set ns = namespace(l=['xxxx']) %}{% for i in range(99) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
        "larger",
    ),
    ("{{ 'x'|center(10**10) }}", "limit"),
    ("{{ 'x'.ljust(9999999999) }}", "limit"),
    ("{{ '{:>9999999999}'.format('x') }}", "larger than"),
    ("{{ '{:>{}}'.format('x', 10**10) }}", "larger than"),
    ("{{ '%9999999999s' % 'x' }}", "larger than"),
    ("{{ '%*s' % (10**10, 'x') }}", "larger than"),
    ("{% set s = 'x' * 1000000 %}{{ s|replace('x', s) }}", "larger than"),
    ("{% set s = 'x' * 1000000 %}{{ s.replace('x', s) }}", "larger than"),
    ("{{ ('\n' * 1000000)|indent(1000000) }}", "larger than"),
    ("{{ ('\t' * 1000000).expandtabs(1000000) }}", "larger than"),
    ("{{ range(100000)|map('center', 4000000)|join }}", "created more than"),
    ("{{ (['x' * 1000000] * 1000)|string }}", "larger than"),
    ("{{ dict.fromkeys(range(100000), 'x' * 1000000) }}", "larger than"),
    ("{% set x %}{% for i in range(99999) %}{{ 'y' * 1000 }}{% endfor %}{% endset %}", "larger"),
    ("{{ [1]|slice(10**9)|list }}", "limit"),
    ("{{ [1, 2]|tojson(indent=10**9) }}", "indent"),
    ("{{ (1).to_bytes(10**10, 'big') }}", "limit"),
    ("{{ strftime_now('%c' * 1000000) }}", "strftime_now"),
]


@pytest.mark.parametrize(("source", "says"), HOSTILE)
def test_hostile_templates_fail_fast(source: str, says: str) -> None:
    start = time.perf_counter()
    error = _raises(source)
    elapsed = time.perf_counter() - start
    assert re.search(says, str(error))
    # The wall-clock limit is the backstop; most fail in milliseconds.
    assert elapsed < RenderLimits().time_limit_s + 1.5


def test_limits_are_configurable() -> None:
    limits = RenderLimits(max_output_chars=100, max_range=10, time_limit_s=0.05)
    long_chat = [{"role": "user", "content": "x" * 200}]
    with pytest.raises(TemplateError, match="larger than 100"):
        ChatTemplate.named("chatml", limits=limits).render(long_chat)
    with pytest.raises(TemplateError, match="limit is 10"):
        ChatTemplate("{% for i in range(11) %}{% endfor %}", limits=limits).render([])
    slow = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match="longer than its 0.05 s limit"):
        ChatTemplate(slow, limits=RenderLimits(time_limit_s=0.05)).render([])


def test_growing_a_list_in_a_loop_is_allowed() -> None:
    # Templates build filtered message lists this way; each `+` is checked in O(1) from
    # cached weights, so this stays linear-ish rather than rescanning the list each time.
    source = (
        "{% set ns = namespace(l=[]) %}{% for i in range(3000) %}"
        "{% set ns.l = ns.l + [i] %}{% endfor %}{{ ns.l|length }}"
    )
    assert ChatTemplate(source).render([]) == "3000"
