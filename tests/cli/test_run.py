"""`corral run` wiring without a real model: prompts from args and stdin, auto-pull, -i."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral.cli import models as models_cli
from corral.cli import run as run_cli
from corral.cli.main import main
from corral.store import Store

Capsys = pytest.CaptureFixture[str]


class Loads:
    """Replaces run.load_model: records what was loaded, returns stand-in models."""

    def __init__(self, model_class: type) -> None:
        self.model_class = model_class
        self.calls: list[tuple[Path, int | None, int | None]] = []
        self.models: list[Any] = []

    def __call__(self, path: Path, n_ctx: int | None, threads: int | None) -> Any:
        self.calls.append((path, n_ctx, threads))
        model = self.model_class(path=path, n_ctx=n_ctx or 64)
        self.models.append(model)
        return model


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch, fake_model_class: type) -> Loads:
    loads = Loads(fake_model_class)
    monkeypatch.setattr(run_cli, "load_model", loads)
    return loads


def set_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_prompt_words_are_joined_and_answered(
    store: Store, make_gguf: Callable[..., Path], loads: Loads, monkeypatch: pytest.MonkeyPatch,
    capsys: Capsys,
) -> None:  # fmt: skip
    set_stdin(monkeypatch, "")
    path = make_gguf()
    argv = ["run", str(path), "why", "is", "the sky blue?", "--temperature", "0", "--seed", "3"]
    assert main([*argv, "--max-tokens", "9", "--ctx", "32", "--threads", "2"]) == 0
    assert capsys.readouterr().out == "ok\n"
    assert loads.calls == [(path.resolve(), 32, 2)]
    call = loads.models[0].calls[0]
    assert call["temperature"] == 0.0 and call["seed"] == 3 and call["max_tokens"] == 9
    # one user message: "why is the sky blue?" (20 characters + 2 per message, see FakeModel)
    assert len(call["ids"]) == 22


def test_piped_stdin_is_the_prompt(
    store: Store, make_gguf: Callable[..., Path], loads: Loads, monkeypatch: pytest.MonkeyPatch,
    capsys: Capsys,
) -> None:  # fmt: skip
    set_stdin(monkeypatch, "some text\n")
    assert main(["run", str(make_gguf()), "summarise", "--system", "be brief"]) == 0
    call = loads.models[0].calls[0]
    # system (8 + 2) + user "some text\n\nsummarise" (20 + 2)
    assert len(call["ids"]) == 32


def test_no_prompt_and_nothing_piped_is_an_error(
    store: Store, make_gguf: Callable[..., Path], loads: Loads, monkeypatch: pytest.MonkeyPatch,
    capsys: Capsys,
) -> None:  # fmt: skip
    set_stdin(monkeypatch, "  \n")
    assert main(["run", str(make_gguf())]) == 1
    assert capsys.readouterr().err.startswith("Error: no prompt")
    assert loads.calls == []  # failed before loading anything


def test_unknown_model_suggests_and_loads_nothing(
    store: Store, make_gguf: Callable[..., Path], loads: Loads, monkeypatch: pytest.MonkeyPatch,
    capsys: Capsys,
) -> None:  # fmt: skip
    store.add_file(make_gguf(), "tiny")
    set_stdin(monkeypatch, "")
    assert main(["run", "tinyy", "hi"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "Error: model 'tinyy' not found; did you mean tiny:latest? (corral pull NAME fetches one)\n"
    )
    assert loads.calls == []


def test_known_model_missing_from_the_store_is_pulled_first(
    store: Store, make_gguf: Callable[..., Path], loads: Loads, monkeypatch: pytest.MonkeyPatch,
    capsys: Capsys,
) -> None:  # fmt: skip
    pulled: list[str] = []

    def fake_pull(spec: str, store: Store, name: str | None = None) -> Any:
        pulled.append(spec)
        return store.add_file(make_gguf(), "smollm2")

    monkeypatch.setattr(models_cli, "pull_with_progress", fake_pull)
    set_stdin(monkeypatch, "")
    assert main(["run", "smollm2", "hi"]) == 0
    assert pulled == ["smollm2"]
    assert loads.calls[0][0] == store.resolve("smollm2").path
    assert "pulling smollm2" in capsys.readouterr().err
    # stored now: a second run does not pull again
    assert main(["run", "smollm2", "hi"]) == 0
    assert pulled == ["smollm2"]


def test_interactive_flag_reads_repl_lines_from_stdin(
    store: Store, make_gguf: Callable[..., Path], loads: Loads, monkeypatch: pytest.MonkeyPatch,
    capsys: Capsys,
) -> None:  # fmt: skip
    set_stdin(monkeypatch, "hello\n/set parameter num_ctx 128\nagain\n/bye\n")
    assert main(["run", str(make_gguf()), "-i"]) == 0
    out = capsys.readouterr().out
    assert out == (
        ">>> hello\nok\n\n>>> /set parameter num_ctx 128\nSet parameter 'num_ctx' to '128'\n"
        ">>> again\nok\n\n>>> /bye\n"
    )
    # num_ctx reloaded the model; the conversation carried over to it
    assert [c[1] for c in loads.calls] == [None, 128]
    assert len(loads.models[1].calls[0]["ids"]) == (5 + 2) + (2 + 2) + (5 + 2)
