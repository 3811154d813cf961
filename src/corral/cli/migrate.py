"""`corral migrate`: turn an old GGML/GGMF/GGJT llama .bin file into a GGUF model."""

from __future__ import annotations

import argparse
from pathlib import Path

MIB = 1024 * 1024


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `corral migrate`."""
    p = sub.add_parser(
        "migrate",
        help="convert an old GGML/GGMF/GGJT llama .bin file to GGUF",
        description="Read a pre-GGUF llama.cpp model (unversioned GGML, GGMF v1, GGJT v1-v3: "
        "the .bin files of early llama.cpp, alpaca.cpp, gpt4all) and write it as GGUF, "
        "keeping its quantization (old block layouts are repacked).",
    )
    p.add_argument(
        "input", type=Path, help="the legacy .bin file (its first part: INPUT.1, ... follow)"
    )
    p.add_argument("-o", "--output", type=Path, help="output .gguf (default: INPUT.gguf)")
    p.add_argument(
        "--outtype",
        choices=["auto", "f16", "f32"],
        default="auto",
        help="auto keeps each tensor's quantization; f16/f32 store float weights",
    )
    p.add_argument(
        "--ctx", type=int, default=2048, metavar="N", help="context length to record (2048)"
    )
    p.add_argument(
        "--eps", type=float, default=1e-6, metavar="X", help="RMS norm epsilon (LLaMA 1: 1e-6)"
    )
    p.add_argument("--name", help="model name to record (default: the file's stem)")
    p.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    from corral.legacy import OutType, migrate

    out = args.output or args.input.with_suffix(".gguf")
    r = migrate(args.input, out, OutType(args.outtype), args.ctx, args.eps, args.name)
    types = ", ".join(f"{k}: {v}" for k, v in r.types.items())
    print(f"read a {r.container} llama file: {r.n_tensors} tensors, {r.n_vocab} tokens")
    print(f"tensor types: {types}")
    print(f"wrote {out} ({r.file_bytes / MIB:.2f} MiB)")
    return 0
