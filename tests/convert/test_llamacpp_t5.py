"""T5 files `corral convert` writes load in llama.cpp and give corral's decoder logits there.

The encoder-decoder counterpart of test_llamacpp_loads.py: tiny random Flan-T5 (gated GELU,
own head) and original T5 (ReLU, tied head written scaled) models, converted to f32 GGUF, run
through llama-cpp-python's low-level API in the peer environment (llama_encode on the input,
then llama_decode from llama_model_decoder_start_token, one token at a time) and through
corral (Model.encode / forward, and generate). Needs the peer environment
(bench/setup-peers.sh); skipped without it. CORRAL_PEERS names its folder (default
/tmp/corral-peers).

The models have fewer decoder than encoder layers, so t5.decoder_block_count matters. Not the
other way round: llama.cpp (as llama-cpp-python 0.3.36 ships it) fails to load a t5 file with
more decoder than encoder layers ("vector::_M_range_check": its per-layer tables are sized by
block_count, the encoder's count), whoever wrote the file; its own convert_hf_to_gguf.py
writes the same keys as ours.

Tolerances are relative to the largest logit (about 30 for the Flan-T5 model, 4 for the T5
one). With float32 KV caches on both sides, T5 (ReLU) agrees to 1e-6; Flan-T5 to 3e-5 of its
scale here, within 1.2e-4 over the seeds 0-9: llama.cpp looks GELU up in a float16 table, as
corral does on the CPU, and a gate value that the two sum in different orders lands now and
then on the other side of a float16 rounding step. With the default float16 KV caches
llama.cpp rounds the decoder's self-attention queries and softmax weights to float16 against
its cache, and corral's t5 attention (models/t5.py, `attend`) does the same: T5 agrees to
1e-6 there too, Flan-T5 to 5e-5 of its scale (before corral rounded them: 4e-4).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_t5_parity import CONFIGS, save_tiny_t5  # noqa: E402

from corral.convert import convert_hf  # noqa: E402
from corral.gguf import open_gguf  # noqa: E402
from corral.models.registry import load_model  # noqa: E402

PEERS = Path(os.environ.get("CORRAL_PEERS", "/tmp/corral-peers")) / "bin" / "python"
pytestmark = pytest.mark.skipif(not PEERS.exists(), reason="no llama.cpp peer environment")

# longer than the exact-bucket range (log-spaced buckets too); an input whose greedy choices
# below win by 0.05 or more, far above the logits' differences
ENC = list(range(3, 43))
DEC = [7, 9, 11, 13, 15, 17]
STEPS = 8
TEXT = "translate English to German: the house is wonderful."
F32, F16 = 0, 1  # GGML_TYPE_F32, GGML_TYPE_F16: llama.cpp's KV cache type

# For each file and KV cache type: the decoder logits for the start token then DEC (one
# llama_decode per token); with the float16 cache (llama.cpp's default) also STEPS greedy
# tokens, and STEPS greedy tokens each unlike those before it (the tiny models' plain greedy
# output repeats one token); and what llama.cpp's tokenizer makes of TEXT.
_LLAMA_CPP = """
import json, sys
import llama_cpp as L

