"""The REPL without a model: command parsing, multi-line input, the loop, Ctrl-C."""

from __future__ import annotations

import io
from typing import Any

import pytest

from corral.cli.repl import (
    CONTINUATION,
    PROMPT,
    Command,
    Repl,
    StreamReader,
    parse_command,
    read_command,
)
from corral.cli.session import Session

FakeModel = Any  # tests/cli/conftest.py: FakeModel


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", Command("empty")),
        ("   ", Command("empty")),
        ("hello there", Command("prompt", value="hello there")),
        ("/bye", Command("bye")),
        ("/exit", Command("bye")),
        ("/BYE", Command("bye")),
        ("/clear", Command("clear")),
        ("/?", Command("help")),
        ("/? shortcuts", Command("help", name="shortcuts")),
        ("/help set", Command("help", name="set")),
        ("/set", Command("help", name="set")),
        ("/set parameter", Command("help", name="parameters")),
        ("/set parameter temperature 0", Command("set_parameter", "temperature", 0.0)),
        ("/set parameter TOP_K 12", Command("set_parameter", "top_k", 12)),
        ("/set parameter num_ctx 512", Command("set_parameter", "num_ctx", 512)),
        ("/set parameter num_predict -1", Command("set_parameter", "num_predict", -1)),
        ("/set parameter seed 42", Command("set_parameter", "seed", 42)),
        ("/set parameter stop <|end|> '###  x'", Command("set_parameter", "stop", ["<|end|>", "###  x"])),
        ("/set system You are  terse.", Command("set_system", value="You are  terse.")),
        ('/set system "Be brief."', Command("set_system", value="Be brief.")),
        ("/system Talk like a pirate", Command("set_system", value="Talk like a pirate")),
        ("/set verbose", Command("set_option", "verbose")),
        ("/set nowordwrap", Command("set_option", "nowordwrap")),
        ("/show info", Command("show", "info")),
        ("/show Template", Command("show", "template")),
        ("/show", Command("help", name="show")),
    ],
)  # fmt: skip
def test_parse_command(line: str, expected: Command) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/frobnicate", "Unknown command '/frobnicate'. Type /? for help"),
        ("/set colour red", "Unknown command '/set colour'. Type /? for help"),
        ("/show weights", "Unknown command '/show weights'. Type /? for help"),
        ("/set parameter temperature", "Usage: /set parameter <name> <value>"),
        ("/set parameter temprature 1", "Couldn't set parameter: unknown parameter 'temprature'; did you mean temperature?"),
        ("/set parameter top_k many", "Couldn't set parameter: top_k: 'many' is not an integer"),
        ("/set parameter top_p 1.5", "Couldn't set parameter: top_p: must be between 0.0 and 1.0, not 1.5"),
        ("/set parameter temperature -1", "Couldn't set parameter: temperature: must be at least 0.0, not -1"),
        ("/set parameter num_ctx 4", "Couldn't set parameter: num_ctx: must be at least 8, not 4"),
        ("/set parameter temperature nan", "Couldn't set parameter: temperature: 'nan' is not a finite number"),
        ("/set system", "Usage: /set system <message>"),
    ],
)  # fmt: skip
def test_parse_command_errors(line: str, message: str) -> None:
    assert parse_command(line) == Command("error", value=message)


class Lines:
    """A LineReader over a list; records the prompts it was given."""

    def __init__(self, *lines: str | BaseException) -> None:
        self.lines = list(lines)
        self.prompts: list[str] = []

    def read(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.lines:
            raise EOFError
        line = self.lines.pop(0)
        if isinstance(line, BaseException):
            raise line
        return line


def test_multiline_message_between_fences() -> None:
    reader = Lines('"""', "line one", "", "  line two", '"""', "next")
    assert read_command(reader) == Command("prompt", value="line one\n\n  line two")
    assert reader.prompts == [PROMPT] + [CONTINUATION] * 4
    assert read_command(reader) == Command("prompt", value="next")


def test_multiline_keeps_text_beside_the_fences() -> None:
    reader = Lines('"""first', "/not a command", 'last"""')
    assert read_command(reader) == Command("prompt", value="first\n/not a command\nlast")


def test_fenced_text_on_one_line() -> None:
    assert read_command(Lines('"""just this"""')) == Command("prompt", value="just this")
    assert read_command(Lines('""""""')) == Command("empty")


def test_multiline_system_message() -> None:
    reader = Lines('/set system """You are', 'a pirate."""')
    assert read_command(reader) == Command("set_system", value="You are\na pirate.")


def test_end_of_input_inside_a_fence_ends_the_session() -> None:
    with pytest.raises(EOFError):
        read_command(Lines('"""', "unfinished"))


def test_stream_reader_echoes_piped_input() -> None:
    out = io.StringIO()
    reader = StreamReader(io.StringIO("hello\r\nbye\n"), out)
    assert reader.read(PROMPT) == "hello"
    assert reader.read(PROMPT) == "bye"
    with pytest.raises(EOFError):
        reader.read(PROMPT)
    assert out.getvalue() == ">>> hello\n>>> bye\n>>> "


def run_repl(model: FakeModel, *lines: str | BaseException, **kw: Any) -> tuple[Session, str]:
    out = io.StringIO()
    session = Session(model, out=out, err=out, **kw)
    assert Repl(session, Lines(*lines), out).run() == 0
    return session, out.getvalue()


def test_repl_keeps_the_conversation(fake_model: FakeModel) -> None:
    fake_model.replies = [["Hi", " there"], ["Fine."]]
    session, out = run_repl(fake_model, "hello", "how are you?", "/bye", "never read")
    assert session.messages == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "how are you?"},
        {"role": "assistant", "content": "Fine."},
    ]
    assert out == "Hi there\n\nFine.\n\n"


