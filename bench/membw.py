#!/usr/bin/env python3
"""The memory-bandwidth bound on decode speed, for corral and HF transformers on one GGUF.

    python bench/membw.py [MODEL] [--threads 2] [--mb 512] [--runs 30] [--out FILE]

One decoded token reads every weight once. When a machine streams memory at B bytes/s, an
engine that reads W bytes of weights per token decodes at most B / W tokens/s, so two
memory-bound engines can differ by at most the ratio of their weight bytes. This prints, as
JSON: the bandwidth torch reaches summing a buffer much larger than the caches (--mb, with
--threads threads; best and median of --runs), the weight bytes per token of corral (the GGUF
tensors as stored: quantized blocks are read as they are) and of HF transformers (every
parameter in float32, as `from_pretrained(..., gguf_file=...)` dequantizes them; tied
embeddings counted once, as the output head reads them), and the tokens/s each bound allows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def model_path(name: str) -> Path:
    """A .gguf path as given, else the store's file for that name."""
    p = Path(name)
    if p.suffix == ".gguf" or p.exists():
        return p
    from corral.store import Store

    return Path(Store().resolve(name).path)


def weight_bytes(path: Path) -> dict[str, int]:
    """Bytes one token reads: the GGUF's 2-D tensors as stored, and as float32 parameters.

    The token embedding is read one row per token, unless the file has no output.weight,
    in which case the output head reads all of it (tied embeddings)."""
    from corral.gguf import open_gguf

    with open_gguf(path) as g:
        stored = f32 = 0
        tied = "output.weight" not in g.tensors
        for name, info in g.tensors.items():
            if len(info.shape) < 2:
                continue  # norms and biases: a few kB
            if name == "token_embd.weight" and not tied:
                continue
            stored += info.data.nbytes
            n = 1
            for d in info.shape:
                n *= d
            f32 += 4 * n
    return {"corral": stored, "transformers": f32}


def bandwidth(mb: int, threads: int, runs: int) -> dict[str, float]:
    """GB/s of torch.sum over an `mb` MiB float32 buffer: best and median of `runs`."""
    torch.set_num_threads(threads)
    x = torch.ones(mb * 2**20 // 4, dtype=torch.float32)
    for _ in range(3):
        x.sum()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t)
    gb = x.nbytes / 1e9
    return {"best_gb_s": gb / min(times), "median_gb_s": gb / statistics.median(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out")
    a = ap.parse_args()
    path = model_path(a.model)
    w = weight_bytes(path)
    bw = bandwidth(a.mb, a.threads, a.runs)
    bound = {k: {g: bw[g] * 1e9 / v for g in bw} for k, v in w.items()}
    out = {
        "model": a.model,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "bandwidth": {k: round(v, 2) for k, v in bw.items()},
        "weight_mb_per_token": {k: round(v / 1e6, 1) for k, v in w.items()},
        "max_decode_tps": {k: {g: round(t, 1) for g, t in v.items()} for k, v in bound.items()},
        "max_ratio_corral_vs_transformers": round(w["transformers"] / w["corral"], 2),
    }
    text = json.dumps(out, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
