"""`corral pull`, `list`, `rm`, `cp` and `show` against a private store and tiny GGUF files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.cli.main import main
from corral.store import Store

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def stored(store: Store, make_gguf: Callable[..., Path]) -> Store:
    """A store holding 'tiny:latest', pulled from a local file."""
    store.add_file(make_gguf(), "tiny")
    return store


def test_list_empty_store_prints_only_the_header(store: Store, capsys: Capsys) -> None:
    assert main(["list"]) == 0
    assert capsys.readouterr().out.split() == ["NAME", "ID", "SIZE", "MODIFIED"]


def test_pull_local_file_then_list(
    store: Store, make_gguf: Callable[..., Path], capsys: Capsys
) -> None:
    path = make_gguf()
    assert main(["pull", str(path), "--name", "mine:v1"]) == 0
    out = capsys.readouterr().out
    ref = store.resolve("mine:v1")
    assert out.startswith("success: mine:v1")
    assert ref.digest is not None and ref.digest[7:19] in out

    assert main(["list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    # columns line up under their headers
    assert row.index(ref.digest[7:19]) == header.index("ID")
    assert row.split()[:2] == ["mine:v1", ref.digest[7:19]]
    assert "Less than a minute ago" in row
    assert row[header.index("SIZE") :].startswith(f"{ref.size} B" if ref.size < 1000 else "")


def test_pull_unknown_name_suggests_known_models(store: Store, capsys: Capsys) -> None:
    assert main(["pull", "smollm"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: cannot pull 'smollm'; did you mean smollm2?")
    assert err.count("\n") == 1


def test_rm_removes_and_reports(stored: Store, capsys: Capsys) -> None:
    assert main(["rm", "tiny"]) == 0
    assert capsys.readouterr().out == "deleted 'tiny:latest'\n"
    assert stored.list() == []


def test_rm_unknown_prints_closest_match_and_goes_on(stored: Store, capsys: Capsys) -> None:
    stored.copy("tiny", "other")
    assert main(["rm", "tinny", "other"]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "Error: model 'tinny' not found; did you mean tiny:latest? (corral pull NAME fetches one)\n"
    )
    assert captured.out == "deleted 'other:latest'\n"  # the second name was still removed
    assert stored.names() == ["tiny:latest"]


def test_cp_gives_a_second_name(stored: Store, capsys: Capsys) -> None:
    assert main(["cp", "tiny", "copy:2"]) == 0
    assert capsys.readouterr().out == "copied 'tiny' to 'copy:2'\n"
    assert stored.resolve("copy:2").path == stored.resolve("tiny").path


def test_cp_missing_source_is_an_error(stored: Store, capsys: Capsys) -> None:
    assert main(["cp", "nope", "x"]) == 1
    assert capsys.readouterr().err.startswith("Error: model 'nope' not found")


def test_show_reports_the_model(stored: Store, capsys: Capsys) -> None:
    assert main(["show", "tiny"]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert ["architecture", "llama"] in lines
    assert ["parameters", "56"] in lines  # 3x8 + 8 + 3x8
    assert ["context", "length", "128"] in lines
    assert ["embedding", "length", "8"] in lines
    assert ["quantization", "F32"] in lines
    assert ["F32", "2"] in lines and ["F16", "1"] in lines
    assert ["format", "from", "the", "model", "file"] in lines
    assert ["stop", "<|end|>"] in lines
    assert out.splitlines()[-1].strip() == "mit"


def test_show_by_path_works_without_the_store(
    store: Store, make_gguf: Callable[..., Path], capsys: Capsys
) -> None:
    assert main(["show", str(make_gguf(license=None)), "--license"]) == 0
    assert capsys.readouterr().out == "(no license in the model file)\n"


def test_show_template_prints_the_file_template(
    stored: Store, tiny_template: str, capsys: Capsys
) -> None:
    assert main(["show", "tiny", "--template"]) == 0
    assert capsys.readouterr().out == tiny_template + "\n"


def test_show_template_falls_back_to_the_builtin_choice(
    store: Store, make_gguf: Callable[..., Path], capsys: Capsys
) -> None:
    path = make_gguf(template=None)
    assert main(["show", str(path)]) == 0
    assert "chatml (built in)" in capsys.readouterr().out
    assert main(["show", str(path), "--template"]) == 0
    assert "<|im_start|>" in capsys.readouterr().out


def test_show_parameters_and_modelfile(stored: Store, capsys: Capsys) -> None:
    assert main(["show", "tiny", "--parameters"]) == 0
    assert capsys.readouterr().out == 'stop "<|end|>"\n'
    assert main(["show", "tiny", "--modelfile"]) == 0
    out = capsys.readouterr().out
    assert f"FROM {stored.resolve('tiny').path}\n" in out
    assert 'PARAMETER stop "<|end|>"' in out
    assert 'LICENSE """mit"""' in out


def test_show_flags_are_exclusive(stored: Store, capsys: Capsys) -> None:
    assert main(["show", "tiny", "--template", "--license"]) == 2


def test_show_unknown_model_suggests(stored: Store, capsys: Capsys) -> None:
    assert main(["show", "tiy"]) == 1
    err = capsys.readouterr().err
    assert "did you mean tiny:latest?" in err and err.count("\n") == 1


def test_show_unreadable_file_is_a_one_line_error(
    store: Store, tmp_path: Path, capsys: Capsys
) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_text(json.dumps({"not": "gguf"}))
    assert main(["show", str(bad)]) == 1
    assert (
        capsys.readouterr().err == "Error: bad.gguf: not a GGUF file, it looks like a JSON file\n"
    )