def test_repl_system_message_goes_first(fake_model: FakeModel) -> None:
    session, out = run_repl(fake_model, "/set system Be brief.", "hi")
    assert "Set system message." in out
    assert session.conversation()[0] == {"role": "system", "content": "Be brief."}
    assert session.show("system") == "Be brief."


def test_repl_clear_forgets_the_conversation(fake_model: FakeModel) -> None:
    session, out = run_repl(fake_model, "/system x", "hello", "/clear", "again")
    assert "Cleared session context" in out
    assert session.messages == [
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "ok"},
    ]
    assert session.system == "x"  # /clear keeps the system message


def test_repl_parameters_reach_generate(fake_model: FakeModel) -> None:
    _, out = run_repl(
        fake_model, "/set parameter temperature 0", "/set parameter num_predict 7",
        "/set parameter stop END", "q",
    )  # fmt: skip
    assert "Set parameter 'temperature' to '0'" in out
    call = fake_model.calls[0]
    assert call["temperature"] == 0.0 and call["stop"] == ["END"]
    assert call["max_tokens"] == 7
    assert "num_predict" not in call


def test_repl_without_num_predict_answers_until_the_context_fills(fake_model: FakeModel) -> None:
    run_repl(fake_model, "q")
    assert fake_model.calls[0]["max_tokens"] == fake_model.info.n_ctx


def test_repl_num_ctx_reloads_the_model(
    fake_model: FakeModel, fake_model_class: type[FakeModel]
) -> None:
    loads: list[int] = []

    def loader(n_ctx: int) -> FakeModel:
        loads.append(n_ctx)
        return fake_model_class(path=fake_model.path, n_ctx=n_ctx)

    session, _ = run_repl(fake_model, "/set parameter num_ctx 128", "hi", loader=loader)
    assert loads == [128]
    assert session.model.info.n_ctx == 128
    assert session.model.calls and not fake_model.calls


def test_repl_errors_and_help_keep_the_session_going(fake_model: FakeModel) -> None:
    _, out = run_repl(fake_model, "/nope", "/?", "/set parameter", "hi")
    assert "Unknown command '/nope'. Type /? for help" in out
    assert "/set            Set session variables" in out
    assert "/set parameter temperature" in out
    assert out.endswith("ok\n\n\n")


def test_ctrl_c_during_an_answer_keeps_the_partial_answer(fake_model: FakeModel) -> None:
    fake_model.replies = [["Once upon", " a time", KeyboardInterrupt()], ["Done."]]
    session, out = run_repl(fake_model, "tell a story", "go on")
    assert session.messages[1] == {"role": "assistant", "content": "Once upon a time"}
    assert session.messages[3] == {"role": "assistant", "content": "Done."}
    assert out == "Once upon a time\n\nDone.\n\n\n"
    assert fake_model.closed == 2


def test_ctrl_c_before_any_text_forgets_the_question(fake_model: FakeModel) -> None:
    fake_model.replies = [[KeyboardInterrupt()]]
    session, _ = run_repl(fake_model, "slow question")
    assert session.messages == []


def test_ctrl_c_at_the_prompt_twice_exits(fake_model: FakeModel) -> None:
    session, out = run_repl(fake_model, KeyboardInterrupt(), KeyboardInterrupt(), "not read")
    assert "Use Ctrl + d or /bye to exit" in out
    assert session.messages == []


def test_ctrl_c_then_input_resets_the_count(fake_model: FakeModel) -> None:
    session, _ = run_repl(fake_model, KeyboardInterrupt(), "hi", KeyboardInterrupt(), "again")
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["hi", "again"]


def test_ctrl_c_abandons_a_multiline_message(fake_model: FakeModel) -> None:
    session, _ = run_repl(fake_model, '"""', "half", KeyboardInterrupt(), "whole")
    assert session.messages[0] == {"role": "user", "content": "whole"}
