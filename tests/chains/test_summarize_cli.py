"""`corral summarize` through the CLI entry point, on the tiny model and on SmolLM2."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from corral.cli.main import main

Capsys = pytest.CaptureFixture[str]
TEXT = "\n\n".join(f"Paragraph {i} talks about rivers and hills, number {i}." for i in range(12))


def test_summarize_file_reports_its_work(tiny_path: Path, tmp_path: Path, capsys: Capsys) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(TEXT)
    args = ["summarize", str(doc), "--model", str(tiny_path), "--chunk-tokens", "60",
            "--summary-tokens", "12", "--threads", "1", "-v"]  # fmt: skip
    assert main(args) == 0
    out, err = capsys.readouterr()
    m = re.search(r"(\d+) chunks of at most 60 tokens, (\d+) map calls", err)
    assert m, err
    assert int(m.group(1)) == int(m.group(2)) > 3
    assert out.endswith("\n")


@pytest.mark.parametrize(
    ("content", "message"), [(None, "no such file"), ("\n \n", "is empty")]
)  # fmt: skip
def test_bad_files_fail_before_loading_a_model(
    tmp_path: Path, capsys: Capsys, content: str | None, message: str
) -> None:
    doc = tmp_path / "doc.txt"
    if content is not None:
        doc.write_text(content)
    t0 = time.perf_counter()
    # a model name that does not exist: the file error must come first
    assert main(["summarize", str(doc), "--model", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and message in err
    assert time.perf_counter() - t0 < 5


def test_chunk_tokens_over_the_context_is_a_clear_error(
    tiny_path: Path, tmp_path: Path, capsys: Capsys
) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text(TEXT)
    assert main(["summarize", str(doc), "--model", str(tiny_path), "--chunk-tokens", "5000"]) == 1
    assert "do not fit the context" in capsys.readouterr().err


@pytest.mark.realmodel
def test_smollm2_summarizes_a_short_text_map_reduce(
    smollm2_path: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Three chunks (forced by --chunk-tokens) and a combine on SmolLM2, on topic: 4 calls of
    at most 32 tokens, about 12 s even on a 2-core machine at load average 7. One thread:
    with other jobs on the cores, torch's default two threads made it 13x slower (158 s).
    No timing assert: a shared CI machine can be slower still."""
    doc = tmp_path / "bees.txt"
    doc.write_text(
        "Honey bees live in colonies with one queen, thousands of female workers and a few "
        "hundred male drones. The queen lays all the eggs of the colony.\n\n"
        "Worker bees collect nectar and pollen from flowers. They turn nectar into honey and "
        "store it in wax combs to feed the colony through the winter.\n\n"
        "Bees tell each other where flowers are with a waggle dance. The angle of the dance "
        "shows the direction of the food and its length shows the distance."
    )
    args = ["summarize", str(doc), "--model", str(smollm2_path), "--chunk-tokens", "48",
            "--summary-tokens", "32", "--threads", "1", "-v"]  # fmt: skip
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert re.search(r"3 chunks of at most 48 tokens, 3 map calls", err), err
    assert "bee" in out.lower() or "honey" in out.lower(), out
