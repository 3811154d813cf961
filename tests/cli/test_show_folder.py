"""`corral show` on a folder model (a sentence-transformers / Hugging Face encoder such as
minilm): by store name and by path, every flag, and a folder that is not a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.cli.main import main
from corral.store import Store
from tiny_encoders import N_CTX, N_EMBD, random_state, write_folder

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A tiny bert sentence-transformers folder: CLS pooling, 48-token cap, a model card."""
    path = write_folder(tmp_path / "tiny-st", "bert", random_state("bert"), "cls", max_seq=48)
    (path / "README.md").write_text("---\nlanguage: en\nlicense: apache-2.0\n---\n# tiny\n")
    return path


def expected_parameters() -> int:
    return sum(t.numel() for t in random_state("bert").values())


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def test_show_folder_by_path(store: Store, folder: Path, capsys: Capsys) -> None:
    assert main(["show", str(folder)]) == 0
    out = rows(capsys.readouterr().out)
    assert ["architecture", "bert"] in out
    assert ["context", "length", str(N_CTX)] in out
    assert ["embedding", "length", str(N_EMBD)] in out
    assert ["pooling", "cls"] in out and ["normalize", "yes"] in out
    assert ["max", "tokens", "48"] in out  # sentence_bert_config's cap, not the 64 positions
    assert ["apache-2.0"] in out
    assert not any(r[:2] == ["Chat", "template"] for r in out)  # an encoder has none
    n = sum(int(r[1]) for r in out if len(r) == 2 and r[0] == "F32")
    assert n == len(random_state("bert"))


def test_show_folder_counts_parameters(store: Store, folder: Path, capsys: Capsys) -> None:
    from corral.cli.show import read_folder_facts

    assert read_folder_facts(folder).parameters == expected_parameters() > 0


def test_show_stored_folder_by_name(store: Store, folder: Path, capsys: Capsys) -> None:
    store.add_folder(folder, "tiny-embed")
    assert main(["show", "tiny-embed"]) == 0
    assert ["architecture", "bert"] in rows(capsys.readouterr().out)
    assert main(["show", "tiny-embed", "--license"]) == 0
    assert capsys.readouterr().out == "apache-2.0\n"
    assert main(["show", "tiny-embed", "--template"]) == 0
    assert capsys.readouterr().out == "(no chat template: an embedding model)\n"
    assert main(["show", "tiny-embed", "--parameters"]) == 0
    assert capsys.readouterr().out == "(no parameters)\n"
    assert main(["show", "tiny-embed", "--modelfile"]) == 0
    modelfile = capsys.readouterr().out
    assert "FROM " in modelfile and "TEMPLATE" not in modelfile


def test_plain_hf_folder_defaults_to_mean_pooling(
    store: Store, folder: Path, capsys: Capsys
) -> None:
    (folder / "modules.json").unlink()
    (folder / "README.md").write_text("# no front matter\n")
    assert main(["show", str(folder)]) == 0
    out = rows(capsys.readouterr().out)
    assert ["pooling", "mean"] in out and ["normalize", "no"] in out
    assert main(["show", str(folder), "--license"]) == 0
    assert capsys.readouterr().out == "(no license in the model file)\n"


def test_not_a_model_folder_is_a_clear_error(store: Store, tmp_path: Path, capsys: Capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["show", str(empty)]) == 1
    assert "not a model folder" in capsys.readouterr().err


def test_bad_safetensors_header_is_a_clear_error(
    store: Store, folder: Path, capsys: Capsys
) -> None:
    (folder / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad")
    assert main(["show", str(folder)]) == 1
    assert "unreadable safetensors header" in capsys.readouterr().err


def test_unsupported_architecture(store: Store, folder: Path, capsys: Capsys) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    assert main(["show", str(folder)]) == 1
    assert "not a supported encoder" in capsys.readouterr().err
