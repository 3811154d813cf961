"""Files `corral convert` writes load in llama.cpp and give corral's logits there.

Needs the peer environment (bench/setup-peers.sh: llama-cpp-python); skipped without it.
CORRAL_PEERS names its folder (default /tmp/corral-peers). Not in this list: gptj, which
current llama.cpp no longer runs, and phi3 with a sliding window, which llama.cpp ignores
(its "Phi SWA is currently disabled"); corral applies the window as transformers does.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from corral.convert import convert_hf  # noqa: E402
from corral.gguf import open_gguf  # noqa: E402
from corral.models.registry import load_model  # noqa: E402
from hf_tiny import save_tiny  # noqa: E402

PEERS = Path(os.environ.get("CORRAL_PEERS", "/tmp/corral-peers")) / "bin" / "python"
pytestmark = pytest.mark.skipif(not PEERS.exists(), reason="no llama.cpp peer environment")

_BASE = {"vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
_DENSE = {
    **_BASE, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2,
}  # fmt: skip
_IDS = list(range(5, 17))
_LLAMA_CPP = """
import json, sys, llama_cpp
out = {}
for path in sys.argv[1:]:
    llm = llama_cpp.Llama(path, n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    llm.eval(IDS)
    out[path] = [list(map(float, row)) for row in llm.scores[: len(IDS)]]
print(json.dumps(out))
""".replace("IDS", repr(_IDS))


def _configs() -> dict:
    t = transformers
    return {
        "llama": t.LlamaConfig(**_DENSE),
        "gemma3": t.Gemma3TextConfig(
            **_DENSE,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
        ),  # fmt: skip
        "qwen2": t.Qwen2Config(**_DENSE, tie_word_embeddings=True),
        "qwen3": t.Qwen3Config(**_DENSE, head_dim=32),
        "phi3": t.Phi3Config(**_DENSE, partial_rotary_factor=0.5),
        "starcoder2": t.Starcoder2Config(**_DENSE),
        "bloom": t.BloomConfig(**_BASE, hidden_size=64, n_layer=2, n_head=4),
        "mpt": t.MptConfig(**_BASE, d_model=64, n_layers=2, n_heads=4),
        "falcon": t.FalconConfig(
            **_BASE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4
        ),
    }


def test_llama_cpp_loads_converted_files(tmp_path: Path) -> None:
    ours = {}
    for arch, cfg in _configs().items():
        # folders not named after the model: llama.cpp looks up Phi-3's chat tokens when
        # general.name says phi3, and the tiny vocabulary lacks them
        save_tiny(tmp_path / f"m_{len(ours)}", cfg)
        path = convert_hf(tmp_path / f"m_{len(ours)}", tmp_path / f"{arch}.gguf", "f32")
        m = load_model(open_gguf(path))
        ours[str(path)] = m.forward(torch.tensor([_IDS]), m.make_cache(32))[0]
    run = subprocess.run(
        [str(PEERS), "-c", _LLAMA_CPP, *ours], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    for path, logits in ours.items():
        diff = float((torch.tensor(theirs[path]) - logits).abs().max())
        # both round as llama.cpp's CPU path does; MPT's GELU differs (erf vs tanh)
        assert diff < 1e-3, f"{Path(path).stem}: max |llama.cpp - corral| = {diff:.3g}"
