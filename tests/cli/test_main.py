"""The `corral` entry point: fast --help without torch, exit statuses, one-line errors."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from corral.cli import main as main_module
from corral.cli.main import main
from corral.errors import CorralError


def test_importing_the_cli_loads_neither_torch_nor_the_model() -> None:
    code = (
        "import sys, corral.cli.main; "
        "print('torch' in sys.modules, 'corral.model' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_help_answers_fast() -> None:
    # Best of three: a busy CI machine can stall one start; a torch import never drops below 1s.
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "corral", "--help"], capture_output=True, text=True, check=True
        )
        best = min(best, time.perf_counter() - t0)
    assert "run" in out.stdout and "pull" in out.stdout
    assert best < 0.5, f"corral --help took {best:.2f}s"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("run", "pull", "list", "show", "rm", "cp"):
        assert f"    {verb} " in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: corral" in capsys.readouterr().out


def test_usage_error_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bad_parameter_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "m", "hi", "--top-p", "2"]) == 2
    assert "must be between 0.0 and 1.0" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("corral ")


def test_corral_error_is_one_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(args: object) -> int:
        raise CorralError("it broke\nacross lines")

    monkeypatch.setattr(main_module.models, "cmd_list", boom)
    assert main(["list"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "Error: it broke across lines\n"
    assert captured.out == ""


def test_ctrl_c_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(main_module.models, "cmd_list", interrupted)
    assert main(["list"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_python_dash_m_reports_an_error_status(tmp_path: object) -> None:
    env = {"CORRAL_HOME": str(tmp_path), "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-m", "corral", "show", "no-such-model"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("Error: model 'no-such-model' not found")
    assert "Traceback" not in out.stderr
