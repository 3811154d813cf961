#!/usr/bin/env python3
"""Retrieval quality and index time: corral's RAG index against the hand-written default.

    python bench/rag.py [--docs DIR] [--model minilm] [--max-files N] [--max-questions N]
                        [--threads N] [--peer-python PATH] [--out FILE]

Corpus: the reST sources of the Python 3.11 documentation (Debian python3.11-doc; see
bench/make_rag_questions.py for how to get them), folders tutorial, howto, faq, reference,
using. Questions: bench/data/rag_questions.json, made by bench/make_rag_questions.py, each
answered by one file. A question counts as found at rank r when the r-th retrieved chunk
comes from its answer file ("document" level) -- and, at "section" level, when its lines
also overlap the answer section's (so a chunk of the right file about something else does
not count). Chunk ranks, top 10: recall@1, recall@5 and MRR@10, overall and per question
kind (heading-style and content-style questions).

Two systems index the same files (copied as *.rst) with the same embedding model:

* corral: `Indexer` into a fresh collection (reST-aware token splitter sized to the model,
  sqlite-vec + FTS5), then `search` in vector, keyword and hybrid (RRF) modes;
* LangChain default, in the peer environment (--peer-python, $CORRAL_PEER_PYTHON or
  /tmp/corral-peers/bin/python): RecursiveCharacterTextSplitter(chunk_size=1000,
  chunk_overlap=200) over each file's text, sentence-transformers on the same model folder
  (batch 32, normalized), brute-force cosine over a numpy matrix. The peer environment
  needs `pip install langchain-text-splitters` besides sentence-transformers.

Index time is files -> searchable index (read, split, embed, store), model load excluded
and reported apart. Floors (issue 6): corral hybrid MRR above LangChain's (document level;
section level reported too), and corral index time below LangChain's. JSON goes to stdout and --out; ratios are corral / LangChain for
MRR and LangChain / corral for index time (above 1.0: corral better on both).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "data" / "rag_questions.json"
DEFAULT_DOCS = "/usr/share/doc/python3.11/html/_sources"
DEFAULT_PEER = "/tmp/corral-peers/bin/python"
K = 10


# -- metrics ----------------------------------------------------------------------------------


Retrieved = tuple[str, int, int]  # (path relative to the corpus, first line, last line)


def rank_of(q: dict, retrieved: list[Retrieved], section: bool) -> int | None:
    """1-based rank of the first retrieved chunk from the answer file (section: whose lines
    also overlap the answer section's); None when none is in the top K."""
    for r, (path, start, end) in enumerate(retrieved[:K], 1):
        if path == q["file"] and (not section or (start <= q["end_line"] and end >= q["line"])):
            return r
    return None


def metrics(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks) or 1
    return {
        "recall@1": round(sum(r == 1 for r in ranks) / n, 4),
        "recall@5": round(sum(r is not None and r <= 5 for r in ranks) / n, 4),
        "mrr@10": round(sum(1 / r for r in ranks if r) / n, 4),
    }


def score(questions: list[dict], retrieved: list[list[Retrieved]]) -> dict:
    """Metrics at document and section level, overall and per question kind."""
    out: dict = {}
    for level in ("document", "section"):
        ranks = [rank_of(q, got, level == "section")
                 for q, got in zip(questions, retrieved, strict=True)]  # fmt: skip
        out[level] = metrics(ranks)
        for kind in sorted({q["kind"] for q in questions}):
            pairs = zip(questions, ranks, strict=True)
            out[level][kind] = metrics([r for q, r in pairs if q["kind"] == kind])
    return out


# -- corpus -----------------------------------------------------------------------------------


def select(fixture: dict, max_files: int | None, max_questions: int | None) -> tuple[list, list]:
    """(files, questions) at the asked size. A reduced corpus takes files in an order mixed
    by a hash of their names (so every folder is in it), and keeps the questions they answer."""
    files = sorted(fixture["files"])
    if max_files:
        files = sorted(
            sorted(files, key=lambda f: hashlib.sha256(f.encode()).hexdigest())[:max_files]
        )
    keep = set(files)
    questions = [q for q in fixture["questions"] if q["file"] in keep]
    return files, questions[:max_questions] if max_questions else questions


def copy_corpus(docs: Path, files: list[str], fixture: dict, dest: Path) -> list[str]:
    """Copy `files` (fixture names, *.rst) from the *.rst.txt sources; returns the names whose
    content differs from the fixture's (another doc version: questions may not match)."""
    changed = []
    for name in files:
        src = docs / f"{name}.txt"
        if not src.is_file():
            raise SystemExit(f"{src} is missing: is --docs the python3.11-doc _sources folder?")
        data = src.read_bytes()
        if hashlib.sha256(data).hexdigest()[:16] != fixture["files"][name]:
            changed.append(name)
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)
    return changed


