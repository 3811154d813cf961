#!/usr/bin/env python3
"""Embedding benchmark: corral against sentence-transformers on the same model, in one run.

    python bench/embed.py [MODEL] [--n 2000] [--batches 32,128] [--runs 1] [--threads N]
                          [--peer-python PATH] [--floor 1.0] [--out FILE]

MODEL is a store name (default minilm) or a sentence-transformers folder. Each measurement
runs in a fresh child process (so peak RSS is that library's own: model, tokenizer and
activations), corral and sentence-transformers alternating, best of --runs kept. The
sentence-transformers child runs in the peer environment (--peer-python, $CORRAL_PEER_PYTHON
or /tmp/corral-peers/bin/python), which corral never depends on.

Both embed the same --n generated sentences (5 to 150 words, so some are cut at the model's
maximum) with L2 normalization, at each batch size: sentence-transformers' `batch_size`, and
corral's `max_batch_size` (with a token budget that never binds first). Reported per batch
size: sentences/s, seconds, CPU seconds (steadier than wall time on a busy machine), peak
RSS, corral/sentence-transformers ratios, the smallest
cosine between the two libraries' vectors, and whether corral meets --floor (sentences/s
ratio). JSON goes to stdout and --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_PEER = "/tmp/corral-peers/bin/python"
WORDS = [
    "the",
    "a",
    "river",
    "city",
    "market",
    "bank",
    "engineer",
    "quietly",
    "discovered",
    "ancient",
    "bridge",
    "under",
    "heavy",
    "rain",
    "model",
    "vector",
    "search",
    "index",
    "memory",
    "network",
    "fast",
    "slow",
    "green",
    "apple",
    "report",
    "policy",
    "court",
    "music",
    "history",
    "mountain",
    "village",
    "school",
    "teacher",
    "student",
    "garden",
    "winter",
    "summer",
    "data",
    "question",
    "answer",
]


def sentences(n: int, seed: int = 7) -> list[str]:
    """n varied sentences: mostly short, a tail of long ones past 256 tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice([5, 8, 12, 16, 20, 30, 45]) if rng.random() < 0.9 else rng.randint(60, 150)
        words = [rng.choice(WORDS) for _ in range(k)]
        out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ""]))
    return out


# -- children -------------------------------------------------------------------------------


def _cpu_s() -> float:
    # CPU time of all threads: on a shared machine it measures the work done far more
    # steadily than wall time does
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(kind: str, model: str, texts_file: str, batch: int, threads: int, out_npy: str) -> None:
    """Load, warm up, embed every text once (timed); print a JSON line of figures."""
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    texts = json.loads(Path(texts_file).read_text())
    t0 = time.perf_counter()
    if kind == "corral":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from corral.embed import load_embedder

        emb = load_embedder(model)

        def run(xs: list[str]) -> np.ndarray:
            return emb.embed(xs, max_batch_size=batch, max_batch_tokens=batch * emb.max_tokens)
    else:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(model, device="cpu")

        def run(xs: list[str]) -> np.ndarray:
            return st.encode(xs, batch_size=batch, normalize_embeddings=True)

    load_s = time.perf_counter() - t0
    run(texts[: min(len(texts), batch)])  # warm-up: first-call allocations, thread pools
    t1, c1 = time.perf_counter(), _cpu_s()
    vecs = run(texts)
    seconds, cpu = time.perf_counter() - t1, _cpu_s() - c1
    np.save(out_npy, np.asarray(vecs, dtype=np.float32))
    print(
        json.dumps(
            {
                "load_s": round(load_s, 3),
                "seconds": round(seconds, 3),
                "sentences_per_s": round(len(texts) / seconds, 1),
                "cpu_s": round(cpu, 3),
                "sentences_per_cpu_s": round(len(texts) / cpu, 1),
                "peak_rss_mb": round(_peak_rss_mb(), 1),
                "threads": torch.get_num_threads(),
            }
        )
    )


# -- parent ---------------------------------------------------------------------------------


def model_folder(name: str) -> str:
    p = Path(name).expanduser()
    if p.exists():
        return str(p.resolve())
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from corral.store import Store

    return str(Store().resolve(name).path)


def child(
    python: str, kind: str, model: str, texts: str, batch: int, threads: int, npy: str
) -> dict:
    cmd = [python, __file__, "--worker", kind, model, "--texts", texts, "--batch", str(batch)]
    cmd += ["--threads", str(threads), "--npy", npy]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{kind} child failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="minilm")
    ap.add_argument("--n", type=int, default=2000, help="sentences to embed")
    ap.add_argument("--batches", default="32,128", help="batch sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=1, help="runs per engine and batch (best kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--peer-python", default=os.environ.get("CORRAL_PEER_PYTHON", DEFAULT_PEER))
    ap.add_argument("--floor", type=float, default=1.0, help="required sentences/s ratio")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--texts", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--npy", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.texts, args.batch, args.threads, args.npy)
        return 0

    import numpy as np

    folder = model_folder(args.model)
    peer = args.peer_python if Path(args.peer_python).exists() else None
    result: dict = {
        "model": args.model,
        "folder": folder,
        "sentences": args.n,
        "threads": args.threads or "default",
        "peer": peer,
        "batches": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        texts = Path(tmp) / "texts.json"
        texts.write_text(json.dumps(sentences(args.n)))
        for batch in (int(b) for b in args.batches.split(",")):
            best: dict[str, dict] = {}
            npy = {k: str(Path(tmp) / f"{k}-{batch}.npy") for k in ("corral", "st")}
            for _ in range(args.runs):
                runs = [("corral", sys.executable)] + ([("st", peer)] if peer else [])
                for kind, python in runs:
                    fig = child(python, kind, folder, str(texts), batch, args.threads, npy[kind])
                    if kind not in best or fig["sentences_per_s"] > best[kind]["sentences_per_s"]:
                        best[kind] = fig
            entry: dict = {"corral": best["corral"]}
            if peer:
                entry["sentence_transformers"] = best["st"]
                a, b = np.load(npy["corral"]), np.load(npy["st"])
                ratio = best["corral"]["sentences_per_s"] / best["st"]["sentences_per_s"]
                entry["ratio_sentences_per_s"] = round(ratio, 3)
                entry["ratio_sentences_per_cpu_s"] = round(
                    best["corral"]["sentences_per_cpu_s"] / best["st"]["sentences_per_cpu_s"], 3
                )
                entry["ratio_peak_rss"] = round(
                    best["corral"]["peak_rss_mb"] / best["st"]["peak_rss_mb"], 3
                )
                entry["min_cosine"] = round(float((a * b).sum(1).min()), 6)
                entry["meets_floor"] = ratio >= args.floor
            result["batches"][str(batch)] = entry
            print(f"batch {batch}: {json.dumps(entry)}", file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
