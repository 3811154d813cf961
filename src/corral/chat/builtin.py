"""Built-in chat templates for GGUF files that carry no `tokenizer.chat_template`, or
carry the *name* of one of llama.cpp's built-in formats there instead of Jinja2 text.

Each format is written here as a Jinja2 template from its published layout (rwkv-world from
llama.cpp's own code, src/llama-chat.cpp, since llama.cpp defines that format). Convention
shared by all of them: the prompt never *starts* with BOS, because the tokenizer adds it
(`tokenizer.ggml.add_bos_token`), which is also how llama.cpp renders its built-in
formats; a BOS needed *inside* the prompt (llama-2's later turns) uses `bos_token`.
Message content may be a string, None, or a list of OpenAI-style parts, whose
`{"type": "text"}` parts are joined.

`builtin_for(metadata)` picks the format a file was most likely trained with;
`template_for(metadata)` prefers the file's own template and falls back to it. A file
whose `tokenizer.chat_template` is a llama.cpp template name (llama.cpp's converter writes
"rwkv-world" for RWKV world-vocabulary models) gets that format, as llama.cpp renders it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from corral.chat.limits import RenderLimits
from corral.chat.template import ChatTemplate
from corral.errors import TemplateError


class BuiltinTemplate(StrEnum):
    """Names of the built-in chat formats (also accepted by `ChatTemplate.named`)."""

    CHATML = "chatml"
    LLAMA2 = "llama-2"
    MISTRAL = "mistral"
    ZEPHYR = "zephyr"
    GEMMA = "gemma"
    ALPACA = "alpaca"
    VICUNA = "vicuna"
    RWKV_WORLD = "rwkv-world"


# Text of a message's content: a string, None, or a list of {"type": "text", ...} parts.
_TEXT_MACRO = r"""
{%- macro text(content) -%}
  {%- if content is string -%}
    {{- content -}}
  {%- elif content is iterable and content is not mapping -%}
    {%- for part in content if part is mapping and part['type'] == 'text' -%}
      {{- part['text'] -}}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