# -- corral (this process) ----------------------------------------------------------------------


def run_corral(corpus: Path, questions: list[dict], model: str, threads: int, home: Path) -> dict:
    sys.path.insert(0, str(HERE.parent / "src"))
    from corral.embed import load_embedder
    from corral.rag.db import Collection
    from corral.rag.indexer import Indexer, Outcome
    from corral.rag.retrieve import SearchMode, search

    t0 = time.perf_counter()
    emb = load_embedder(model, threads=threads)
    emb.embed(["warm-up"])  # first-call costs (thread pools, allocations) belong to loading
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with Collection.open_or_create("bench", emb.name, emb.dimensions, home=home) as col:
        report = Indexer(col, emb).add([str(corpus)])
        index_s = time.perf_counter() - t0
        chunks = col.stats()["chunks"]
        root = str(corpus.resolve()) + os.sep
        out: dict = {"load_s": round(load_s, 3), "index_s": round(index_s, 3), "chunks": chunks,
                     "files": report.count(Outcome.ADDED),
                     "skipped": report.count(Outcome.SKIPPED)}  # fmt: skip
        for mode in SearchMode:
            search(col, emb, "warm up", K, None, mode)  # first-query costs stay out of query_ms
            t0 = time.perf_counter()
            got = [[(h.path.removeprefix(root), h.start_line, h.end_line)
                    for h in search(col, emb, q["question"], K, None, mode)]
                   for q in questions]  # fmt: skip
            out[mode.value] = score(questions, got) | {
                "query_ms": round((time.perf_counter() - t0) / max(len(questions), 1) * 1000, 2)
            }
    return out


# -- LangChain default (peer environment, child process) ----------------------------------------


