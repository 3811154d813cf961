"""`corral convert` on tiny random transformers models, checked against transformers itself:
float32 logits within 1e-4 and the same 16 greedy tokens, with and without the KV cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")

from corral.convert import convert_hf  # noqa: E402
from hf_tiny import compare, save_tiny  # noqa: E402

_BASE = {"vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
_DENSE = {
    **_BASE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def _configs() -> dict[str, Callable[[], Any]]:
    t = transformers
    return {
        "llama": lambda: t.LlamaConfig(**_DENSE),
        "gemma3": lambda: t.Gemma3TextConfig(
            **_DENSE,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
        ),  # fmt: skip
        "qwen2": lambda: t.Qwen2Config(**_DENSE, tie_word_embeddings=True),
        "qwen3": lambda: t.Qwen3Config(**_DENSE, head_dim=32),
        "phi3": lambda: t.Phi3Config(**_DENSE, partial_rotary_factor=0.5, sliding_window=6),
        "starcoder2": lambda: t.Starcoder2Config(**_DENSE),
        "gptj": lambda: t.GPTJConfig(**_BASE, n_embd=64, n_layer=2, n_head=4, rotary_dim=8),
        "bloom": lambda: t.BloomConfig(**_BASE, hidden_size=64, n_layer=2, n_head=4),
        "mpt": lambda: t.MptConfig(**_BASE, d_model=64, n_layers=2, n_heads=4),
        "falcon": lambda: t.FalconConfig(
            **_BASE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4
        ),  # 7B-style: multi-query, one LayerNorm
        "falcon-40b": lambda: t.FalconConfig(
            **_BASE,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            new_decoder_architecture=True,
            num_kv_heads=2,
        ),  # fmt: skip
    }


CONFIGS = _configs()


@pytest.fixture(autouse=True)
def exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain float32 compute (as CORRAL_EXACT=1): no llama.cpp float16 roundings."""
    monkeypatch.setattr("corral.models.layers._EXACT", True)
    monkeypatch.setattr("corral.models.weights._EXACT", True)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_matches_transformers(tmp_path: Path, arch: str) -> None:
    hf = save_tiny(tmp_path / "hf", CONFIGS[arch]())
    out = convert_hf(tmp_path / "hf", tmp_path / "m.gguf", "f32")
    compare(hf, out)
