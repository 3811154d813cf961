"""`corral run --format` and `--tool` on the tiny random model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest

from corral.cli.main import main
from corral.cli.structured import load_tool
from corral.errors import CorralError
from tiny_gguf import write_tiny

SCHEMA = {
    "type": "object",
    "properties": {"a": {"enum": ["x", "y"]}, "n": {"type": "integer", "maximum": 9}},
    "required": ["a", "n"],
}


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return write_tiny(tmp_path / "tiny.gguf", context=2048)


def test_format_schema_file(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    argv = ["run", str(tiny), "hi", "--format", str(schema), "--max-tokens", "60", "--seed", "1"]
    assert main(argv) == 0
    jsonschema.validate(json.loads(capsys.readouterr().out), SCHEMA)


def test_bad_format_and_tool_fail_before_loading(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "strin"}')
    assert main(["run", str(tiny), "hi", "--format", str(bad)]) == 1
    assert "Invalid type" in capsys.readouterr().err
    assert main(["run", str(tiny), "hi", "--tool", "no_such_module:f"]) == 1
    assert "no_such_module" in capsys.readouterr().err


def test_load_tool_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mytools_cli.py").write_text("def f(x: int) -> int:\n    return x + 1\n")
    monkeypatch.chdir(tmp_path)
    assert load_tool("mytools_cli:f")(1) == 2
    assert load_tool(str(tmp_path / "mytools_cli.py") + ":f")(2) == 3
    for bad in ("nocolon", "mytools_cli:g", ":f"):
        with pytest.raises(CorralError):
            load_tool(bad)


def test_tool_runs_in_a_one_shot_answer(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (tmp_path / "mytools_cli2.py").write_text("def ping() -> str:\n    return 'pong'\n")
    monkeypatch.chdir(tmp_path)
    argv = ["run", str(tiny), "hi", "--tool", "mytools_cli2:ping", "--max-tokens", "8"]
    assert main(argv) == 0  # the random model may or may not call; the loop must not fail
