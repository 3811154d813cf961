"""`corral run` end to end on the real SmolLM2 file (CORRAL_TEST_MODELS=/tmp/models)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from corral.cli import run as run_cli
from corral.cli.main import main

pytestmark = pytest.mark.realmodel
Capsys = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def loaded() -> dict[tuple[Path, int | None], Any]:
    """Models loaded so far in this module: loading is tested once, not in every test."""
    return {}


@pytest.fixture
def cached_load(
    monkeypatch: pytest.MonkeyPatch, loaded: dict[tuple[Path, int | None], Any]
) -> None:
    real = run_cli.load_model

    def load(path: Path, n_ctx: int | None, threads: int | None) -> Any:
        if (path, n_ctx) not in loaded:
            loaded[path, n_ctx] = real(path, n_ctx, threads)
        return loaded[path, n_ctx]

    monkeypatch.setattr(run_cli, "load_model", load)


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_text(text: str) -> None:
        monkeypatch.setattr("sys.stdin", io.StringIO(text))

    set_text("")
    return set_text


def test_one_shot_answers_and_verbose_prints_rates(
    smollm2_path: Path, stdin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: Capsys,
) -> None:  # fmt: skip
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))
    argv = ["run", str(smollm2_path), "Say hi", "--temperature", "0", "--max-tokens", "8"]
    assert main([*argv, "--verbose"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip(), "no answer printed"
    assert captured.out.endswith("\n")
    err = captured.err
    assert re.search(r"^prompt eval count:\s+\d+ token\(s\)$", err, re.M)
    assert re.search(r"^prompt eval rate:\s+\d+\.\d\d tokens/s$", err, re.M)
    evals = re.search(r"^eval count:\s+(\d+) token\(s\)$", err, re.M)
    assert evals and 1 <= int(evals.group(1)) <= 8
    assert re.search(r"^eval rate:\s+\d+\.\d\d tokens/s$", err, re.M)
    assert re.search(r"^load duration:\s+\d", err, re.M)


def test_repl_multiline_set_and_clear(
    smollm2_path: Path, stdin: Any, cached_load: None, capsys: Capsys
) -> None:
    # What a greedy "hello" gets as the first message of a conversation...
    assert (
        main(["run", str(smollm2_path), "hello", "--temperature", "0", "--max-tokens", "12"]) == 0
    )
    fresh = capsys.readouterr().out

    # ...is what it gets after /clear, whatever came before.
    stdin('"""\nline one\nline two\n"""\n/set parameter temperature 0\n/clear\nhello\n/bye\n')
    assert main(["run", str(smollm2_path), "-i", "--max-tokens", "12"]) == 0
    out = capsys.readouterr().out
    before, after = out.split(">>> /clear\nCleared session context\n")
    assert before.startswith('>>> """\n... line one\n... line two\n... """\n')
    answer = before.split('... """\n')[1].split(">>> /set")[0]
    assert answer.strip(), "no answer to the multi-line message"
    assert "Set parameter 'temperature' to '0'" in before
    assert after == f">>> hello\n{fresh}\n>>> /bye\n"


def test_repl_remembers_the_conversation(
    smollm2_path: Path, stdin: Any, cached_load: None, capsys: Capsys
) -> None:
    # Same last message, with and without a history before it: the answers differ only if
    # the history reached the model.
    stdin("/set parameter temperature 0\nMy name is Ada.\nWhat is my name?\n")
    assert main(["run", str(smollm2_path), "-i", "--max-tokens", "16"]) == 0
    with_history = capsys.readouterr().out.split(">>> What is my name?\n")[1]
    assert main(["run", str(smollm2_path), "What is my name?", "--temperature", "0",
                 "--max-tokens", "16"]) == 0  # fmt: skip
    without = capsys.readouterr().out
    with_history = with_history.removesuffix(">>> \n").strip()
    assert with_history and without.strip()
    assert with_history != without.strip()
