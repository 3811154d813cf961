"""RWKV-4: `corral convert` of a tiny random transformers RwkvForCausalLM, then corral's
"rwkv" model against transformers: float32 logits within 1e-4, the same 16 greedy tokens,
and prefill at once equal to token by token (the recurrent state)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

import corral  # noqa: E402
from corral.convert import convert_hf  # noqa: E402
from hf_tiny import VOCAB, save_tokenizer  # noqa: E402


def _tiny_rwkv(folder: Path) -> Any:
    config = transformers.RwkvConfig(
        vocab_size=VOCAB, hidden_size=64, attention_hidden_size=64, intermediate_size=128,
        num_hidden_layers=3, context_length=128, rescale_every=2, bos_token_id=0,
        eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.RwkvForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "time_mix" in name:
                p.uniform_(0.0, 1.0)
            elif "time_decay" in name:
                p.uniform_(-3.0, 0.5)
            elif "time_first" in name:
                p.normal_(0.0, 0.5)
            elif p.dim() == 1:  # layer norms
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
            else:
                p.normal_(0.0, 1.0 if "embeddings" in name else 1.0 / math.sqrt(p.shape[1]))
    model.eval()
    model.save_pretrained(folder)
    save_tokenizer(folder)
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, corral.Model]:
    folder = tmp_path_factory.mktemp("rwkv4")
    hf = _tiny_rwkv(folder / "hf")
    out = convert_hf(folder / "hf", folder / "rwkv4.gguf", "f32")
    return hf, corral.load(out, n_ctx=64)


def test_logits_match_transformers(pair: tuple[Any, corral.Model]) -> None:
    hf, model = pair
    assert model.info.architecture == "rwkv"
    ids = torch.randint(3, VOCAB - 10, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf(ids, use_cache=False).logits[0].float().numpy()
    got = model.logits(ids[0].tolist())
    assert abs(got - ref).max() <= 1e-4
    net = model.net
    state = net.make_cache(64)
    steps = torch.cat([net.forward(ids[:, i : i + 1], state)[0] for i in range(ids.shape[1])])
    assert (steps.numpy() - ref).__abs__().max() <= 1e-4


def test_greedy_matches_transformers(pair: tuple[Any, corral.Model]) -> None:
    hf, model = pair
    ids = torch.randint(3, VOCAB - 10, (1, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = hf.generate(
            ids, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0
        )[0, ids.shape[1] :].tolist()
    got = model.generate(ids[0].tolist(), 16, temperature=0, ignore_eos=True).token_ids
    assert got == want
