"""`corral index add|ls|rm|stats` and `corral ask`: local RAG over the user's files.

Collections live in $CORRAL_HOME/rag/<name>.sqlite (see corral.rag.db). Chunk defaults: the
embedding model's maximum input (MiniLM: 256 tokens) with 1/8 of it repeated between
neighbouring chunks of one section; --chunk-tokens / --overlap change them.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_COLLECTION = "default"
DEFAULT_EMBEDDER = "minilm"
DEFAULT_CHAT = "smollm2"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `corral index ...` and `corral ask`."""
    idx = sub.add_parser("index", help="index files for `corral ask` (local RAG)",
                         description="Manage RAG collections in $CORRAL_HOME/rag.")  # fmt: skip
    isub = idx.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    add = isub.add_parser("add", help="index files and folders (recursively)")
    add.add_argument("paths", nargs="+", metavar="PATH")
    add.add_argument("--collection", "-c", default=DEFAULT_COLLECTION)
    add.add_argument("--include", action="append", default=[], metavar="GLOB",
                     help="only files matching (path or name); repeatable")  # fmt: skip
    add.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                     help="skip files matching; repeatable")  # fmt: skip
    add.add_argument("--embedder", default=None,
                     help=f"embedding model for a new collection (default {DEFAULT_EMBEDDER})")  # fmt: skip
    add.add_argument("--chunk-tokens", type=int, help="max tokens a chunk (default: model's max)")
    add.add_argument("--overlap", type=int, help="overlap tokens (default: chunk size / 8)")
    add.set_defaults(func=cmd_add)

    ls = isub.add_parser("ls", aliases=["list"], help="list collections, or one's files")
    ls.add_argument("collection", nargs="?")
    ls.set_defaults(func=cmd_ls)

    rm = isub.add_parser("rm", help="delete a collection, or some files from it")
    rm.add_argument("collection")
    rm.add_argument("paths", nargs="*", metavar="PATH", help="only these files")
    rm.set_defaults(func=cmd_rm)

    st = isub.add_parser("stats", help="counts and settings of a collection")
    st.add_argument("collection", nargs="?", default=DEFAULT_COLLECTION)
    st.set_defaults(func=cmd_stats)

    ask = sub.add_parser("ask", help="answer a question from an indexed collection, with sources")
    ask.add_argument("question")
    ask.add_argument("--collection", "-c", default=DEFAULT_COLLECTION)
    ask.add_argument("--model", "-m", default=DEFAULT_CHAT, help="chat model")
    ask.add_argument("--k", type=int, default=5, help="chunks to retrieve (default 5)")
    ask.add_argument("--path", metavar="GLOB", help="only chunks of files matching")
    ask.add_argument("--mode", choices=["hybrid", "vector", "keyword"], default="hybrid")
    ask.add_argument("--sources-only", action="store_true", help="print chunks, no answer")
    ask.add_argument("--json", action="store_true", help="JSON lines (with --sources-only)")
    ask.add_argument("--max-tokens", type=int, default=512)
    ask.set_defaults(func=cmd_ask)


def _embedder(name: str):  # noqa: ANN202 - imported lazily: the CLI must not import torch
    from corral.embed import load_embedder

    return load_embedder(name)


def cmd_add(args: argparse.Namespace) -> int:
    from corral.errors import InvalidRequestError
    from corral.rag.db import Collection, collection_path
    from corral.rag.indexer import Indexer, Outcome
    from corral.rag.splitter import SplitOptions

    name = args.embedder
    path = collection_path(args.collection)
    if path.is_file():
        with Collection(path) as old:
            stored = old.meta().get("embedder")
        if name and stored and name != stored:
            raise InvalidRequestError(
                f"collection {args.collection!r} uses embedding model {stored}, not {name}"
            )
        name = stored or name
    emb = _embedder(name or DEFAULT_EMBEDDER)
    options = None
    if args.chunk_tokens or args.overlap is not None:
        options = SplitOptions.for_model(args.chunk_tokens or emb.max_tokens, args.overlap)

    def progress(r) -> None:  # noqa: ANN001
        if r.outcome is Outcome.SKIPPED:
            print(f"skipped {r.path}: {r.reason}", file=sys.stderr)
        elif r.outcome is Outcome.REMOVED:
            print(f"removed {r.path} (deleted; {r.chunks} chunks dropped)", file=sys.stderr)
        elif r.outcome is not Outcome.UNCHANGED:
            print(f"{r.outcome.value} {r.path} ({r.chunks} chunks)", file=sys.stderr)

    with Collection.open_or_create(args.collection, emb.name, emb.dimensions) as col:
        report = Indexer(col, emb, options, progress).add(args.paths, args.include, args.exclude)
    print(f"{args.collection}: {report.summary()}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from corral.rag.db import Collection, list_collections

    if not args.collection:
        for name in list_collections():
            with Collection.open(name) as col:
                s = col.stats()
            print(f"{name}\t{s['files']} files\t{s['chunks']} chunks\t{s.get('embedder', '?')}")
        return 0
    with Collection.open(args.collection) as col:
        for f in col.files():
            print(f"{f['path']}\t{f['chunks']} chunks\t{f['kind']}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from pathlib import Path

    from corral.rag.db import Collection

    col = Collection.open(args.collection)
    if not args.paths:
        col.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{col.path}{suffix}").unlink(missing_ok=True)
        print(f"deleted collection {args.collection}")
        return 0
    with col:
        for p in args.paths:
            key = str(Path(p).expanduser().resolve())
            print(("removed " if col.remove_file(key) else "not indexed: ") + key)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from corral.rag.db import Collection

    with Collection.open(args.collection) as col:
        print(json.dumps(col.stats(), indent=2, default=str))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from corral.rag.db import Collection, Filter
    from corral.rag.retrieve import SearchMode, search

    with Collection.open(args.collection) as col:
        mode = SearchMode(args.mode)
        emb = None if mode is SearchMode.KEYWORD else _embedder(col.embedder)
        hits = search(col, emb, args.question, args.k, Filter(path=args.path), mode)
    if args.sources_only:
        for n, h in enumerate(hits, 1):
            if args.json:
                d = h.to_dict()
                print(json.dumps({k: d[k] for k in
                                  ("path", "start_line", "end_line", "heading", "score", "text")}))  # fmt: skip
            else:
                print(f"[{n}] {h.location}  {h.heading}  (score {h.score:.4f})\n{h.text}\n")
        return 0
    if not hits:
        print("No indexed text matches that question.", file=sys.stderr)
        return 1
    import corral
    from corral.rag.answer import ask

    model = corral.load(args.model)

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    result = ask(model, args.question, hits, n_ctx=model.info.n_ctx,
                 max_tokens=args.max_tokens, on_text=write)  # fmt: skip
    print("\n\nSources:")
    print(result.sources_text())
    return 0
