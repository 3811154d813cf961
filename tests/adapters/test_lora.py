"""LoRA adapters: GGUF and PEFT, at a scale, several at once; checked against the base model
with the updates merged into its weights in numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lora_files import (
    delta,
    hf_to_gguf_rows,
    random_pairs,
    write_gguf_lora,
    write_merged,
    write_peft,
)

import corral
from corral.adapters import AdapterError, LoraLinear
from tiny_gguf import write_tiny

PROMPT = "hello world, hello again"
N_HEAD, N_HEAD_KV = 4, 2
TARGETS = ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.attn_v.weight",
           "blk.1.attn_output.weight", "blk.0.ffn_gate.weight", "blk.1.ffn_down.weight",
           "blk.1.ffn_up.weight", "output.weight", "token_embd.weight"]  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lora")
    return write_tiny(d / "base.gguf", n_head=N_HEAD, n_head_kv=N_HEAD_KV)


def _logits(model: corral.Model) -> np.ndarray:
    return model.logits(model.tokenize(PROMPT))


def _close(got: np.ndarray, want: np.ndarray) -> None:
    # adapted and merged weights differ by float32 rounding (~1e-7); the float16 KV cache
    # and attention roundings (llama.cpp's) can turn one such flip into ~1e-3 downstream.
    # A wrong scale or a missed target moves logits by far more than this (checked below).
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-3)


def test_gguf_adapter_matches_merged_weights(base: Path, tmp_path: Path) -> None:
    pairs = random_pairs(base, TARGETS, rank=4, seed=1)
    ad = write_gguf_lora(tmp_path / "a.gguf", pairs, alpha=8.0)  # scale alpha / r = 2
    merged = write_merged(
        base, tmp_path / "m.gguf", {n: 2.0 * 0.5 * delta(n, *ab) for n, ab in pairs.items()}
    )
    with_lora = corral.load(base, adapters=[(ad, 0.5)])
    assert isinstance(with_lora.net.blocks[0].wq, LoraLinear)
    assert with_lora.info.adapters == ((str(ad), 0.5),)
    base_logits = _logits(corral.load(base))
    got = _logits(with_lora)
    _close(got, _logits(corral.load(merged)))
    assert np.abs(got - base_logits).max() > 0.1  # the adapter does change the output


def test_several_adapters_and_zero_alpha(base: Path, tmp_path: Path) -> None:
    p1 = random_pairs(base, ["blk.0.attn_q.weight", "blk.1.ffn_up.weight"], rank=2, seed=2)
    p2 = random_pairs(base, ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"], rank=8, seed=3)
    a1 = write_gguf_lora(tmp_path / "a1.gguf", p1, alpha=4.0)  # scale 2 per unit
    a2 = write_gguf_lora(tmp_path / "a2.gguf", p2, alpha=0.0)  # no alpha: the scale as given
    updates: dict[str, np.ndarray] = {}
    for pairs, scale in ((p1, 2.0 * 0.7), (p2, 1.0 * -1.5)):
        for n, ab in pairs.items():
            updates[n] = updates.get(n, 0) + scale * delta(n, *ab)
    merged = write_merged(base, tmp_path / "m.gguf", updates)
    model = corral.load(base, adapters=[(a1, 0.7), (str(a2), -1.5)])
    _close(_logits(model), _logits(corral.load(merged)))


def test_scale_zero_is_the_base_model(base: Path, tmp_path: Path) -> None:
    pairs = random_pairs(base, TARGETS, rank=4, seed=4)
    ad = write_gguf_lora(tmp_path / "a.gguf", pairs, alpha=8.0)
    model = corral.load(base, adapters=[(ad, 0.0)])
    np.testing.assert_array_equal(_logits(model), _logits(corral.load(base)))


def test_base_weights_are_untouched(base: Path, tmp_path: Path) -> None:
    pairs = random_pairs(base, ["blk.0.attn_q.weight"], rank=4, seed=5)
    ad = write_gguf_lora(tmp_path / "a.gguf", pairs, alpha=4.0)
    plain = corral.load(base)
    before = _logits(plain)
    tuned = corral.load(base, adapters=[(ad, 1.0)])
    _logits(tuned)
    np.testing.assert_array_equal(_logits(plain), before)
    assert tuned.net.blocks[0].wq.base.shape == plain.net.blocks[0].wq.shape


def test_peft_folder_matches_merged_weights(base: Path, tmp_path: Path) -> None:
    rank, alpha = 4, 6.0
    hf = random_pairs(base, TARGETS, rank=rank, seed=6)  # HF order for q/k rows
    emb_a, emb_b = hf.pop("token_embd.weight")
    folder = write_peft(
        tmp_path / "peft", {**hf, "token_embd.weight": (emb_a.T.copy(), emb_b)}, rank, alpha
    )
    scale = alpha / rank * 0.8
    updates = {}
    for n, (a, b) in hf.items():
        upd = b.astype(np.float64) @ a.astype(np.float64)
        if n.endswith("attn_q.weight"):
            upd = hf_to_gguf_rows(upd, N_HEAD)
        elif n.endswith("attn_k.weight"):
            upd = hf_to_gguf_rows(upd, N_HEAD_KV)
        updates[n] = scale * upd
    updates["token_embd.weight"] = scale * (emb_a.astype(np.float64) @ emb_b.T.astype(np.float64))
    merged = write_merged(base, tmp_path / "m.gguf", updates)
    model = corral.load(base, adapters=[(folder, 0.8)])
    got = _logits(model)
    _close(got, _logits(corral.load(merged)))
    assert np.abs(got - _logits(corral.load(base))).max() > 0.05  # the adapter does act


def test_peft_rslora_and_alpha_pattern(base: Path, tmp_path: Path) -> None:
    hf = random_pairs(base, ["blk.0.attn_v.weight", "blk.1.ffn_up.weight"], rank=4, seed=7)
    folder = write_peft(
        tmp_path / "peft", hf, 4, 8.0, use_rslora=True, alpha_pattern={"up_proj": 2.0}
    )
    updates = {
        "blk.0.attn_v.weight": 8.0 / 2 * delta("x", *hf["blk.0.attn_v.weight"]),
        "blk.1.ffn_up.weight": 2.0 / 2 * delta("x", *hf["blk.1.ffn_up.weight"]),
    }
    merged = write_merged(base, tmp_path / "m.gguf", updates)
    _close(_logits(corral.load(base, adapters=[(folder, 1.0)])), _logits(corral.load(merged)))


def test_quantized_base_with_adapter(tmp_path: Path) -> None:
    from gguf import GGMLQuantizationType as Q

    base = write_tiny(tmp_path / "q8.gguf", qtype=Q.Q8_0, n_head=N_HEAD, n_head_kv=N_HEAD_KV)
    pairs = random_pairs(base, TARGETS, rank=4, seed=8)
    ad = write_gguf_lora(tmp_path / "a.gguf", pairs, alpha=4.0)
    merged = write_merged(base, tmp_path / "m.gguf", {n: delta(n, *ab) for n, ab in pairs.items()})
    got, want = _logits(corral.load(base, adapters=[(ad, 1.0)])), _logits(corral.load(merged))
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99  # Q8_0 activations round


# -- wrong adapters: one-line errors -------------------------------------------------------


def test_adapter_for_another_model(base: Path, tmp_path: Path) -> None:
    other = write_tiny(tmp_path / "wide.gguf", n_embd=96, n_head=N_HEAD, n_head_kv=N_HEAD_KV)
    ad = write_gguf_lora(tmp_path / "a.gguf", random_pairs(other, TARGETS, 4, 9), alpha=4.0)
    msg = r"'token_embd\.weight' is 268x64 in the model but 268x96 in the adapter \(an adapter for"
    with pytest.raises(AdapterError, match=msg):
        corral.load(base, adapters=[(ad, 1.0)])


def test_adapter_naming_a_missing_weight(base: Path, tmp_path: Path) -> None:
    pairs = random_pairs(base, ["blk.1.attn_q.weight"], rank=2, seed=10)
    pairs["blk.7.attn_q.weight"] = pairs.pop("blk.1.attn_q.weight")
    ad = write_gguf_lora(tmp_path / "a.gguf", pairs, alpha=2.0)
    with pytest.raises(AdapterError, match=r"the model has no weight 'blk\.7\.attn_q\.weight'"):
        corral.load(base, adapters=[(ad, 1.0)])


def test_adapter_for_another_architecture_or_not_an_adapter(base: Path, tmp_path: Path) -> None:
    pairs = random_pairs(base, ["blk.0.attn_q.weight"], 2, 11)
    gemma = write_gguf_lora(tmp_path / "g.gguf", pairs, 2.0, arch="gemma3")
    with pytest.raises(AdapterError, match="for 'gemma3' models, the model is 'llama'"):
        corral.load(base, adapters=[(gemma, 1.0)])
    with pytest.raises(AdapterError, match="not a LoRA adapter"):
        corral.load(base, adapters=[(base, 1.0)])
    junk = tmp_path / "junk.gguf"
    junk.write_text("hello")
    with pytest.raises(AdapterError, match="adapter junk.gguf: not a GGUF file"):
        corral.load(base, adapters=[(junk, 1.0)])
    with pytest.raises(AdapterError, match="no such file or folder"):
        corral.load(base, adapters=[(tmp_path / "nope.gguf", 1.0)])


def test_bad_peft_folders(base: Path, tmp_path: Path) -> None:
    hf = random_pairs(base, ["blk.0.attn_v.weight"], rank=4, seed=12)
    dora = write_peft(tmp_path / "dora", hf, 4, 8.0, use_dora=True)
    with pytest.raises(AdapterError, match="DoRA adapters are not supported"):
        corral.load(base, adapters=[(dora, 1.0)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        corral.load(base, adapters=[(empty, 1.0)])
    bad = write_peft(tmp_path / "bad", hf, 4, 8.0)
    (bad / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(AdapterError, match="not a readable safetensors file"):
        corral.load(base, adapters=[(bad, 1.0)])
    cfg = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "IA3"}))
    with pytest.raises(AdapterError, match="PEFT type IA3 is not supported"):
        corral.load(base, adapters=[(bad, 1.0)])
    gemma = write_tiny(tmp_path / "gemma.gguf", arch="gemma3")
    with pytest.raises(AdapterError, match="supported for llama models, the model is 'gemma3'"):
        corral.load(gemma, adapters=[(write_peft(tmp_path / "ok", hf, 4, 8.0), 1.0)])
