"""GGUF files whose `tokenizer.chat_template` is a llama.cpp built-in template *name*.

llama.cpp's convert_hf_to_gguf (and corral's RWKV converters) write "rwkv-world" there, and
"\\n\\n" as the EOT token. The expected prompts below are written out from llama.cpp's
llm_chat_apply_template (src/llama-chat.cpp, LLM_CHAT_TEMPLATE_RWKV_WORLD):

    system    -> "System: " + trim(content) + "\\n\\n"
    user      -> "User: " + trim(content) + "\\n\\n", then "Assistant:" if it is the last message
    assistant -> "Assistant: " + trim(content) + "\\n\\n"
    other roles are left out; trim() strips C isspace() characters only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import corral
import tiny_rwkv
from corral.chat import BuiltinTemplate, ChatTemplate, builtin_for, template_for
from corral.chat.builtin import LLAMA_CPP_TEMPLATE_NAMES, llama_cpp_builtin
from corral.engine.constraints import AllowedTokens
from corral.engine.generate import FinishReason
from corral.engine.sampling import SamplingParams
from corral.errors import TemplateError
from tiny_rwkv import rwkv_vocab, write_tiny_rwkv

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _rwkv_metadata(**extra: object) -> dict:
    texts, types = rwkv_vocab()
    return {
        "general.architecture": "rwkv7",
        "tokenizer.ggml.model": "rwkv",
        "tokenizer.ggml.tokens": texts,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 0,
        "tokenizer.ggml.eot_token_id": texts.index("\\n\\n"),
        "tokenizer.chat_template": "rwkv-world",
        **extra,
    }


RWKV_CASES = [
    ([_user("Hello")], "User: Hello\n\nAssistant:"),
    (
        [SYSTEM, _user("Hello"), _assistant("Hi there"), _user("Who are you")],
        "System: You are a helpful assistant.\n\nUser: Hello\n\nAssistant: Hi there\n\n"
        "User: Who are you\n\nAssistant:",
    ),
    (  # contents are trimmed (C whitespace only: the no-break space stays)
        [
            {"role": "system", "content": "\t sys \v\f\r\n"},
            _user("  Hello\n\n"),
            _assistant("\n Hi there \n\n"),
            _user("caf\u00e9\u00a0"),
        ],
        "System: sys\n\nUser: Hello\n\nAssistant: Hi there\n\nUser: caf\u00e9\u00a0\n\nAssistant:",
    ),
    (  # an assistant turn last: no generation prompt, as in llama.cpp
        [_user("Hello"), _assistant("Hi")],
        "User: Hello\n\nAssistant: Hi\n\n",
    ),
    (  # roles llama.cpp does not know are left out; a system message anywhere is kept
        [_user("a"), {"role": "tool", "content": "42"}, SYSTEM, _user("b")],
        "User: a\n\nSystem: You are a helpful assistant.\n\nUser: b\n\nAssistant:",
    ),
    (  # "Assistant:" only follows a user message that ends the conversation
        [_user("a"), SYSTEM],
        "User: a\n\nSystem: You are a helpful assistant.\n\n",
    ),
    ([], ""),
]


@pytest.mark.parametrize(("messages", "expected"), RWKV_CASES)
def test_rwkv_world_renders_as_llama_cpp(messages: list, expected: str) -> None:
    template = template_for(_rwkv_metadata())
    assert template.name == "rwkv-world"
    assert template.render(messages) == expected


def test_rwkv_world_generation_prompt_can_be_left_off() -> None:
    # llama.cpp ignores add_ass for this format; corral leaves "Assistant:" off when asked
    template = ChatTemplate.named(BuiltinTemplate.RWKV_WORLD)
    messages = [SYSTEM, _user("Hello")]
    rendered = template.render(messages, add_generation_prompt=False)
    assert rendered == "System: You are a helpful assistant.\n\nUser: Hello\n\n"


def test_rwkv_world_content_parts_and_none() -> None:
    template = ChatTemplate.named("rwkv-world")
    messages = [
        {"role": "user", "content": [{"type": "text", "text": " Hi "}, {"type": "image"}]},
        {"role": "assistant", "content": None},
        _user("x"),
    ]
    assert template.render(messages) == "User: Hi\n\nAssistant: \n\nUser: x\n\nAssistant:"


def test_llama_cpp_names_resolve_only_as_exact_values() -> None:
    assert llama_cpp_builtin("rwkv-world") is BuiltinTemplate.RWKV_WORLD
    assert llama_cpp_builtin("chatml") is BuiltinTemplate.CHATML
    # Jinja text that merely mentions a name, or another spelling, is a template
    assert llama_cpp_builtin("{# rwkv-world #}{{ messages[0].content }}") is None
    assert llama_cpp_builtin("RWKV-World") is None
    assert llama_cpp_builtin(" rwkv-world") is None
    assert {"rwkv-world", "chatml", "llama3", "gpt-oss"} <= LLAMA_CPP_TEMPLATE_NAMES


def test_chatml_name_renders_chatml() -> None:
    metadata = {"tokenizer.chat_template": "chatml", "tokenizer.ggml.tokens": ["a"]}
    template = template_for(metadata)
    assert template.name == "chatml"
    assert template.render([_user("Hi")]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("name", ["llama3", "llama2", "vicuna", "deepseek2", "gpt-oss"])
def test_other_llama_cpp_names_are_refused_not_rendered_as_text(name: str) -> None:
    with pytest.raises(TemplateError, match=f"llama.cpp's built-in format '{name}'.*rwkv-world"):
        template_for({"tokenizer.chat_template": name})


def test_world_vocabulary_without_a_template_gets_rwkv_world() -> None:
    metadata = _rwkv_metadata()
    del metadata["tokenizer.chat_template"]
    assert builtin_for(metadata) == BuiltinTemplate.RWKV_WORLD
    assert template_for(metadata).render([_user("Hi")]) == "User: Hi\n\nAssistant:"
    # RWKV models on another vocabulary (arwkv7, rwkv6qwen2: Qwen's) are not world ones
    assert builtin_for({"general.architecture": "rwkv6qwen2", "tokenizer.ggml.model": "gpt2"}) == (
        BuiltinTemplate.CHATML
    )


@pytest.fixture(scope="module")
def rwkv_chat_model(tmp_path_factory: pytest.TempPathFactory) -> corral.Model:
    """The tiny rwkv7 fixture written with the chat template llama.cpp's converter adds."""

    class Writer(tiny_rwkv.GGUFWriter):
        def add_tokenizer_model(self, model: str) -> None:
            super().add_tokenizer_model(model)
            self.add_chat_template("rwkv-world")

    path = Path(tmp_path_factory.mktemp("rwkv")) / "tiny-rwkv7-chat.gguf"
    original = tiny_rwkv.GGUFWriter
    tiny_rwkv.GGUFWriter = Writer
    try:
        write_tiny_rwkv(path, "rwkv7")
    finally:
        tiny_rwkv.GGUFWriter = original
    return corral.load(path, n_ctx=256)