"""

# Formats that fold a leading system message into the first user turn split it off here.
_SPLIT_SYSTEM = r"""
{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set system = text(messages[0]['content']) -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system = '' -%}
  {%- set turns = messages -%}
{%- endif -%}
"""

# user/assistant/user/... after the system message, as the official templates demand.
_ALTERNATE = r"""
  {%- if message['role'] not in ('user', 'assistant')
        or (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
    {{- raise_exception(FORMAT + ' conversations must alternate user and assistant turns'
                        + ' after an optional system message') -}}
  {%- endif -%}
"""

# <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n
_CHATML = r"""
{%- for message in messages -%}
  {{- '<|im_start|>' + message['role'] + '\n' + text(message['content']) + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""

# Meta's reference: <s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] answer </s><s>[INST] ...
_LLAMA2 = (
    _SPLIT_SYSTEM
    + r"""
{%- for message in turns -%}
"""
    + _ALTERNATE.replace("FORMAT", "'llama-2'")
    + r"""
  {%- if message['role'] == 'user' -%}
    {%- set prefix = '<<SYS>>\n' + system + '\n<</SYS>>\n\n' if loop.first and system else '' -%}
    {%- set content = (prefix + text(message['content'])) | trim -%}
    {{- ('' if loop.first else bos_token) + '[INST] ' + content + ' [/INST]' -}}
  {%- else -%}
    {{- ' ' + (text(message['content']) | trim) + ' ' + eos_token -}}
  {%- endif -%}
{%- endfor -%}
"""
)

# Mistral tokenizer v1: " [INST] sys\n\nuser [/INST] answer</s> [INST] user [/INST]"
_MISTRAL = (
    _SPLIT_SYSTEM
    + r"""
{%- for message in turns -%}
"""
    + _ALTERNATE.replace("FORMAT", "'mistral'")
    + r"""
  {%- if message['role'] == 'user' -%}
    {%- set prefix = system + '\n\n' if loop.first and system else '' -%}
    {{- ' [INST] ' + prefix + text(message['content']) + ' [/INST]' -}}
  {%- else -%}
    {{- ' ' + text(message['content']) + eos_token -}}
  {%- endif -%}
{%- endfor -%}
"""
)

# <|system|>\nsys</s>\n<|user|>\nuser</s>\n<|assistant|>\nanswer</s>\n ... <|assistant|>\n
_ZEPHYR = r"""
{%- for message in messages -%}
  {{- '<|' + message['role'] + '|>\n' + text(message['content']) + eos_token + '\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|assistant|>\n' -}}
{%- endif -%}
"""

# Gemma 3: <start_of_turn>user\nsys\n\nuser<end_of_turn>\n<start_of_turn>model\n...
_GEMMA = (
    _SPLIT_SYSTEM
    + r"""
{%- for message in turns -%}
"""
    + _ALTERNATE.replace("FORMAT", "'gemma'")
    + r"""
  {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
  {%- set prefix = system + '\n\n' if loop.first and system else '' -%}
  {{- '<start_of_turn>' + role + '\n' + prefix + (text(message['content']) | trim)
      + '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<start_of_turn>model\n' -}}
{%- endif -%}
"""
)

_ALPACA_SYSTEM = (
    "Below is an instruction that describes a task."
    " Write a response that appropriately completes the request."
)

# sys\n\n### Instruction:\nuser\n\n### Response:\nanswer\n\n ... ### Response:\n
_ALPACA = (
    _SPLIT_SYSTEM
    + r"""
{{- (system or DEFAULT_SYSTEM) + '\n\n' -}}
{%- for message in turns -%}
  {%- if message['role'] == 'assistant' -%}
    {{- '### Response:\n' + text(message['content']) + '\n\n' -}}
  {%- else -%}
    {{- '### Instruction:\n' + text(message['content']) + '\n\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '### Response:\n' -}}
{%- endif -%}
""".replace("DEFAULT_SYSTEM", repr(_ALPACA_SYSTEM))
)

_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant."
    " The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# FastChat vicuna_v1.1: "sys USER: user ASSISTANT: answer</s>USER: user ASSISTANT:"
_VICUNA = (
    _SPLIT_SYSTEM
    + r"""
{{- (system or DEFAULT_SYSTEM) + ' ' -}}
{%- for message in turns -%}
  {%- if message['role'] == 'assistant' -%}
    {{- 'ASSISTANT: ' + text(message['content']) + eos_token -}}
  {%- else -%}
    {{- 'USER: ' + text(message['content']) + ' ' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- 'ASSISTANT:' -}}
{%- endif -%}
""".replace("DEFAULT_SYSTEM", repr(_VICUNA_SYSTEM))
)

# llama.cpp's C++ isspace() in the C locale: what its trim() strips (not Unicode spaces).
_C_SPACE = " \t\n\v\f\r"

# llama.cpp's LLM_CHAT_TEMPLATE_RWKV_WORLD (the model needs "\n\n" as its EOT token):
# "System: sys\n\nUser: user\n\nAssistant: answer\n\nUser: user\n\nAssistant:", every
# content trimmed, other roles left out. llama.cpp writes "Assistant:" after a final user
# message whatever add_ass says; here add_generation_prompt=False leaves it off.
_RWKV_WORLD = r"""
{%- for message in messages -%}
  {%- set content = text(message['content']) | trim(C_SPACE) -%}
  {%- if message['role'] == 'system' -%}
    {{- 'System: ' + content + '\n\n' -}}
  {%- elif message['role'] == 'user' -%}
    {{- 'User: ' + content + '\n\n' -}}
    {%- if loop.last and add_generation_prompt -%}
      {{- 'Assistant:' -}}
    {%- endif -%}
  {%- elif message['role'] == 'assistant' -%}
    {{- 'Assistant: ' + content + '\n\n' -}}
  {%- endif -%}
{%- endfor -%}
""".replace("C_SPACE", repr(_C_SPACE))

_SOURCES: dict[BuiltinTemplate, str] = {
    BuiltinTemplate.CHATML: _CHATML,
    BuiltinTemplate.LLAMA2: _LLAMA2,
    BuiltinTemplate.MISTRAL: _MISTRAL,
    BuiltinTemplate.ZEPHYR: _ZEPHYR,
    BuiltinTemplate.GEMMA: _GEMMA,
    BuiltinTemplate.ALPACA: _ALPACA,
    BuiltinTemplate.VICUNA: _VICUNA,
    BuiltinTemplate.RWKV_WORLD: _RWKV_WORLD,
}

# (bos, eos) as text when the caller has none from a file.
_TOKENS: dict[BuiltinTemplate, tuple[str, str]] = {
    BuiltinTemplate.CHATML: ("", "<|im_end|>"),
    BuiltinTemplate.GEMMA: ("<bos>", "<eos>"),
}

_ALIASES = {"llama2": BuiltinTemplate.LLAMA2, "mistral-v1": BuiltinTemplate.MISTRAL}


def parse_builtin(name: str | BuiltinTemplate) -> BuiltinTemplate:
    """The built-in format called `name` (case-insensitive), or a TemplateError."""
    if isinstance(name, BuiltinTemplate):
        return name
    key = str(name).strip().lower()
    try:
        return _ALIASES.get(key) or BuiltinTemplate(key)
    except ValueError:
        known = ", ".join(t.value for t in BuiltinTemplate)
        raise TemplateError(f"unknown chat template {name!r}; built-in ones: {known}") from None


# llama.cpp's built-in template names (LLM_CHAT_TEMPLATES in its src/llama-chat.cpp). A GGUF
# may store one as `tokenizer.chat_template` in place of Jinja2 text; llama.cpp then renders
# that format with its own code (llm_chat_apply_template), matching the name exactly.
LLAMA_CPP_TEMPLATE_NAMES = frozenset({
    "chatml", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip", "mistral-v1",
    "mistral-v3", "mistral-v3-tekken", "mistral-v7", "mistral-v7-tekken", "phi3", "phi4",
    "falcon3", "zephyr", "monarch", "gemma", "orion", "openchat", "vicuna", "vicuna-orca",
    "deepseek", "deepseek2", "deepseek3", "command-r", "llama3", "chatglm3", "chatglm4",
    "glmedge", "minicpm", "exaone3", "exaone4", "rwkv-world", "granite", "gigachat", "megrez",
    "yandex", "bailing", "bailing-think", "bailing2", "llama4", "smolvlm", "hunyuan-moe",
    "gpt-oss", "hunyuan-dense", "kimi-k2", "seed_oss", "grok-2", "pangu-embedded",
})  # fmt: skip

# The llama.cpp names whose format corral renders exactly as llama.cpp does. Others are
# refused: corral's own "llama2", "vicuna", "zephyr", "gemma" and "mistral-v1" follow the
# published layouts, which differ from llama.cpp's renderings of those names.
_LLAMA_CPP_FORMATS: dict[str, BuiltinTemplate] = {
    "chatml": BuiltinTemplate.CHATML,
    "rwkv-world": BuiltinTemplate.RWKV_WORLD,
}


def llama_cpp_builtin(source: str) -> BuiltinTemplate | None:
    """The format a `tokenizer.chat_template` value names, if it is a llama.cpp template
    name (exact text, as llama.cpp matches it) rather than Jinja2 source; else None.

    A llama.cpp name corral does not render as llama.cpp does raises TemplateError, rather
    than rendering the name itself as a one-line "template".
    """
    if source not in LLAMA_CPP_TEMPLATE_NAMES:
        return None
    which = _LLAMA_CPP_FORMATS.get(source)
    if which is None:
        known = ", ".join(sorted(_LLAMA_CPP_FORMATS))
        raise TemplateError(
            f"GGUF chat template is llama.cpp's built-in format {source!r}, which corral does"
            f" not render; llama.cpp formats it renders: {known}"
        )
    return which


def builtin_source(which: BuiltinTemplate) -> str:
    """The Jinja2 source of a built-in format."""
    return _TEXT_MACRO + _SOURCES[which]


def builtin_tokens(which: BuiltinTemplate) -> tuple[str, str]:
    """The (bos, eos) text a built-in format uses when the model file gives none."""
    return _TOKENS.get(which, ("<s>", "</s>"))


# Special tokens whose presence in a vocabulary shows the chat format it was trained on.
_MARKER_TOKENS = frozenset({"<|im_start|>", "<start_of_turn>", "[INST]"})

# Substrings of general.name / basename / finetune, checked in this order: fine-tune
# names come first because they often contain their base model's name too.
_NAME_HINTS: tuple[tuple[tuple[str, ...], BuiltinTemplate], ...] = (
    (("zephyr",), BuiltinTemplate.ZEPHYR),
    (("vicuna",), BuiltinTemplate.VICUNA),
    (("alpaca",), BuiltinTemplate.ALPACA),
    (("gemma",), BuiltinTemplate.GEMMA),
    (("mistral", "mixtral"), BuiltinTemplate.MISTRAL),
    (("llama-2", "llama 2", "llama2"), BuiltinTemplate.LLAMA2),
)


def _present_markers(tokens: Iterable[Any]) -> set[str]:
    # One pass over the vocabulary (262k entries for Gemma), not one scan per marker.
    return {tok for tok in tokens if isinstance(tok, str) and tok in _MARKER_TOKENS}


def builtin_for(metadata: Mapping[str, Any]) -> BuiltinTemplate:
    """The built-in format that best fits a GGUF file, from its metadata.

    An RWKV world vocabulary (`tokenizer.ggml.model` = "rwkv") means rwkv-world. Then
    chat special tokens in the vocabulary decide (a ChatML fine-tune of Mistral
    has `<|im_start|>`), then the architecture (every Gemma uses turns), then the model's
    name; ChatML, the most common format and llama.cpp's default too, is the fallback.
    """
    if metadata.get("tokenizer.ggml.model") == "rwkv":
        return BuiltinTemplate.RWKV_WORLD  # the world vocabulary: llama.cpp's converter's pick
    markers = _present_markers(metadata.get("tokenizer.ggml.tokens") or ())
    if "<|im_start|>" in markers:
        return BuiltinTemplate.CHATML
    architecture = str(metadata.get("general.architecture") or "").lower()
    if "<start_of_turn>" in markers or architecture.startswith("gemma"):
        return BuiltinTemplate.GEMMA
    name = " ".join(
        str(metadata.get(key) or "")
        for key in ("general.name", "general.basename", "general.finetune")
    ).lower()
    for needles, which in _NAME_HINTS:
        if any(needle in name for needle in needles):
            return which
    if "[INST]" in markers:
        return BuiltinTemplate.MISTRAL
    return BuiltinTemplate.CHATML


def _token_text(metadata: Mapping[str, Any], key: str) -> str | None:
    """Text of the special token whose id is stored under `key`, if the file has it."""
    tokens = metadata.get("tokenizer.ggml.tokens")
    token_id = metadata.get(key)
    if tokens is None or token_id is None:
        return None
    try:
        token = tokens[int(token_id)]
    except (IndexError, TypeError, ValueError):
        return None
    return token if isinstance(token, str) else None


def template_for(
    metadata: Mapping[str, Any], *, limits: RenderLimits | None = None
) -> ChatTemplate:
    """The chat template for a GGUF file: its own `tokenizer.chat_template` if it has
    one (the format it names, if it is a llama.cpp built-in template name such as
    "rwkv-world"), else the built-in format `builtin_for` picks.

    A file template that does not compile raises TemplateError rather than silently
    falling back; callers that prefer a fallback can use `builtin_for` themselves.
    """
    bos = _token_text(metadata, "tokenizer.ggml.bos_token_id")
    eos = _token_text(metadata, "tokenizer.ggml.eos_token_id")
    source = metadata.get("tokenizer.chat_template")
    if isinstance(source, str) and source.strip():
        named = llama_cpp_builtin(source)
        if named is not None:
            return ChatTemplate.named(named, bos, eos, limits=limits)
        return ChatTemplate(source, bos or "", eos or "", limits=limits)
    return ChatTemplate.named(builtin_for(metadata), bos, eos, limits=limits)
