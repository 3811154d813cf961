"""`corral convert HF_FOLDER -o out.gguf [--outtype f16|bf16|q8_0|f32]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_OUTTYPES = ("f16", "bf16", "q8_0", "f32")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `corral convert`."""
    p = sub.add_parser("convert", help="convert a Hugging Face model folder to a GGUF file")
    p.add_argument("folder", help="folder with config.json, weights and tokenizer files")
    p.add_argument("-o", "--output", required=True, help="the .gguf file to write")
    p.add_argument(
        "--outtype", choices=_OUTTYPES, default="f16", help="type of the weight matrices"
    )
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert, then say what was written."""
    from corral.convert import convert_hf  # imports torch: only when the command runs

    out = convert_hf(Path(args.folder), Path(args.output), args.outtype)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.1f} MB, {args.outtype})", file=sys.stderr)
    return 0
