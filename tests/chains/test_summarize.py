"""Map-reduce summarization on a tiny random model: the shape of the work, not its prose.

The model ignores EOS in most tests so that every summary is exactly `summary_tokens` long,
which makes the number of collapse rounds deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.chains import MapReduceSummarizer
from corral.chains.summarize import COMBINE_PROMPT, read_document
from corral.errors import ContextOverflowError, InvalidRequestError

TEXT = "\n\n".join(f"Paragraph {i} talks about rivers and hills, number {i}." for i in range(12))


def summarizer(model: Any, **kw: Any) -> MapReduceSummarizer:
    opts = {"chunk_tokens": 60, "summary_tokens": 40, "ignore_eos": True} | kw
    return MapReduceSummarizer(model, **opts)


def test_one_map_call_per_chunk_in_order(recorder: Any) -> None:
    model = recorder()
    s = summarizer(model)
    chunks = s.split(TEXT)
    assert len(chunks) > 3
    assert all(len(model.tokenize(c, add_special=False)) <= 60 for c in chunks)
    assert "\n\n".join(chunks).split() == TEXT.split()  # nothing lost or repeated
    result = s.summarize(TEXT)
    assert result.chunks == result.map_calls == len(chunks)
    maps = model.prompts[: len(chunks)]
    assert [c in p for c, p in zip(chunks, maps, strict=True)] == [True] * len(chunks)
    assert result.calls == len(model.prompts)


def test_reduce_recurses_while_summaries_do_not_fit(recorder: Any) -> None:
    model = recorder()
    s = summarizer(model)
    progress: list[Any] = []
    s.on_progress = progress.append
    result = s.summarize(TEXT)
    # 12 summaries of 40 tokens cannot share one 400-token context: collapse rounds first
    assert len(result.collapse_rounds) >= 2
    counts = [result.map_calls, *result.collapse_rounds]
    assert all(b < a for a, b in zip(counts, counts[1:], strict=False))  # each round shrinks
    assert result.combine_calls == sum(result.collapse_rounds) + 1
    # every prompt sent left room for its summary
    for p in model.prompts:
        assert s._prompt_tokens(p) <= 400 - 40
    assert [p.stage for p in progress].count("collapse") == sum(result.collapse_rounds)
    assert progress[-1].stage == "combine"


def test_no_collapse_when_summaries_fit(recorder: Any) -> None:
    model = recorder()
    result = summarizer(model, summary_tokens=4).summarize(TEXT)
    assert result.map_calls > 3
    assert result.collapse_rounds == [] and result.combine_calls == 1
    final = model.prompts[-1]
    assert final.startswith(COMBINE_PROMPT.template.split("\n")[0])
    assert final.count("Part ") == result.map_calls


def test_group_packs_consecutive_summaries_at_least_two(tiny_model: Any) -> None:
    s = summarizer(tiny_model)
    items = [f"s{i} " + "word " * 7 for i in range(9)]
    groups = s.group(items)
    assert [x for g in groups for x in g] == items
    assert all(len(g) >= 2 for g in groups[:-1])
    assert all(s._fits(g) for g in groups)
    assert len(groups) > 1


def test_short_text_is_one_streamed_call(recorder: Any) -> None:
    model = recorder()
    pieces: list[str] = []
    result = summarizer(model).summarize("A short note about rivers.", on_text=pieces.append)
    assert (result.chunks, result.map_calls, result.combine_calls) == (1, 1, 0)
    assert len(model.prompts) == 1
    assert "".join(pieces).strip() == result.text and result.text


def test_final_summary_streams(recorder: Any) -> None:
    pieces: list[str] = []
    result = summarizer(recorder()).summarize(TEXT, on_text=pieces.append)
    assert len(pieces) > 1 and "".join(pieces).strip() == result.text


def test_empty_text_and_impossible_sizes(tiny_model: Any) -> None:
    with pytest.raises(InvalidRequestError, match="no text"):
        summarizer(tiny_model).summarize(" \n\n ")
    with pytest.raises(ContextOverflowError, match="do not fit"):
        summarizer(tiny_model, chunk_tokens=1000)
    with pytest.raises(ContextOverflowError, match="two summaries"):
        summarizer(tiny_model, chunk_tokens=None, summary_tokens=150)


def test_read_document_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="no such file"):
        read_document(tmp_path / "missing.txt")
    (tmp_path / "empty.md").write_text("\n  \n")
    with pytest.raises(InvalidRequestError, match="empty"):
        read_document(tmp_path / "empty.md")
    (tmp_path / "blob.txt").write_bytes(b"\x00\x01\x02" * 10)
    with pytest.raises(InvalidRequestError, match="binary"):
        read_document(tmp_path / "blob.txt")
    (tmp_path / "page.html").write_text("<h1>Title</h1><p>Body text.</p><script>x=1</script>")
    text = read_document(tmp_path / "page.html")
    assert "Title" in text and "Body text." in text and "x=1" not in text