def test_rwkv_model_chat_prompt_and_turn_end(rwkv_chat_model: corral.Model) -> None:
    model = rwkv_chat_model
    texts, _ = rwkv_vocab()
    eot = texts.index("\\n\\n")
    assert model.info.metadata["tokenizer.chat_template"] == "rwkv-world"
    messages = [SYSTEM, _user("hello"), _assistant("the world"), _user("hello")]
    prompt = model.render_chat(messages)
    assert prompt == (
        "System: You are a helpful assistant.\n\nUser: hello\n\nAssistant: the world\n\n"
        "User: hello\n\nAssistant:"
    )
    ids = model.chat_prompt_ids(messages)
    assert ids == model.tokenize(prompt, add_special=True, parse_special=True)
    assert ids[0] != 0 and ids.count(eot) == 4  # no BOS; each turn ends with "\n\n"
    # "\n\n" (the GGUF's eot_token_id, llama.cpp's EOT for this format) ends generation
    # and is not part of the answer
    assert model.tokenizer.eot_id == eot and model.tokenizer.is_eog(eot)
    hello = texts.index("hello")
    params = SamplingParams(temperature=0.0)
    result = model.generate_with(ids, 8, params, constraint=AllowedTokens({eot}, 8))
    assert (
        result.finish_reason is FinishReason.STOP and result.text == "" and result.token_ids == []
    )
    # after an answer token, the turn end still stops it
    answer = model.generate_with(ids + [hello], 8, params, constraint=AllowedTokens({eot}, 8))
    assert answer.finish_reason is FinishReason.STOP and answer.text == ""
    free = model.chat(messages, 16, temperature=0.0)
    assert eot not in free.token_ids


def test_show_prints_the_named_format_not_the_name() -> None:
    from corral.chat.builtin import builtin_source
    from corral.cli.show import _template

    source, name = _template(_rwkv_metadata())
    assert name == "rwkv-world" and source == builtin_source(BuiltinTemplate.RWKV_WORLD)
    # a llama.cpp name corral does not render: show shows what the file holds
    assert _template({"tokenizer.chat_template": "llama3"}) == ("llama3", None)
