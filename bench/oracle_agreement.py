#!/usr/bin/env python3
"""How far llama.cpp builds agree with the oracles' greedy continuations, next to corral: for
each oracle case, the number of the 32 greedy tokens equal to the oracle's before the first
difference. Runs llama.cpp in peer environments (child processes).

    python bench/oracle_agreement.py [--peer-python /tmp/corral-peers/bin/python]
        [--avx2-python /tmp/llama-avx2/bin/python] [--models /tmp/corral-peers/models]
        [--out FILE]

The oracles were written by llama.cpp on an AVX2 machine; float sums are ordered by the SIMD
width and the kernels the build picks, so llama.cpp itself reproduces them exactly only
where its build takes the same code paths. `--peer-python`: the native build here (AVX-512;
its CPU "extra buffer types" off, since they crash on this VM, as bench/generate.py
--llama-extra-bufts off). `--avx2-python` (optional): llama-cpp-python 0.3.36 built with
GGML_NATIVE=OFF and AVX2/FMA/F16C only (see BENCHMARKS.md), extra buffer types on as by
default: the oracle machine's configuration.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORACLES = ROOT.parent / "shared" / "oracles"
FILES = {"smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3": "gemma-3-270m-q4_k_m.gguf"}
STORE_NAMES = {"smollm2": "smollm2", "gemma3": "gemma3-270m"}

LLAMA_CHILD = """
import json, sys
import numpy as np
import llama_cpp
import llama_cpp.llama_cpp as lib
if sys.argv[2] == "off":
    defaults = lib.llama_model_default_params
    def params():
        p = defaults(); p.use_extra_bufts = False; return p
    lib.llama_model_default_params = params
from llama_cpp import Llama
path, cases = sys.argv[1], json.loads(sys.stdin.read())
llm = Llama(path, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=2, verbose=False)
out = []
for prompt in cases:
    llm.reset(); llm.eval(prompt); ids = []
    for _ in range(32):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                       shape=(llm.n_vocab(),))
        ids.append(int(np.argmax(logits))); llm.eval([ids[-1]])
    out.append(ids)
print(json.dumps(out))
"""


def llama(python: str, path: Path, bufts: str, prompts: list[list[int]]) -> list[list[int]]:
    """Greedy continuations by llama.cpp in the environment of `python` (extra buffer types
    "on" or "off")."""
    child = subprocess.run(
        [python, "-c", LLAMA_CHILD, str(path), bufts],
        input=json.dumps(prompts), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(child.stdout.strip().splitlines()[-1])


def agree(got: list[int], want: list[int]) -> int:
    """Tokens equal before the first difference."""
    return next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), len(want))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer-python", default="/tmp/corral-peers/bin/python")
    ap.add_argument("--avx2-python", default=None)
    ap.add_argument("--models", default="/tmp/corral-peers/models")
    ap.add_argument("--out")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import corral

    report: dict = {}
    for short, fname in FILES.items():
        oracle = json.loads((ORACLES / f"oracle_{short}.json").read_text())
        cases = oracle["greedy"]["cases"]
        prompts = [c["prompt_ids"] for c in cases]
        path = Path(a.models) / fname
        llama_ids = llama(a.peer_python, path, "off", prompts)
        avx2_ids = (
            llama(a.avx2_python, path, "on", prompts) if a.avx2_python else [None] * len(cases)
        )
        model = corral.load(STORE_NAMES[short])
        rows = []
        for case, lids, aids in zip(cases, llama_ids, avx2_ids, strict=True):
            want = case["generated_ids"]
            ours = model.generate(
                case["prompt_ids"], max_tokens=len(want), temperature=0, ignore_eos=True
            ).token_ids
            row = {"prompt_tokens": len(case["prompt_ids"]), "llama_cpp_here": agree(lids, want)}
            if aids is not None:
                row["llama_cpp_avx2_build"] = agree(aids, want)
            row["corral"] = agree(ours, want)
            rows.append(row)
        report[short] = rows
        print(short, json.dumps(rows), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
