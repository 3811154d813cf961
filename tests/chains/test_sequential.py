"""Sequential chains: outputs feed later prompts, wiring is checked before any model call."""

from __future__ import annotations

from typing import Any

import pytest

from corral.chains import FunctionStep, LLMStep, SequentialChain
from corral.errors import InvalidRequestError


class Event:
    def __init__(self, text: str, eog: bool = False) -> None:
        self.text, self.eog = text, eog


class EchoModel:
    """Answers each prompt with "<answer N>" in two streamed pieces plus an EOG token."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.messages: list[list[dict[str, Any]]] = []
        self.raw: list[str] = []

    def chat(self, messages: list[dict[str, Any]], max_tokens: int = 512, **kw: Any) -> Any:
        assert kw.get("stream") is True
        self.messages.append(messages)
        self.prompts.append(messages[-1]["content"])
        n = len(self.prompts)
        return iter([Event("<answer "), Event(f"{n}>"), Event("<|im_end|>", eog=True)])

    def generate(self, prompt: str, max_tokens: int = 256, **kw: Any) -> Any:
        self.raw.append(prompt)
        return iter([Event(" raw")])


def test_output_of_one_step_is_a_variable_of_the_next() -> None:
    chain = SequentialChain([
        LLMStep("Outline a talk on {{ topic }}.", output="outline"),
        LLMStep("Write the talk from:\n{{ outline }}\nfor {{ audience }}", output="talk"),
    ])  # fmt: skip
    assert chain.input_variables == {"topic", "audience"}
    model = EchoModel()
    out = chain.run(model, topic="tides", audience="kids")
    assert model.prompts == [
        "Outline a talk on tides.",
        "Write the talk from:\n<answer 1>\nfor kids",
    ]
    assert out == {"topic": "tides", "audience": "kids", "outline": "<answer 1>",
                   "talk": "<answer 2>"}  # fmt: skip
    assert chain(EchoModel(), topic="t", audience="a") == "<answer 2>"


def test_only_the_last_step_streams_and_eog_text_is_dropped() -> None:
    chain = SequentialChain([LLMStep("a {{ x }}", output="y"), LLMStep("b {{ y }}", output="z")])
    pieces: list[str] = []
    chain.run(EchoModel(), {"x": 1}, on_text=pieces.append)
    assert pieces == ["<answer ", "2>"]


def test_system_message_function_step_and_raw_generate() -> None:
    chain = SequentialChain([
        LLMStep("List: {{ x }}", output="items", system="Be brief."),
        FunctionStep(lambda items: items.upper(), ["items"], "loud"),
        LLMStep("Continue {{ loud }}", output="end", use_chat=False),
    ])  # fmt: skip
    model = EchoModel()
    out = chain.run(model, x="q")
    assert model.messages[0][0] == {"role": "system", "content": "Be brief."}
    assert out["loud"] == "<ANSWER 1>"
    assert model.raw == ["Continue <ANSWER 1>"] and out["end"] == "raw"


def test_missing_input_is_reported_before_any_call() -> None:
    chain = SequentialChain([LLMStep("{{ a }} {{ b }}", output="c")])
    model = EchoModel()
    with pytest.raises(InvalidRequestError, match="not given: b"):
        chain.run(model, a=1)
    assert model.prompts == []


def test_wiring_errors_at_construction() -> None:
    with pytest.raises(InvalidRequestError, match="two steps write"):
        SequentialChain([LLMStep("{{ a }}", output="x"), LLMStep("{{ x }}", output="x")])
    with pytest.raises(InvalidRequestError, match="no source: typo"):
        SequentialChain([LLMStep("{{ a }}", output="x"), LLMStep("{{ typo }}", output="y")],
                        inputs=["a"])  # fmt: skip
    with pytest.raises(InvalidRequestError, match="overwrite chain inputs: a"):
        SequentialChain([LLMStep("{{ a }}", output="a")], inputs=["a"])
    with pytest.raises(InvalidRequestError):
        SequentialChain([])


def test_chain_on_a_real_corral_model(recorder: Any) -> None:
    """The same wiring through corral.Model.chat on a tiny random model."""
    model = recorder()
    chain = SequentialChain([
        LLMStep("Say {{ word }}", output="first", max_tokens=5, sampling={"temperature": 0}),
        LLMStep("Echo {{ first }}", output="second", max_tokens=5, sampling={"temperature": 0}),
    ])  # fmt: skip
    out = chain.run(model, word="hello")
    assert model.prompts == ["Say hello", f"Echo {out['first']}"]
    assert isinstance(out["second"], str)
