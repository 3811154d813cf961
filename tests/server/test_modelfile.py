"""Modelfile parsing, creating models from it, and `corral create`."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.cli.main import main
from corral.server.modelfile import Modelfile, ModelfileError, create_model, parse_modelfile
from corral.store import Store

FULL = '''# a comment
FROM smollm2:latest
parameter temperature 0.3
PARAMETER stop "<|im_end|>"
PARAMETER stop ###
PARAMETER num_ctx 2048
TEMPLATE """{% for m in messages %}{{ m.content }}
{% endfor %}"""
SYSTEM You are a pirate.
MESSAGE user "Hi \\"there\\""
MESSAGE assistant """Arr."""
LICENSE """MIT
text"""
'''


def test_parse_everything() -> None:
    mf = parse_modelfile(FULL)
    assert mf.from_ == "smollm2:latest"
    assert mf.parameters == {"temperature": 0.3, "stop": ["<|im_end|>", "###"], "num_ctx": 2048}
    assert mf.template == "{% for m in messages %}{{ m.content }}\n{% endfor %}"
    assert mf.system == "You are a pirate."
    assert mf.messages == [
        {"role": "user", "content": 'Hi "there"'},
        {"role": "assistant", "content": "Arr."},
    ]
    assert mf.license == ["MIT\ntext"]
    # what /api/show writes back reads the same
    again = parse_modelfile(mf.render("x"))
    assert again.parameters == mf.parameters and again.template == mf.template
    assert again.messages == mf.messages and again.system == mf.system


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("PARAMETER top_k 3", "no FROM"),
        ("FROM x\nPARAMETER top_k many", "line 2"),
        ("FROM x\nPARAMETER nope 1", "unknown parameter"),
        ('FROM x\nTEMPLATE """never closed', "unterminated"),
        ("FROM x\nMESSAGE wizard hi", "role"),
        ("FROM x\nADAPTER", "line 2: missing value"),
        ("FROM x\nQUANTIZE q4", "unknown command"),
        ('FROM x\nSYSTEM """a""" trailing', "after the closing quote"),
        ("FROM", "missing value"),
    ],
)
def test_parse_errors(text: str, needle: str) -> None:
    with pytest.raises(ModelfileError, match=needle):
        parse_modelfile(text)


def test_create_inherits_and_overrides(home: Path) -> None:
    store = Store(home)
    create_model(store, "a", Modelfile("tiny", {"temperature": 0.1, "top_k": 5}, "T", "S"))
    ref = create_model(store, "b:v2", Modelfile("a", {"temperature": 0.9}))
    mf = Modelfile.from_manifest(ref.manifest)
    assert mf.parameters == {"temperature": 0.9, "top_k": 5}
    assert (mf.template, mf.system, mf.from_) == ("T", "S", "a:latest")
    assert ref.digest == store.resolve("tiny").digest  # no bytes copied


def test_cli_create(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                    tiny_files: dict[str, Path], tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setenv("CORRAL_HOME", str(home))
    (tmp_path / "Modelfile").write_text("FROM tiny\nSYSTEM hello\n")
    assert main(["create", "greeter", "-f", str(tmp_path / "Modelfile")]) == 0
    assert "created greeter:latest" in capsys.readouterr().out
    assert Modelfile.from_manifest(Store(home).resolve("greeter").manifest).system == "hello"
    # FROM a relative .gguf path: relative to the Modelfile
    folder = tiny_files["tiny"].parent
    (folder / "Modelfile").write_text(f"FROM ./{tiny_files['tiny'].name}\nPARAMETER seed 1\n")
    assert main(["create", "fromfile", "-f", str(folder / "Modelfile")]) == 0
    assert Store(home).resolve("fromfile").manifest["modelfile"]["parameters"] == {"seed": 1}
    (tmp_path / "Bad").write_text("FROM tiny\nPARAMETER seed x\n")
    assert main(["create", "bad", "-f", str(tmp_path / "Bad")]) == 1
    assert "line 2" in capsys.readouterr().err
    assert main(["create", "bad", "-f", str(tmp_path / "missing")]) == 1
