"""bench/rag.py's scoring and bench/make_rag_questions.py's section parsing (no models)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while building
    spec.loader.exec_module(mod)
    return mod


RST = """\
Title of the page
*****************

Intro paragraph here.

Sorting Basics
==============

.. note::
   A directive, not prose.

A simple ascending sort is very easy: just call the :func:`sorted` function with any
iterable. It returns a new list.

Key Functions
=============

Both :meth:`list.sort` and ``sorted`` take a *key*.
"""


def test_sections_have_line_ranges_and_prose_paragraphs() -> None:
    mq = _module("make_rag_questions")
    secs = mq.sections(RST.splitlines())
    assert [(s[0], s[1], s[2]) for s in secs] == [
        (1, 5, "Title of the page"),
        (6, 14, "Sorting Basics"),
        (15, 18, "Key Functions"),
    ]
    assert secs[1][3].startswith("A simple ascending sort")  # the directive is skipped
    assert mq.first_sentence(secs[1][3]) == (
        "A simple ascending sort is very easy: just call the sorted function with any iterable."
    )
    assert mq.clean(secs[2][3]) == "Both list.sort and sorted take a key."
    assert mq.clean(":ref:`the guide <sortinghowto>` and :class:`~a.b.Thing`") == (
        "the guide and Thing"
    )


def test_rank_and_metrics_at_document_and_section_level() -> None:
    rag = _module("rag")
    q = {"file": "a.rst", "line": 10, "end_line": 20, "kind": "heading"}
    got = [("b.rst", 1, 5), ("a.rst", 30, 40), ("a.rst", 18, 25)]
    assert rag.rank_of(q, got, section=False) == 2
    assert rag.rank_of(q, got, section=True) == 3
    assert rag.rank_of(q, [("b.rst", 1, 5)], section=False) is None
    s = rag.score([q, q | {"kind": "content"}], [got, [("a.rst", 10, 12)]])
    assert s["document"]["recall@1"] == 0.5 and s["document"]["mrr@10"] == 0.75
    assert s["section"]["mrr@10"] == round((1 / 3 + 1) / 2, 4)
    assert s["section"]["content"]["recall@1"] == 1.0
