"""Splitter: no chunk over the token limit, overlap, heading paths, line ranges."""

from __future__ import annotations

import pytest

from corral.rag.loaders import text_blocks
from corral.rag.splitter import SplitOptions, split_blocks
from corral.rag.types import Block, DocKind
from rag_stubs import StubEmbedder


def count(texts):  # noqa: ANN001, ANN201 - the stub's whitespace tokenizer
    return StubEmbedder().count_tokens(texts)


def test_no_chunk_over_limit_and_all_words_kept() -> None:
    words = [f"w{i}" for i in range(500)]
    text = "\n\n".join(" ".join(words[i : i + 37]) for i in range(0, 500, 37))
    blocks = text_blocks(text + "\n" + "x" * 400, DocKind.TEXT)
    chunks = split_blocks(blocks, "f.txt", count, SplitOptions(20, 4))
    assert all(count([c.embed_text])[0] <= 20 for c in chunks)
    seen = {w for c in chunks for w in c.text.split()}
    assert set(words) <= seen  # nothing dropped


def test_overlap_repeats_the_tail_within_a_section() -> None:
    text = " ".join(f"s{i}." for i in range(60))
    chunks = split_blocks(text_blocks(text, DocKind.TEXT), "f", count, SplitOptions(20, 5))
    assert len(chunks) > 2
    for a, b in zip(chunks, chunks[1:], strict=False):
        tail = a.text.split()[-1]
        assert tail in b.text.split()[:6]  # the next chunk starts with the last words
    no_overlap = split_blocks(text_blocks(text, DocKind.TEXT), "f", count, SplitOptions(20, 0))
    assert sum(len(c.text.split()) for c in no_overlap) == 60


def test_headings_paths_and_line_ranges() -> None:
    md = "# A\n\npara one\n\npara two\n\n## B\n\nline x\nline y\n"
    chunks = split_blocks(text_blocks(md, DocKind.MARKDOWN), "d.md", count, SplitOptions(30, 0))
    assert [(c.heading, c.start_line, c.end_line, c.text) for c in chunks] == [
        (("A",), 3, 5, "para one\n\npara two"),
        (("A", "B"), 9, 10, "line x\nline y"),
    ]
    assert chunks[1].embed_text.startswith("A > B\n")


def test_long_paragraph_cut_at_lines_keeps_line_numbers() -> None:
    block = Block("\n".join(f"a{i} b c d e f" for i in range(10)), 11, 20, ("H",))
    chunks = split_blocks([block], "f", count, SplitOptions(16, 0))
    assert chunks[0].start_line == 11 and chunks[-1].end_line == 20
    assert all(c.start_line <= c.end_line for c in chunks)
    assert [c.start_line for c in chunks] == sorted(c.start_line for c in chunks)


def test_options_validated() -> None:
    with pytest.raises(ValueError):
        SplitOptions(4)
    with pytest.raises(ValueError):
        SplitOptions(64, 40)
    assert SplitOptions.for_model(256) == SplitOptions(256, 32)


@pytest.mark.realmodel
def test_real_tokenizer_chunks_fit_minilm(minilm) -> None:  # noqa: ANN001
    """With MiniLM's own tokenizer, long varied prose never exceeds its 256 tokens."""
    para = " ".join(
        f"Sentence {i} talks about tokenization, déjà vu and 3.14159 numbers." for i in range(80)
    )
    md = f"# Title\n\n## Section with a long heading name\n\n{para}\n\n{para[:500]}\n"
    opts = SplitOptions.for_model(minilm.max_tokens)
    chunks = split_blocks(text_blocks(md, DocKind.MARKDOWN), "x.md", minilm.count_tokens, opts)
    counts = minilm.count_tokens([c.embed_text for c in chunks])
    assert len(chunks) > 3 and max(counts) <= 256
    assert sorted(counts)[len(counts) // 2] > 220  # packed, not one sentence per chunk
