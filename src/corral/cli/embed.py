"""`corral embed MODEL TEXT... | -`: print embedding vectors.

Each TEXT argument is one input; `-` reads standard input, one input per non-empty line.
Output is one JSON array per input, one per line (easy to pipe into jq or numpy), or with
--json a single object with the vectors and the token counts.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `corral embed`."""
    p = sub.add_parser(
        "embed",
        help="print embedding vectors of texts",
        description="Embed texts with an embedding model (a store name such as minilm, a "
        ".gguf file or a sentence-transformers folder). Prints one JSON array per text.",
    )
    p.add_argument("model", metavar="MODEL", help="embedding model: name, .gguf path or folder")
    p.add_argument(
        "texts", nargs="+", metavar="TEXT", help="texts to embed; - reads stdin, one per line"
    )
    p.add_argument("--dimensions", type=int, help="keep the first N dimensions (Matryoshka)")
    p.add_argument(
        "--no-normalize", action="store_true", help="do not scale vectors to unit length"
    )
    p.add_argument(
        "--truncate",
        choices=["right", "left", "error"],
        default="right",
        help="a text longer than the model reads: cut its end (default), its start, or fail",
    )
    p.add_argument("--json", action="store_true", help="one JSON object with counts")
    p.add_argument("--threads", type=int, help="CPU threads (default: one per core)")
    p.set_defaults(func=cmd_embed)


def _inputs(texts: list[str]) -> list[str]:
    out: list[str] = []
    for t in texts:
        if t == "-":
            out.extend(line.rstrip("\r\n") for line in sys.stdin if line.strip())
        else:
            out.append(t)
    return out


def cmd_embed(args: argparse.Namespace) -> int:
    """Load the model, embed, print."""
    from corral.embed import load_embedder
    from corral.errors import InvalidRequestError

    texts = _inputs(args.texts)
    if not texts:
        raise InvalidRequestError("nothing to embed: standard input had no text")
    emb = load_embedder(args.model, threads=args.threads)
    out = emb.embed_with_counts(
        texts,
        normalize=not args.no_normalize,
        truncate=args.truncate,
        dimensions=args.dimensions,
    )
    if args.json:
        doc = {
            "model": emb.name,
            "dimensions": int(out.vectors.shape[1]),
            "embeddings": out.vectors.tolist(),
            "token_counts": out.token_counts,
        }
        print(json.dumps(doc))
        return 0
    write = sys.stdout.write
    for vec in out.vectors.tolist():
        write(json.dumps(vec) + "\n")
    return 0
