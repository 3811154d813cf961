"""`corral pull`, `list`, `rm` and `cp`: the verbs that manage the model store."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from corral.cli.output import human_age, human_size, parse_time, table

if TYPE_CHECKING:
    from corral.store import ModelRef, Store


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the store verbs."""
    p = sub.add_parser(
        "pull",
        help="fetch a model into the store",
        description="Fetch a model: a known name (smollm2, gemma3-270m), hf:ORG/REPO/FILE.gguf, "
        "an http(s) URL[#sha256=HEX] or a local .gguf file.",
    )
    p.add_argument("source", metavar="NAME_OR_SOURCE", help="what to pull")
    p.add_argument("--name", help="store it under this name[:tag]")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("list", help="list stored models")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("rm", help="remove models from the store")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model name[:tag]")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("cp", help="give a stored model another name (no bytes copied)")
    p.add_argument("source", metavar="SRC")
    p.add_argument("destination", metavar="DST")
    p.set_defaults(func=cmd_cp)


def pull_with_progress(spec: str, store: Store, name: str | None = None) -> ModelRef:
    """Pull `spec` with a rich progress bar on stderr (stdout stays clean for pipes).

    The bar starts with the first progress report, so a pull that fails at once (a bad
    name, an unreachable host) prints its error alone rather than after an empty bar.
    """
    from contextlib import ExitStack

    from rich.console import Console

    from corral.store import pull, rich_progress

    with ExitStack() as stack:
        bar = None

        def progress(desc: str, done: int, total: int | None) -> None:
            nonlocal bar
            if bar is None:
                bar = stack.enter_context(rich_progress(Console(stderr=True)))
            bar(desc, done, total)

        return pull(spec, store, progress, name=name)


def cmd_pull(args: argparse.Namespace) -> int:
    """Fetch a model and say where it went."""
    from corral.store import Store

    ref = pull_with_progress(args.source, Store(), args.name)
    print(f"success: {ref.full_name} ({human_size(ref.size)}, {_short_id(ref)})")
    return 0


def _short_id(ref: ModelRef) -> str:
    # 12 hex digits, as ollama and docker show image ids
    return (ref.digest or "").removeprefix("sha256:")[:12] or "-"


def cmd_list(args: argparse.Namespace) -> int:
    """Print the stored models as a table, like `ollama list`."""
    from corral.store import Store

    rows = [
        [
            ref.full_name,
            _short_id(ref),
            human_size(ref.size),
            human_age(parse_time(ref.manifest.get("created"))),
        ]
        for ref in Store().list()
    ]
    print(table(["NAME", "ID", "SIZE", "MODIFIED"], rows))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Remove each model named; report every failure, not only the first."""
    from corral.errors import CorralError
    from corral.store import Store

    store, status = Store(), 0
    for name in args.models:
        try:
            ref = store.remove(name)
        except CorralError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
        else:
            print(f"deleted '{ref.full_name}'")
    return status


def cmd_cp(args: argparse.Namespace) -> int:
    """Name a stored model a second way."""
    from corral.store import Store

    ref = Store().copy(args.source, args.destination)
    print(f"copied '{args.source}' to '{ref.full_name}'")
    return 0
