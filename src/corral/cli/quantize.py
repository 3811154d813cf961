"""`corral quantize` and `corral perplexity`: make a smaller model file, and measure what
it cost in quality on a text.

Both import torch and the model code inside the command functions only (`corral --help`
must stay fast).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MIB = 1024 * 1024


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `corral quantize` and `corral perplexity`."""
    q = sub.add_parser(
        "quantize",
        help="write a GGUF model in another quantization type",
        description="Quantize IN (a GGUF model, ideally F16/BF16/F32) to OUT with TYPE's "
        "per-tensor type mix, as llama-quantize does, and report the size change. "
        "With --perplexity FILE, also measure both models' perplexity on FILE.",
    )
    q.add_argument("input", type=Path, metavar="IN", help="source .gguf file")
    q.add_argument("output", type=Path, metavar="OUT", help="destination .gguf file")
    q.add_argument(
        "type",
        metavar="TYPE",
        help="Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, "
        "Q5_K_S, Q5_K_M, Q6_K, F16 or F32",
    )
    q.add_argument(
        "--allow-requantize",
        action="store_true",
        help="quantize tensors that are already quantized (loses quality twice)",
    )
    q.add_argument("--perplexity", type=Path, metavar="FILE", help="text to compare PPL on")
    q.add_argument("--ctx", type=int, default=128, metavar="N", help="PPL chunk size (128)")
    q.add_argument("--chunks", type=int, metavar="N", help="PPL: use at most N chunks")
    q.add_argument("--quiet", action="store_true", help="no per-tensor lines")
    q.set_defaults(func=cmd_quantize)

    p = sub.add_parser(
        "perplexity",
        help="measure a model's perplexity on a text file",
        description="llama.cpp's method: chunks of --ctx tokens, each scored on its second "
        "half; prints the running PPL per chunk and the final estimate with its error.",
    )
    p.add_argument("model", help="model name or .gguf path")
    p.add_argument("file", type=Path, help="text file")
    p.add_argument("--ctx", type=int, default=512, metavar="N", help="chunk size (512)")
    p.add_argument("--chunks", type=int, metavar="N", help="use at most N chunks")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads")
    p.set_defaults(func=cmd_perplexity)


def _read_text(path: Path) -> str:
    from corral.errors import CorralError

    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorralError(f"{path}: no such file") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise CorralError(f"{path}: cannot read it as UTF-8 text ({type(e).__name__})") from None


def _ppl(model_path: str, text: str, ctx: int, chunks: int | None, label: str) -> float:
    import corral
    from corral.perplexity import perplexity

    model = corral.load(model_path)

    def show(i: int, n: int, running: float) -> None:
        print(f"[{i + 1}]{running:.4f},", end="\n" if i + 1 == n else "", flush=True)

    print(f"perplexity of {label}: ", end="", flush=True)
    r = perplexity(model, text, ctx, chunks, on_chunk=show)
    print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.error:.5f}")
    return r.ppl


def cmd_quantize(args: argparse.Namespace) -> int:
    from corral.quantize.file import TensorChange, quantize_file
    from corral.quantize.mix import Scheme

    scheme = Scheme.parse(args.type)  # a bad TYPE fails before any work
    text = _read_text(args.perplexity) if args.perplexity else None

    def progress(i: int, n: int, c: TensorChange) -> None:
        if not args.quiet:
            shape = "x".join(str(d) for d in c.shape)
            print(f"[{i:4d}/{n}] {c.name:<40} {shape:>14}  {c.src.name:>5} -> {c.dst.name}")

    r = quantize_file(args.input, args.output, scheme, args.allow_requantize, progress)
    types = ", ".join(f"{k}: {v}" for k, v in r.type_counts().items())
    print(f"model size  = {r.bytes_in / MIB:8.2f} MiB ({r.bpw_in:.2f} BPW)")
    print(f"quant size  = {r.bytes_out / MIB:8.2f} MiB ({r.bpw_out:.2f} BPW)")
    print(f"file size   = {r.file_bytes_in / MIB:.2f} MiB -> {r.file_bytes_out / MIB:.2f} MiB")
    print(f"tensor types: {types}")
    print(f"wrote {args.output} ({scheme.name}) in {r.seconds:.1f} s")
    if text is not None:
        before = _ppl(str(args.input), text, args.ctx, args.chunks, str(args.input.name))
        after = _ppl(str(args.output), text, args.ctx, args.chunks, str(args.output.name))
        change = (after / before - 1) * 100
        print(f"perplexity: {before:.4f} -> {after:.4f} ({change:+.2f}%)")
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    import corral
    from corral.perplexity import perplexity

    text = _read_text(args.file)
    model = corral.load(args.model, threads=args.threads)

    def show(i: int, n: int, running: float) -> None:
        print(f"[{i + 1}]{running:.4f},", end="\n" if i + 1 == n else "", flush=True)

    print(f"perplexity: {args.ctx}-token chunks, scoring the second half of each", file=sys.stderr)
    r = perplexity(model, text, args.ctx, args.chunks, on_chunk=show)
    print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.error:.5f}")
    print(
        f"{r.n_chunks} chunks, {r.n_scored} tokens scored of {r.n_tokens}, {r.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0
