"""`corral summarize FILE`: map-reduce summary of a text of any length (corral.chains).

The final summary streams to stdout; a progress bar (map calls, then collapse rounds) goes
to stderr and is cleared when the final combine starts, so only the summary stays on screen.
--verbose adds one stderr line with the shape of the work (chunks, calls, rounds).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_MODEL = "smollm2"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `corral summarize`."""
    p = sub.add_parser(
        "summarize",
        help="summarize a long text file (map-reduce over chunks)",
        description="Summarize FILE (text, Markdown, reST, code, HTML or PDF) with a chat "
        "model: each chunk is summarized, then the summaries are combined, again and again "
        "until they fit one prompt.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--model", "-m", default=DEFAULT_MODEL, help=f"chat model (default {DEFAULT_MODEL})"
    )
    p.add_argument("--chunk-tokens", type=int, metavar="N",
                   help="model tokens of text per chunk (default: what the context leaves, "
                        "at most 2048)")  # fmt: skip
    p.add_argument("--summary-tokens", type=int, default=256, metavar="N",
                   help="most tokens of each summary (default 256)")  # fmt: skip
    p.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    p.add_argument(
        "--ctx", type=int, metavar="N", help="context size (default: the model's, at most 4096)"
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: one per core)")
    p.add_argument("--verbose", "-v", action="store_true", help="print chunk and call counts")
    p.set_defaults(func=cmd_summarize)


def cmd_summarize(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    import corral
    from corral.chains.summarize import MapReduceSummarizer, read_document

    text = read_document(args.file)  # before loading the model: a bad path fails at once
    model = corral.load(args.model, n_ctx=args.ctx, threads=args.threads)
    err = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=err, transient=True)  # fmt: skip
    task = bar.add_task("splitting", total=None)

    def on_progress(p: Any) -> None:
        label = "summarizing chunks" if p.stage == "map" else f"combining (round {p.round})"
        bar.update(task, description=label, completed=p.done, total=p.total)

    summarizer = MapReduceSummarizer(
        model, chunk_tokens=args.chunk_tokens, summary_tokens=args.summary_tokens,
        on_progress=on_progress, temperature=args.temperature,
    )  # fmt: skip
    started = False

    def write(piece: str) -> None:
        nonlocal started
        if not started:  # the bar leaves the screen before the summary starts
            bar.stop()
            started = True
        sys.stdout.write(piece)
        sys.stdout.flush()

    with bar:
        chunks = summarizer.split(text)
        bar.update(task, description="summarizing chunks", total=len(chunks))
        result = summarizer.summarize_chunks(chunks, on_text=write)
    print()
    if args.verbose:
        rounds = ",".join(map(str, result.collapse_rounds)) or "none"
        print(f"{result.chunks} chunks of at most {summarizer.chunk_tokens} tokens, "
              f"{result.map_calls} map calls, collapse rounds: {rounds}, "
              f"{result.combine_calls} combine calls", file=sys.stderr)  # fmt: skip
    return 0
