"""The Embedder: pooling, normalization, truncation, batching, Matryoshka dimensions,
and folder / GGUF loads of one model agreeing on ids and vectors."""

from __future__ import annotations

from pathlib import Path

import encoder_refs
import gguf
import numpy as np
import pytest
import torch

import corral
from corral.embed import Embedder, Pooling, Truncation, load_embedder
from corral.embed.batching import DEFAULT_FORWARD_TOKENS, pad, plan_batches, split_for_forward
from corral.errors import ContextOverflowError, InvalidRequestError
from tiny_encoders import CONFIGS, N_CTX, N_EMBD, random_state, write_folder, write_gguf

TEXTS = [
    "Hello world!",
    "The cat sat on the mat.",
    "a dog",
    "Running dogs, sitting cats? HELLO 42",
    "x",
]


@pytest.fixture(scope="module")
def sd() -> dict:
    return random_state("bert", seed=11)


@pytest.fixture(scope="module")
def folder(sd: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("f") / "tiny-bert", "bert", sd)


@pytest.fixture(scope="module")
def emb(folder: Path) -> Embedder:
    return load_embedder(folder)


def _reference(emb: Embedder, sd: dict, texts: list[str], pooling: Pooling) -> np.ndarray:
    ids, mask = pad(emb.tokenize(texts), 0)
    hidden = encoder_refs.bert(sd, CONFIGS["bert"], ids, mask)
    if pooling is Pooling.CLS:
        v = hidden[:, 0]
    elif pooling is Pooling.LAST:
        v = hidden[torch.arange(len(texts)), mask.sum(1) - 1]
    else:
        v = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return v.numpy()


def test_info_from_sentence_transformers_folder(emb: Embedder) -> None:
    i = emb.info
    assert (i.architecture, i.dimensions, i.max_tokens) == ("bert", N_EMBD, N_CTX)
    assert i.pooling is Pooling.MEAN and i.normalize and i.source_format == "folder"


@pytest.mark.parametrize("pooling", list(Pooling))
def test_pooling_and_normalization(emb: Embedder, sd: dict, pooling: Pooling) -> None:
    raw = emb.embed(TEXTS, normalize=False, pooling=pooling)
    want = _reference(emb, sd, TEXTS, pooling)
    np.testing.assert_allclose(raw, want, atol=1e-4)
    unit = emb.embed(TEXTS, pooling=pooling)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)


