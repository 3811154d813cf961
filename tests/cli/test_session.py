"""Session details the REPL tests don't reach: timings, fitting the context, failures."""

from __future__ import annotations

import io
from typing import Any

import pytest

from corral.cli.session import Session
from corral.errors import ContextOverflowError

FakeModel = Any  # tests/cli/conftest.py: FakeModel


def make(model: FakeModel, **kw: Any) -> tuple[Session, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Session(model, out=out, err=err, **kw), out, err


def test_verbose_prints_ollama_style_timings_to_stderr(fake_model: FakeModel) -> None:
    session, out, err = make(fake_model, verbose=True)
    session.ask("hi")
    session.ask("again")
    first, second = err.getvalue().split("total duration:")[1:]
    assert "load duration:        1.50s" in first  # load time counts once, then 0
    assert "load duration:        0.0µs" in second
    assert "prompt eval count:    5 token(s)" in first
    assert "prompt eval rate:     10.00 tokens/s" in first
    assert "eval count:           4 token(s)" in first
    assert "eval rate:            2.00 tokens/s" in first
    assert "tokens/s" not in out.getvalue()


def test_quiet_prints_no_timings(fake_model: FakeModel) -> None:
    session, _, err = make(fake_model)
    session.ask("hi")
    assert err.getvalue() == ""
    session.set_option("verbose")
    session.ask("hi")
    assert "eval rate" in err.getvalue()


def test_interrupted_answer_prints_no_timings(fake_model: FakeModel) -> None:
    fake_model.replies = [["partial", KeyboardInterrupt()]]
    session, out, err = make(fake_model, verbose=True)
    answer = session.ask("hi")
    assert answer.interrupted and answer.text == "partial"
    assert out.getvalue() == "partial\n"
    assert err.getvalue() == ""


def test_old_turns_are_dropped_to_leave_room_for_the_answer(fake_model: FakeModel) -> None:
    # 64-token context, a quarter kept free: the conversation may use 48 tokens (chars + 2).
    session, _, err = make(fake_model)
    fake_model.replies = [["a" * 10], ["b" * 10], ["c"]]
    session.ask("x" * 10)  # 12 + 12
    session.ask("y" * 10)  # 48 with this message: still fits
    assert len(fake_model.calls[1]["ids"]) == 36
    session.ask("z" * 10)  # 60: the first turn must go
    assert [m["content"][0] for m in session.messages] == ["y", "b", "z", "c"]
    assert len(fake_model.calls[2]["ids"]) == 36
    assert "forgot the 2 oldest message(s)" in err.getvalue()


def test_a_prompt_too_long_on_its_own_fails_and_is_forgotten(fake_model: FakeModel) -> None:
    session, _, _ = make(fake_model)
    session.ask("short")

    def overflow(*args: Any, **kw: Any) -> None:
        raise ContextOverflowError("prompt has 200 tokens but the context holds 64")

    fake_model.generate = overflow
    with pytest.raises(ContextOverflowError):
        session.ask("x" * 200)
    assert [m["content"] for m in session.messages] == ["short", "ok"]


def test_show_parameters_lists_what_was_set(fake_model: FakeModel) -> None:
    session, _, _ = make(fake_model, params={"temperature": 0.0, "stop": ["a", "b"]})
    text = session.show("parameters")
    assert "temperature        0" in text and "stop               a b" in text
    assert "Context size in use: 64" in text


def test_num_ctx_without_a_loader_is_refused(fake_model: FakeModel) -> None:
    from corral.errors import CorralError

    session, _, _ = make(fake_model)
    with pytest.raises(CorralError, match="cannot change the context size"):
        session.set_param("num_ctx", 128)
    session.set_param("num_ctx", 64)  # the size in use: nothing to reload
