"""corral's encoders against plain-torch references of the published architectures.

Tiny random weights are written as a sentence-transformers folder and as GGUF files with
llama.cpp's names; each load must give the reference's hidden states on a padded batch.
"""

from __future__ import annotations

from pathlib import Path

import encoder_refs
import pytest
import torch

from corral.embed.batching import pad
from corral.gguf import open_gguf
from corral.models.encoder import load_encoder_folder, load_encoder_gguf
from tiny_encoders import CONFIGS, N_CTX, VOCAB, random_state, write_folder, write_gguf

REFS = {
    "bert": encoder_refs.bert,
    "nomic-bert": encoder_refs.nomic_bert,
    "jina-bert-v2": encoder_refs.jina_bert,
}
ARCHS = list(REFS)


def _batch(lengths: tuple[int, ...] = (N_CTX, 17, 5, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(5, len(VOCAB), (n,), generator=g).tolist() for n in lengths]
    return pad(seqs, 0)


def _compare(model, arch: str, sd: dict, atol: float) -> None:
    for lengths in ((N_CTX, 17, 5, 1), (9, 9)):  # padded, and a batch without padding
        ids, mask = _batch(lengths)
        want = REFS[arch](sd, CONFIGS[arch], ids, mask)
        got = model.forward(ids, mask)
        assert got.shape == want.shape
        diff = (got - want)[mask].abs().max().item()  # padded rows are nobody's business
        assert diff < atol, f"{arch} {lengths}: max |diff| {diff}"


@pytest.mark.parametrize("arch", ARCHS)
def test_folder_matches_reference(arch: str, tmp_path: Path) -> None:
    sd = random_state(arch)
    model, found = load_encoder_folder(write_folder(tmp_path / arch, arch, sd))
    assert found == arch
    _compare(model, arch, sd, 1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_gguf_matches_reference(arch: str, tmp_path: Path) -> None:
    sd = random_state(arch, seed=2)
    with open_gguf(write_gguf(tmp_path / "m.gguf", arch, sd)) as g:
        model = load_encoder_gguf(g)
    _compare(model, arch, sd, 1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_f16_gguf_is_close(arch: str, tmp_path: Path) -> None:
    sd = random_state(arch, seed=3)
    with open_gguf(write_gguf(tmp_path / "m.gguf", arch, sd, f16=True)) as g:
        model = load_encoder_gguf(g)
    _compare(model, arch, sd, 2e-2)


def test_jina_fused_gate_up_and_qk_norm(tmp_path: Path) -> None:
    # newer converters keep gated_layers whole as ffn_up; the -code variants LayerNorm q, k
    sd = random_state("jina-bert-v2", seed=4, qk_norm=True)
    with open_gguf(write_gguf(tmp_path / "m.gguf", "jina-bert-v2", sd, fused_gate_up=True)) as g:
        model = load_encoder_gguf(g)
    _compare(model, "jina-bert-v2", sd, 1e-4)
    folder_model, _ = load_encoder_folder(write_folder(tmp_path / "f", "jina-bert-v2", sd))
    _compare(folder_model, "jina-bert-v2", sd, 1e-4)


def test_jina_long_input_attends_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import corral.models.jina_bert_v2 as jina

    sd = random_state("jina-bert-v2", seed=5)
    model, _ = load_encoder_folder(write_folder(tmp_path / "f", "jina-bert-v2", sd))
    ids, mask = _batch()
    whole = model.forward(ids, mask)
    monkeypatch.setattr(jina, "_SCORE_BUDGET", 4 * 4 * 7)  # queries 7 at a time
    assert torch.allclose(model.forward(ids, mask), whole, atol=1e-5)


def test_batch_rows_do_not_leak(tmp_path: Path) -> None:
    # a text's states are the same alone or padded next to a longer one
    sd = random_state("bert", seed=6)
    model, _ = load_encoder_folder(write_folder(tmp_path / "f", "bert", sd))
    ids, mask = _batch()
    both = model.forward(ids, mask)
    n = int(mask[2].sum())
    alone = model.forward(ids[2:3, :n], mask[2:3, :n])
    assert torch.allclose(both[2, :n], alone[0], atol=1e-5)
