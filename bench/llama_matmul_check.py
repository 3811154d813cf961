#!/usr/bin/env python3
"""Every quantized matmul of a Gemma 3 forward, corral's kernels against llama.cpp's own output.

    python bench/llama_matmul_check.py DUMP.npz [MODEL.gguf]

DUMP.npz holds the float32 tensors of one llama.cpp forward pass by name (written by a
cb_eval dumper, e.g. /tmp/dump_llama.py, run on an AVX2 build of llama-cpp-python with its
default extra buffer types, so that Q4_K weights are repacked to q4_K_8x8). For every layer the
inputs llama.cpp fed to each matmul (attn_norm -> q/k/v, kqv_out -> attn_output, ffn_norm ->
gate/up, ffn_geglu -> ffn_down) go through corral.kernels.qmatmul with the same weight bytes;
the result must equal llama.cpp's output bit for bit. Prints one line per weight type and
matmul with the count of mismatching values, and exits 1 if any.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from corral import kernels  # noqa: E402
from corral.gguf.reader import GGUFFile  # noqa: E402

MODEL = "/tmp/corral-peers/models/gemma-3-270m-q4_k_m.gguf"


def main() -> int:
    dump = np.load(sys.argv[1])
    gg = GGUFFile(sys.argv[2] if len(sys.argv) > 2 else MODEL)
    tensors = gg.tensors
    n_layers = 1 + max(int(n.split(".")[1]) for n in tensors if n.startswith("blk."))
    # the attention output projection's result has no name of its own in llama.cpp's graph:
    # it is the unnamed [*, T, E] node fed to attn_post_norm, node_34 + 45 * layer in Gemma 3
    wo_out = sorted(
        (
            k
            for k in dump.files
            if k.startswith("node_")
            and dump[k].shape[-1] == dump["embd"].shape[-1]
            and " " not in k
        ),
        key=lambda k: int(k.split("_")[1]),
    )
    stats: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    bad = 0
    for i in range(n_layers):
        p = f"blk.{i}."
        jobs = [
            ("attn_q", f"attn_norm-{i}", f"Qcur-{i}"),
            ("attn_k", f"attn_norm-{i}", f"Kcur-{i}"),
            ("attn_v", f"attn_norm-{i}", f"Vcur-{i}"),
            ("attn_output", f"kqv_out-{i}", wo_out[i]),
            ("ffn_gate", f"ffn_norm-{i}", f"ffn_gate-{i}"),
            ("ffn_up", f"ffn_norm-{i}", f"ffn_up-{i}"),
            ("ffn_down", f"ffn_geglu-{i}", f"ffn_out-{i}"),
        ]
        for name, src, dst in jobs:
            t = tensors[p + name + ".weight"]
            k, n = t.shape[1], t.shape[0]
            x = torch.from_numpy(dump[src].reshape(-1, k).copy())
            want = dump[dst].reshape(-1, n)
            w = torch.from_numpy(np.ascontiguousarray(t.data)).view(torch.uint8).reshape(n, -1)
            got = kernels.qmatmul(x, w, t.ggml_type, n, k).numpy()
            diff = int((got.view(np.uint32) != want.view(np.uint32)).sum())
            s = stats[(t.ggml_type.name, name)]
            s[0] += diff
            s[1] += got.size
            bad += diff
    rows = dump["embd"].reshape(-1, dump["embd"].shape[-1]).shape[0]
    print(f"{rows} token(s), {n_layers} layers")
    for (ty, name), (d, total) in sorted(stats.items()):
        print(f"  {ty:5s} {name:12s} {d:7d} of {total:8d} values differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
