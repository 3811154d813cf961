"""The `corral` command: argparse subcommands, one module per verb group.

Importing this module must stay cheap (`corral --help` and `corral list` answer at once):
torch, the model and the store are imported inside the command functions, never here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from corral import __version__
from corral.cli import (
    convert,
    embed,
    lsp,
    migrate,
    models,
    quantize,
    rag,
    run,
    serve,
    show,
    summarize,
)


def build_parser() -> argparse.ArgumentParser:
    """The full `corral` argument parser."""
    parser = argparse.ArgumentParser(
        prog="corral",
        description="Run open LLMs on your own machine, straight from GGUF files.",
        epilog="Models are kept in $CORRAL_HOME (default ~/.cache/corral).",
    )
    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run.add_parser(sub)
    models.add_parsers(sub)
    show.add_parser(sub)
    serve.add_parsers(sub)
    embed.add_parser(sub)
    convert.add_parser(sub)
    quantize.add_parsers(sub)
    migrate.add_parser(sub)
    lsp.add_parser(sub)
    rag.add_parsers(sub)
    summarize.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `corral` command line; returns the exit status.

    Every CorralError becomes one `Error: ...` line on stderr and status 1, with no traceback:
    those messages are written for users. Other exceptions are bugs and keep their traceback.
    """
    from corral.errors import CorralError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors; callers get a status
        return _status(e.code)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CorralError as e:
        print(f"Error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `corral run m "..." | head`: the reader left; say nothing, as other Unix tools do.
        _silence_stdout()
        return 0


def _status(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _silence_stdout() -> None:
    """Point stdout at devnull so that flushing it at exit does not raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
