"""`corral lsp`: the code-completion language server on stdio (llm-ls compatible).

pygls and torch are imported only when the command runs, so `corral --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `lsp`."""
    p = sub.add_parser(
        "lsp",
        help="code-completion language server on stdio (llm-ls compatible)",
        description="A language server on stdin/stdout that completes code with a local "
        "model: llm-ls's llm-ls/getCompletions (llm.nvim, llm-vscode, llm-intellij) and the "
        "standard textDocument/inlineCompletion and textDocument/completion. The model "
        "loads once and keeps the file's prefix in its prompt cache between keystrokes.",
    )
    p.add_argument("--model", "-m", metavar="M",
                   help="store name or .gguf path (default: the `model` the first "
                   "llm-ls/getCompletions request names)")  # fmt: skip
    p.add_argument("--ctx", type=_positive, metavar="N",
                   help="context size (default: the model's, at most 4096)")  # fmt: skip
    p.add_argument("--max-tokens", type=_positive, default=64, metavar="N",
                   help="tokens per completion unless the request says (default 64)")  # fmt: skip
    p.add_argument("--spm", action="store_true",
                   help="suffix-prefix-middle order: the suffix stays cached while typing "
                   "(for models trained on it: StarCoder, CodeLlama)")  # fmt: skip
    p.add_argument("--no-fim", action="store_true",
                   help="complete from the prefix alone (models without FIM tokens)")  # fmt: skip
    p.add_argument("--log-file", metavar="PATH", help="write a debug log here")
    p.set_defaults(func=cmd_lsp)


def _positive(text: str) -> int:
    n = int(text)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return n


def cmd_lsp(args: argparse.Namespace) -> int:
    from corral.fim import FimOrder
    from corral.lsp.complete import Completer, FimMode
    from corral.lsp.server import build_server

    if args.log_file:
        logging.basicConfig(filename=args.log_file, level=logging.DEBUG)
    order = FimOrder.SPM if args.spm else FimOrder.PSM
    completer = Completer(args.model, args.ctx, order)
    if args.model:
        # load before serving: a bad name is reported at start, not at the first keystroke
        completer.load()
        print(f"corral lsp: {completer.model!r} ready", file=sys.stderr)
    mode = FimMode.PREFIX if args.no_fim else FimMode.FIM
    server = build_server(completer, mode, args.max_tokens)
    try:
        server.start_io()
    finally:
        completer.close()
    return 0