L.llama_backend_init()
enc, dec, steps, text = json.loads(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
    assert model, "llama.cpp could not load " + path
    assert L.llama_model_has_encoder(model)
    start = L.llama_model_decoder_start_token(model)
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    res = {"start": start}
    for kv in (F32, F16):
        p = L.llama_context_default_params()
        p.n_ctx = p.n_batch = p.n_ubatch = 64
        p.n_threads = p.n_threads_batch = 1
        p.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        p.type_k = p.type_v = kv
        ctx = L.llama_init_from_model(model, p)
        assert ctx

        def run(fn, ids):
            arr = (L.llama_token * len(ids))(*ids)
            rc = fn(ctx, L.llama_batch_get_one(arr, len(ids)))
            assert rc == 0, (fn.__name__, rc)

        def last():
            row = L.llama_get_logits_ith(ctx, -1)
            return [float(row[i]) for i in range(n_vocab)]

        def greedy(fresh):
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            run(L.llama_encode, enc)
            run(L.llama_decode, [start])
            ids = []
            for _ in range(steps):
                row = last()
                ids.append(max((i for i in range(n_vocab) if not (fresh and i in ids)),
                               key=row.__getitem__))
                run(L.llama_decode, [ids[-1]])
            return ids

        run(L.llama_encode, enc)
        rows = []
        for t in [start, *dec]:
            run(L.llama_decode, [t])
            rows.append(last())
        res[kv] = {"rows": rows}
        if kv == F16:
            res[kv].update(greedy=greedy(False), fresh=greedy(True))
        L.llama_free(ctx)
    buf = (L.llama_token * 256)()
    raw = text.encode()
    n = L.llama_tokenize(vocab, raw, len(raw), buf, 256, True, False)
    res["tokens"] = list(buf[:n])
    L.llama_model_free(model)
    out[path] = res
print(json.dumps(out))
""".replace("F32", str(F32)).replace("F16", str(F16))


def _corral(path: Path) -> dict[Any, Any]:
    """What the peer script reports, from corral: logits with a float32 and the default
    (float16) KV cache, for the whole decoder input at once and one token at a time; greedy
    tokens from generate, fresh greedy tokens; the start token; TEXT's tokens."""
    import corral

    m = load_model(open_gguf(path))
    dec = torch.tensor([[m.decoder_start_id, *DEC]])
    out: dict[Any, Any] = {"start": m.decoder_start_id}
    for kv, dtype in ((F32, torch.float32), (F16, None)):
        cache = m.make_cache(32, dtype=dtype)
        m.encode(torch.tensor([ENC]), cache)
        whole = m.forward(dec, cache)[0]
        cache = m.make_cache(32, dtype=dtype)
        m.encode(torch.tensor([ENC]), cache)
        steps = torch.cat([m.forward(dec[:, i : i + 1], cache)[0] for i in range(dec.shape[1])])
        out[kv] = {"whole": whole, "steps": steps}

    cache = m.make_cache(32)
    m.encode(torch.tensor([ENC]), cache)
    logits, fresh = m.forward(dec[:, :1], cache)[0, -1], []
    for _ in range(STEPS):
        seen = torch.tensor(fresh, dtype=torch.long)
        fresh.append(int(logits.index_fill(0, seen, float("-inf")).argmax()))
        logits = m.forward(torch.tensor([fresh[-1:]]), cache)[0, -1]
    out[F16]["fresh"] = fresh

    model = corral.load(path, n_ctx=64)
    events = model.generate(ENC, max_tokens=STEPS, temperature=0, ignore_eos=True, stream=True)
    out[F16]["greedy"] = [e.token_id for e in events]
    out["tokens"] = model.tokenize(TEXT)
    return out


def test_llama_cpp_runs_converted_t5(tmp_path: Path) -> None:
    ours = {}
    for variant in sorted(CONFIGS):
        save_tiny_t5(tmp_path / variant, variant, encoder_layers=3, decoder_layers=2)
        path = convert_hf(tmp_path / variant, tmp_path / f"{variant}.gguf", "f32")
        ours[str(path)] = _corral(path)
    run = subprocess.run(
        [str(PEERS), "-c", _LLAMA_CPP, json.dumps([ENC, DEC, STEPS, TEXT]), *ours],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    for path, mine in ours.items():
        name, got = Path(path).stem, theirs[path]
        assert got["start"] == mine["start"] == 0, name
        assert got["tokens"] == mine["tokens"], name
        for kv, rel in ((F32, 2e-4), (F16, 2e-4)):
            ref = torch.tensor(got[str(kv)]["rows"])
            scale = float(ref.abs().max())
            for how in ("whole", "steps"):
                diff = float((ref - mine[kv][how]).abs().max())
                print(f"{name} kv={'f32' if kv == F32 else 'f16'} {how}: {diff:.3g} of {scale:.3g}")
                assert diff <= rel * scale, f"{name} {kv} {how}: {diff:.3g} of {scale:.3g}"
        for how in ("greedy", "fresh"):
            assert got[str(F16)][how] == mine[F16][how], f"{name} {how}"
