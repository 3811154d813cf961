"""`corral run MODEL [PROMPT]`: answer one prompt, or chat in a REPL.

With a prompt (or text piped on stdin) it answers once and exits; on a terminal without one
it opens the REPL. A known model that is not stored yet is pulled first, as ollama does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from corral.cli.output import isatty
from corral.cli.params import PARAMS

# Flags for the parameters people tune most; the REPL's /set parameter reaches all of them.
_FLAGS = {
    "--temperature": "temperature",
    "--top-k": "top_k",
    "--top-p": "top_p",
    "--min-p": "min_p",
    "--repeat-penalty": "repeat_penalty",
    "--seed": "seed",
    "--max-tokens": "num_predict",
    "--ctx": "num_ctx",
}


def _arg_type(name: str) -> Any:
    """An argparse type that checks a value as /set parameter does, with the same message."""

    def convert(text: str) -> Any:
        try:
            return PARAMS[name].parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `corral run`."""
    p = sub.add_parser(
        "run",
        help="chat with a model, or answer one prompt",
        description="Answer PROMPT (or text piped on stdin) and exit; without one, on a "
        'terminal, chat: """ starts a multi-line message, /? lists the commands.',
    )
    p.add_argument("model", help="model name, known pullable name, or .gguf path")
    p.add_argument("prompt", nargs="*", help="the prompt (words are joined with spaces)")
    p.add_argument("--verbose", action="store_true", help="print timings after each answer")
    p.add_argument("--system", metavar="TEXT", help="system message")
    p.add_argument("--nowordwrap", action="store_true", help="don't wrap words at the margin")
    p.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="chat even when stdin is not a terminal (reads REPL lines from it)",
    )
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for the model")
    for flag, name in _FLAGS.items():
        kind = "N" if name in ("top_k", "seed", "num_predict", "num_ctx") else "X"
        p.add_argument(flag, dest=name, type=_arg_type(name), metavar=kind, help=PARAMS[name].help)
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    p.add_argument(
        "--format",
        metavar="json|SCHEMA_FILE",
        help="answer in JSON: any object, or following the JSON schema in a file",
    )
    p.add_argument(
        "--tool",
        action="append",
        metavar="MODULE:FUNCTION",
        help="a Python function the model may call (repeatable; file.py:function works too)",
    )
    p.set_defaults(func=cmd_run)


def resolve_or_pull(name: str, err: Any = None) -> Any:
    """The store's ModelRef for `name`; a known model missing from the store is pulled."""
    from corral.errors import ModelNotFoundError
    from corral.store import KNOWN_MODELS, Store

    store = Store()
    try:
        return store.resolve(name)
    except ModelNotFoundError:
        if name.strip().lower().removesuffix(":latest") not in KNOWN_MODELS:
            raise
    from corral.cli.models import pull_with_progress

    print(f"pulling {name}...", file=err or sys.stderr)
    return pull_with_progress(name, store)


def load_model(path: Any, n_ctx: int | None, threads: int | None, err: Any = None) -> Any:
    """Load a model, with a spinner on a terminal (loading takes a moment)."""
    from corral.model import load

    err = err or sys.stderr
    if not isatty(err):
        return load(path, n_ctx=n_ctx, threads=threads)
    from rich.console import Console

    with Console(file=err).status("loading model..."):
        return load(path, n_ctx=n_ctx, threads=threads)


def _prompt_text(args: argparse.Namespace, stdin: Any) -> str:
    """The one-shot prompt: piped text first, then the arguments (as ollama joins them)."""
    prompt = " ".join(args.prompt)
    if not isatty(stdin):
        piped = stdin.read()
        if piped.strip():
            prompt = f"{piped.rstrip()}\n\n{prompt}" if prompt else piped.rstrip()
    return prompt


def cmd_run(args: argparse.Namespace) -> int:
    """Answer once, or run the REPL; 130 when Ctrl-C stops a one-shot answer."""
    from corral.cli.session import Session
    from corral.errors import CorralError

    stdin, stdout = sys.stdin, sys.stdout
    params = {name: getattr(args, name) for name in _FLAGS.values()}
    params = {k: v for k, v in params.items() if v is not None}
    if args.stop:
        params["stop"] = list(args.stop)
    interactive = args.interactive or (not args.prompt and isatty(stdin))
    prompt = " ".join(args.prompt) if interactive else _prompt_text(args, stdin)
    if not interactive and not prompt.strip():
        raise CorralError("no prompt: give one after the model name, or pipe text to stdin")

    from corral.cli.structured import wrap

    wrap(None, args.format, args.tool)  # a bad --format or --tool fails before loading
    ref = resolve_or_pull(args.model)
    model = wrap(load_model(ref.path, params.get("num_ctx"), args.threads), args.format, args.tool)
    session = Session(
        model,
        params,
        system=args.system,
        verbose=args.verbose,
        wordwrap=not args.nowordwrap,
        loader=lambda n_ctx: wrap(
            load_model(ref.path, n_ctx, args.threads), args.format, args.tool
        ),
        out=stdout,
        err=sys.stderr,
    )
    if prompt.strip():
        answer = session.ask(prompt)
        if answer.interrupted and not interactive:
            return 130
    if not interactive:
        return 0
    from corral.cli.repl import Repl, make_reader
    from corral.store.store import default_home

    reader = make_reader(stdin, stdout, default_home() / "history")
    return Repl(session, reader, stdout).run()
