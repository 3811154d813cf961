"""Answering: cited prompts, fitting the context, citations mapped back to sources."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from corral.rag.answer import ask, build_messages, cited, fit_sources
from corral.rag.types import Hit


def hits() -> list[Hit]:
    return [
        Hit(1, "Zebras run fast.", "/d/b.txt", 1, 1, "", 0.03),
        Hit(2, "They eat fish.", "/d/a.md", 7, 9, "Cats > Food", 0.02),
        Hit(3, "Birds fly.", "/d/c.rst", 4, 4, "Birds", 0.01),
    ]


class StubChat:
    """Records the prompt; answers with a fixed text, streamed word by word."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.messages: list[dict[str, Any]] = []

    def chat_prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        return [0] * sum(len(m["content"].split()) for m in messages)

    def chat(self, messages, max_tokens=512, **kw):  # noqa: ANN001, ANN201
        self.messages = messages
        assert kw.get("stream") is True
        return iter(SimpleNamespace(text=w, eog=False) for w in self.reply.split(" ") if w)


def test_prompt_numbers_sources_with_locations() -> None:
    user = build_messages("What do cats eat?", hits())[1]["content"]
    assert "[1] /d/b.txt:1\nZebras run fast." in user
    assert "[2] /d/a.md:7-9 (Cats > Food)\nThey eat fish." in user
    assert user.rstrip().endswith("Question: What do cats eat?")


def test_citations_map_to_sources() -> None:
    assert cited("Fish [2]. Also [1, 2] and [9] and [3][2].", hits()) == [2, 1, 3]


def test_ask_streams_and_cites() -> None:
    model = StubChat("Cats eat fish [2].")
    pieces: list[str] = []
    result = ask(model, "What do cats eat?", hits(), n_ctx=4096, on_text=pieces.append)
    assert "".join(pieces) == result.text == "Catseatfish[2]."  # the stub streams words
    assert result.citations == [2]
    assert "They eat fish." in model.messages[1]["content"]
    assert "*[2] /d/a.md:7-9" in result.sources_text()
    assert result.to_dict()["sources"][1]["n"] == 2


def test_sources_dropped_to_fit_context() -> None:
    def tokens(messages):  # noqa: ANN001, ANN202
        return sum(len(m["content"].split()) for m in messages)

    full = tokens(build_messages("q", hits()))
    _, kept = fit_sources("q", hits(), tokens, full - 1)
    assert [h.id for h in kept] == [1, 2]  # the lowest-ranked source went first
    with pytest.raises(Exception, match="prompt tokens"):
        fit_sources("q", hits(), tokens, 3)


@pytest.mark.realmodel
def test_real_smollm2_answers_over_sources(smollm2_path) -> None:  # noqa: ANN001
    import corral

    model = corral.load(smollm2_path, n_ctx=1024)
    result = ask(model, "What do cats eat?", hits(), n_ctx=1024, max_tokens=24, temperature=0)
    assert result.text.strip()
    assert len(result.sources) == 3
    assert all(1 <= n <= 3 for n in result.citations)  # only real sources are cited
    prompt = model.render_chat(build_messages("What do cats eat?", result.sources))
    assert "They eat fish." in prompt and "[2] /d/a.md:7-9" in prompt