def worker_langchain(corpus: str, model: str, questions: str, threads: int) -> None:
    """The hand-written default, run by the peer Python; prints one JSON line."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError as e:
        raise SystemExit(
            f"{e}: run `{sys.executable} -m pip install langchain-text-splitters`"
        ) from e

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    st = SentenceTransformer(model, device="cpu")
    st.encode(["warm-up"])
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # add_start_index only records where each chunk starts (for the section-level score);
    # the chunks are the same as without it
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200,
                                              add_start_index=True)  # fmt: skip
    texts: list[str] = []
    where: list[tuple[str, int, int]] = []
    root = Path(corpus)
    for f in sorted(root.rglob("*.rst")):
        text = f.read_text(encoding="utf-8")
        for doc in splitter.create_documents([text]):
            texts.append(doc.page_content)
            first = text.count("\n", 0, doc.metadata["start_index"]) + 1
            where.append((str(f.relative_to(root)), first, first + doc.page_content.count("\n")))
    split_s = time.perf_counter() - t0
    matrix = st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    index_s = time.perf_counter() - t0
    qs = [q["question"] for q in json.loads(Path(questions).read_text())]
    t0 = time.perf_counter()
    qv = st.encode(qs, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    top = np.argsort(-(qv @ matrix.T), axis=1)[:, :K]
    query_ms = (time.perf_counter() - t0) / max(len(qs), 1) * 1000
    # how many chunks the model reads only in part (MiniLM: 256 tokens, the rest is cut)
    lengths = [len(ids) for ids in st.tokenizer(texts, add_special_tokens=True)["input_ids"]]
    print(json.dumps({
        "load_s": round(load_s, 3), "index_s": round(index_s, 3), "split_s": round(split_s, 3),
        "chunks": len(texts), "query_ms": round(query_ms, 2),
        "truncated_chunks": round(sum(n > st.max_seq_length for n in lengths) / len(texts), 4),
        "retrieved": [[where[i] for i in row] for row in top.tolist()],
    }))  # fmt: skip


def run_langchain(python: str, corpus: Path, folder: str, questions: list[dict], threads: int,
                  tmp: Path) -> dict:  # fmt: skip
    qfile = tmp / "questions.json"
    qfile.write_text(json.dumps(questions))
    cmd = [python, __file__, "--worker", str(corpus), folder, str(qfile), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"LangChain worker failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    retrieved = [[tuple(x) for x in row] for row in res.pop("retrieved")]
    res["vector"] = score(questions, retrieved)
    return res


def model_folder(name: str) -> str:
    p = Path(name).expanduser()
    if p.exists():
        return str(p.resolve())
    sys.path.insert(0, str(HERE.parent / "src"))
    from corral.store import Store

    return str(Store().resolve(name).path)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_langchain(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", default=DEFAULT_DOCS, help=f"reST sources (default {DEFAULT_DOCS})")
    ap.add_argument("--model", default="minilm", help="store name or sentence-transformers folder")
    ap.add_argument("--max-files", type=int, help="reduced run: this many files")
    ap.add_argument("--max-questions", type=int, help="reduced run: at most this many questions")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--peer-python", default=os.environ.get("CORRAL_PEER_PYTHON", DEFAULT_PEER))
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    fixture = json.loads(QUESTIONS.read_text())
    files, questions = select(fixture, args.max_files, args.max_questions)
    folder = model_folder(args.model)
    with tempfile.TemporaryDirectory(prefix="corral-bench-rag-") as tmpdir:
        tmp = Path(tmpdir)
        corpus = tmp / "corpus"
        changed = copy_corpus(Path(args.docs), files, fixture, corpus)
        size = sum(f.stat().st_size for f in corpus.rglob("*.rst"))
        print(f"{len(files)} files ({size / 1e6:.2f} MB), {len(questions)} questions",
              file=sys.stderr)  # fmt: skip
        lc = run_langchain(args.peer_python, corpus, folder, questions, args.threads, tmp)
        print(f"langchain: {json.dumps(lc)}", file=sys.stderr)
        co = run_corral(corpus, questions, folder, args.threads, tmp / "home")
        print(f"corral: {json.dumps(co)}", file=sys.stderr)
    result = {
        "bench": "rag",
        "corpus": fixture["corpus"],
        "files": len(files),
        "corpus_mb": round(size / 1e6, 3),
        "files_differing_from_fixture": changed,
        "questions": len(questions),
        "model": folder,
        "threads": args.threads,
        "corral": co,
        "langchain_default": lc,
        "ratios": {
            f"{mode}_{level}_mrr_vs_langchain": round(
                co[mode][level]["mrr@10"] / max(lc["vector"][level]["mrr@10"], 1e-9), 3)
            for mode in ("hybrid", "vector", "keyword") for level in ("document", "section")
        } | {"index_speedup_vs_langchain": round(lc["index_s"] / max(co["index_s"], 1e-9), 3)},
    }  # fmt: skip
    r = result["ratios"]
    result["floors"] = {
        "hybrid_mrr_beats_langchain": r["hybrid_document_mrr_vs_langchain"] > 1.0,
        "hybrid_section_mrr_beats_langchain": r["hybrid_section_mrr_vs_langchain"] > 1.0,
        "indexes_faster_than_langchain": r["index_speedup_vs_langchain"] > 1.0,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