def test_matryoshka_dimensions(emb: Embedder) -> None:
    raw = emb.embed(TEXTS, normalize=False)
    cut = emb.embed(TEXTS, dimensions=8)
    assert cut.shape == (len(TEXTS), 8)
    want = raw[:, :8] / np.linalg.norm(raw[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, want, atol=1e-5)
    for bad in (0, N_EMBD + 1):
        with pytest.raises(InvalidRequestError, match="dimensions"):
            emb.embed(TEXTS, dimensions=bad)


def test_batching_does_not_change_results(emb: Embedder) -> None:
    texts = TEXTS * 5
    one_batch = emb.embed(texts)
    for tokens, size in ((16, 64), (64, 2), (10_000, 1)):
        small = emb.embed(texts, max_batch_tokens=tokens, max_batch_size=size)
        np.testing.assert_allclose(small, one_batch, atol=1e-5)
    emb.forward_tokens = 8  # a batch split into several forward passes
    try:
        np.testing.assert_allclose(emb.embed(texts), one_batch, atol=1e-5)
    finally:
        emb.forward_tokens = DEFAULT_FORWARD_TOKENS


def test_plan_batches_respects_budget_and_covers_all() -> None:
    lengths = [5, 60, 7, 7, 30, 200, 1, 1, 1]
    batches = plan_batches(lengths, max_batch_tokens=64, max_batch_size=3)
    seen = sorted(i for b in batches for i in b.indices)
    assert seen == list(range(len(lengths)))
    for b in batches:
        assert b.length == max(lengths[i] for i in b.indices)
        assert len(b.indices) <= 3
        assert len(b.indices) == 1 or len(b.indices) * b.length <= 64
    assert any(b.indices == (5,) for b in batches)  # over budget alone: runs by itself


def test_split_for_forward_keeps_order_and_budget() -> None:
    lengths = [5, 60, 7, 7, 30, 200, 1, 1, 1]
    (whole,) = plan_batches(lengths, max_batch_tokens=10_000, max_batch_size=100)
    assert split_for_forward(whole, lengths, 10_000) == [whole]
    parts = split_for_forward(whole, lengths, 64)
    assert [i for p in parts for i in p.indices] == list(whole.indices)  # same order
    for p in parts:
        assert p.length == lengths[p.indices[0]] == max(lengths[i] for i in p.indices)
        assert len(p.indices) == 1 or len(p.indices) * p.length <= 64
    assert parts[0].indices == (5,) and parts[1].indices == (1,)  # 200 and 60 run alone
    with pytest.raises(ValueError):
        split_for_forward(whole, lengths, 0)


def test_truncation_sides_and_error(emb: Embedder) -> None:
    words = [f"w{i % 10}" for i in range(200)]  # "w", "##0": two tokens a word
    text = " ".join(words)
    assert emb.count_tokens(text)[0] > emb.max_tokens
    right, left = emb.tokenize(text, "right")[0], emb.tokenize(text, Truncation.LEFT)[0]
    assert len(right) == len(left) == emb.max_tokens
    full = emb.tokenize(text, Truncation.RIGHT)  # same call, typed
    assert full[0] == right
    plain = emb.text.backend.plain([text])[0]
    assert (
        right[1:-1] == plain[: emb.max_tokens - 2] and left[1:-1] == plain[-(emb.max_tokens - 2) :]
    )
    assert right[0] == left[0] == 2 and right[-1] == left[-1] == 3  # [CLS] ... [SEP] kept
    with pytest.raises(ContextOverflowError, match="at most"):
        emb.embed([TEXTS[0], text], truncate=False)
    np.testing.assert_allclose(emb.embed(text), emb.embed_ids([right]).vectors, atol=1e-6)


def test_empty_list_and_bad_inputs(emb: Embedder) -> None:
    assert emb.embed([]).shape == (0, N_EMBD)
    with pytest.raises(InvalidRequestError, match="not text"):
        emb.embed(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError, match="outside"):
        emb.embed_ids([[2, 10_000, 3]])
    with pytest.raises(InvalidRequestError, match="empty"):
        emb.embed_ids([[]])
    with pytest.raises(InvalidRequestError, match="truncate"):
        emb.embed("a", truncate="middle")


def test_counts_include_special_tokens(emb: Embedder) -> None:
    out = emb.embed_with_counts(["hello world", "a"])
    assert out.token_counts == [4, 3] and out.total_tokens == 7
    assert emb.count_tokens(["hello world", "a"]) == [4, 3]


def test_gguf_and_folder_agree(emb: Embedder, sd: dict, tmp_path: Path) -> None:
    g = load_embedder(write_gguf(tmp_path / "tiny.gguf", "bert", sd))
    assert g.info.source_format == "gguf" and g.info.pooling is Pooling.MEAN
    texts = [*TEXTS, "[MASK] and [CLS] inside", "naïve CAFÉ, 漢字!", "  spaced\tout\n"]
    assert g.tokenize(texts) == emb.tokenize(texts)
    np.testing.assert_allclose(g.embed(texts), emb.embed(texts), atol=1e-5)


def test_gguf_pooling_type(sd: dict, tmp_path: Path) -> None:
    g = load_embedder(write_gguf(tmp_path / "cls.gguf", "bert", sd, pooling=gguf.PoolingType.CLS))
    assert g.info.pooling is Pooling.CLS


def test_top_level_api(folder: Path, emb: Embedder) -> None:
    v = corral.embed(str(folder), ["hello"])
    np.testing.assert_allclose(v, emb.embed(["hello"]), atol=1e-6)
    assert corral.embed(emb, "hello").shape == (1, N_EMBD)
    assert isinstance(corral.load_embedder(folder), corral.Embedder)
