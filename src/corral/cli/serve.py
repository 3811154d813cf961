"""`corral serve` (the HTTP server) and `corral create` (a model from a Modelfile).

Both import the server package only when they run: fastapi and torch stay out of
`corral --help`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `serve` and `create`."""
    from corral.server.config import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser(
        "serve",
        help="serve models over OpenAI- and ollama-compatible HTTP APIs",
        description="Serve stored models over HTTP: OpenAI's /v1 API, ollama's /api, and "
        "llama.cpp's /health, /tokenize, /metrics. Models load on first use.",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (all but /health)")
    p.add_argument("--bearer-token", metavar="TOKEN",
                   help="token the retrieval plugin routes (/upsert, /query, /delete) require "
                   "(default $CORRAL_BEARER_TOKEN; unset: open)")  # fmt: skip
    p.add_argument("--retrieval-collection", default="default", metavar="NAME",
                   help="RAG collection the retrieval plugin routes use (default 'default')")  # fmt: skip
    p.add_argument("--retrieval-embedder", metavar="MODEL",
                   help="embedding model of a collection /upsert creates (default: the only "
                   "one stored)")  # fmt: skip
    p.add_argument("--models-max", type=_positive, default=3, metavar="N",
                   help="models loaded at once; the least recently used goes first (default 3)")  # fmt: skip
    p.add_argument("--max-queue", type=_positive, default=64, metavar="N",
                   help="requests waiting per model before 503 (default 64)")  # fmt: skip
    p.add_argument("--keep-alive", default="5m", metavar="DURATION",
                   help="how long an idle model stays loaded: 5m, 1h, 0, -1 = forever")  # fmt: skip
    p.add_argument("--ctx", type=_positive, metavar="N",
                   help="context size models load with (default: the model's, at most 4096)")  # fmt: skip
    p.add_argument("--memory", type=_positive, metavar="MB",
                   help="memory budget for loaded model files, in MB (default: no limit)")  # fmt: skip
    p.add_argument("--slots", type=_positive, default=4, metavar="N",
                   help="requests per model decoded together in one batch (default 4)")  # fmt: skip
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="a LoRA adapter (GGUF file or PEFT folder) for requests to use, by id "
                   "in the order given; applied at SCALE (default 1) unless a request's "
                   "'lora' field says otherwise (repeatable)")  # fmt: skip
    p.add_argument("--lora-scaled", nargs=2, action="append", default=[],
                   metavar=("FILE", "SCALE"), help="as --lora FILE:SCALE (llama.cpp's spelling)")  # fmt: skip
    p.add_argument("--lora-init-without-apply", action="store_true",
                   help="load the adapters at scale 0: only requests naming them use them")  # fmt: skip
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "create",
        help="create a model from a Modelfile",
        description="Create a model from a Modelfile (FROM, PARAMETER, TEMPLATE, SYSTEM, "
        "MESSAGE, LICENSE). TEMPLATE is a Jinja2 chat template. No weights are copied.",
    )
    p.add_argument("name", metavar="NAME", help="the new model's name[:tag]")
    p.add_argument("-f", "--file", default="Modelfile", help="the Modelfile (default ./Modelfile)")
    p.set_defaults(func=cmd_create)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until Ctrl-C."""
    import logging

    import uvicorn

    from corral.errors import CorralError
    from corral.server import ServerConfig, create_app
    from corral.server.durations import parse_keep_alive

    try:
        keep_alive = parse_keep_alive(args.keep_alive)
    except ValueError as e:
        raise CorralError(str(e)) from None
    lora = _lora_specs(args)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        # read here, not at import: the environment is the user's at `corral serve` time
        bearer_token=args.bearer_token or os.environ.get("CORRAL_BEARER_TOKEN") or None,
        retrieval_collection=args.retrieval_collection,
        retrieval_embedder=args.retrieval_embedder,
        models_max=args.models_max,
        max_queue=args.max_queue,
        keep_alive=keep_alive,
        n_ctx=args.ctx,
        memory_budget=args.memory * 1024 * 1024 if args.memory else None,
        slots=args.slots,
        lora=lora,
        lora_apply=not args.lora_init_without_apply,
    )
    # the server's own lines (model loads, unloads) in uvicorn's style, on stderr
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    print(f"corral serving on http://{args.host}:{args.port} (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="info")
    return 0


def _lora_specs(args: argparse.Namespace) -> tuple[tuple[str, float], ...]:
    """--lora and --lora-scaled in one list (--lora ones first, as ids count them); a
    missing file fails now rather than at the first request."""
    from corral.errors import CorralError
    from corral.server.loras import parse_lora_arg

    specs = [parse_lora_arg(text) for text in args.lora]
    for path, scale in args.lora_scaled:
        try:
            specs.append((path, float(scale)))
        except ValueError:
            raise CorralError(f"--lora-scaled {path}: '{scale}' is not a number") from None
    for path, _ in specs:
        if not Path(path).expanduser().exists():
            raise CorralError(f"LoRA adapter {path}: no such file or folder")
    return tuple(specs)


def cmd_create(args: argparse.Namespace) -> int:
    """Parse the Modelfile and store the new model."""
    from corral.errors import CorralError
    from corral.server.modelfile import create_model, parse_modelfile
    from corral.store import Store
    from corral.store.store import looks_like_path

    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CorralError(f"cannot read {path}: {e.strerror or e}") from None
    spec = parse_modelfile(text)
    if spec.from_ and looks_like_path(spec.from_):
        # a relative FROM path is relative to the Modelfile, as with ollama
        base = Path(spec.from_).expanduser()
        spec.from_ = str(base if base.is_absolute() else (path.parent / base).resolve())
    # so are ADAPTER paths
    spec.adapters = [(_beside(path, a), scale) for a, scale in spec.adapters]
    ref = create_model(Store(), args.name, spec)
    print(f"success: created {ref.full_name} from {spec.from_}")
    return 0


def _beside(modelfile: Path, relative: str) -> str:
    """A path from a Modelfile, relative to the Modelfile's folder unless absolute."""
    p = Path(relative).expanduser()
    return str(p if p.is_absolute() else (modelfile.parent / p).resolve())
