"""The language server's parts without a client: shapes, llm-ls params, token healing, and
the Completer's prompt cache and superseding on a tiny model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch

from corral.lsp.complete import Ask, Completer, FimMode
from corral.lsp.heal import BlankPieces, HealBlanks
from corral.lsp.params import ask_from_llm_ls, plain
from corral.lsp.shape import Shape, classify, cut, finish
from corral.model import load


def test_shapes() -> None:
    assert classify("pri", "nt(x)\n").shape is Shape.EMPTY  # inside a word
    assert classify("x = max(a, ", ")\n").shape is Shape.SINGLE_LINE
    assert classify("x = ", "\n").shape is Shape.SINGLE_LINE
    body = classify("def f(a):\n    ", "\n    return a\n")
    assert body.shape is Shape.MULTI_LINE and body.block_indent == 0
    assert classify("int f() {\n  ", "\n}\n").shape is Shape.MULTI_LINE
    # a block that already has a body: one line at a time
    assert classify("def f(a):\n    ", "\n    b = 1\n    return b\n").shape is Shape.MULTI_LINE
    assert classify("x = 1\n", "\ny = 2\n").shape is Shape.SINGLE_LINE  # no block opened
    assert classify("", "").shape is Shape.MULTI_LINE  # an empty file


def test_cut_to_shape() -> None:
    line = classify("x = ", "\n")
    assert cut("1 + 2\nprint(x)", line) == ("1 + 2", True)
    assert cut("1 + ", line) == ("1 + ", False)
    body = classify("def f(a):\n    ", "\n    return b\n")
    # back at the block's indentation: the body is over
    assert cut("b = a\n    c = b\ndef g():\n", body) == ("b = a\n    c = b", True)
    # ... seen as soon as the next line starts: its rest need not be generated
    assert cut("b = a\nd", body) == ("b = a", True)
    assert cut("b = a\n  ", body) == ("b = a\n  ", False)  # blanks: indentation not settled
    assert cut("b = a\n    c", body) == ("b = a\n    c", False)
    # the code after the cursor written again: over too
    assert cut("b = a * 2\n    return b\n", body) == ("b = a * 2", True)
    assert cut("b = a * 2\n    return b", body)[1] is False  # may go on: "return bb"
    assert finish("b = a\n    c = 2\n\n", body) == "b = a\n    c = 2"


def test_llm_ls_params() -> None:
    base = {"fim": {"enabled": True}, "contextWindow": 300}
    a = ask_from_llm_ls(
        {**base, "requestBody": {"parameters": {"max_new_tokens": 20, "temperature": 0.2,
                                                "stop": ["\n\n"]}}},
        "k", "pre", "suf", 64,
    )  # fmt: skip
    assert (a.mode, a.context_window, a.max_tokens, a.temperature, a.stop) == (
        FimMode.FIM, 300, 20, 0.2, ["\n\n"],
    )  # fmt: skip
    b = ask_from_llm_ls({"fim": {"enabled": False}, "requestBody": {"options": {"num_predict": 9}}},
                        "k", "p", "s", 64)  # fmt: skip
    assert b.mode is FimMode.PREFIX and b.max_tokens == 9
    c = ask_from_llm_ls({"requestBody": {"max_tokens": 10**9}}, "k", "p", "s", 64)
    assert c.max_tokens == 1024 and c.mode is FimMode.FIM  # capped; FIM unless disabled
    # pygls hands unknown params over as namedtuples
    from collections import namedtuple

    obj = namedtuple("Object", ["fim", "n"])(namedtuple("Object", ["enabled"])(False), [1])
    assert plain(obj) == {"fim": {"enabled": False}, "n": [1]}


def test_heal_blanks(tmp_path: Path) -> None:
    from tiny_gguf import write_tiny

    model = load(write_tiny(tmp_path / "t.gguf"))
    tok = model.tokenizer
    pieces = BlankPieces(tok)
    space, sw = tok.vocab.token_to_id["Ġ"], tok.vocab.token_to_id["Ġw"]
    heal = HealBlanks(pieces, "  ")  # two spaces typed
    logits = torch.zeros(tok.vocab_size)
    allowed = torch.isfinite(heal.mask(logits)).nonzero().flatten().tolist()
    assert allowed == [space]  # "Ġw" would write " w" where a second space is due
    heal.accept(space)
    allowed = set(torch.isfinite(heal.mask(logits)).nonzero().flatten().tolist())
    assert {space, sw} <= allowed and tok.vocab.token_to_id["h"] not in allowed
    heal.accept(sw)
    assert torch.isfinite(heal.mask(logits)).all()  # healed: everything goes


def test_prompt_cache_and_superseding(tmp_path: Path) -> None:
    from tiny_gguf import write_tiny

    fim = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>"]
    path = write_tiny(tmp_path / "c.gguf", context=512, extra_specials=fim)
    comp = Completer(str(path))
    comp.load()
    code = "".join(f"value_{i} = compute({i})\n" for i in range(12))

    async def run() -> None:
        first = await comp.complete(Ask("doc", code + "x = f", "\n", max_tokens=4))
        assert comp.scheduler is not None
        before = comp.scheduler.stats.cached_prompt_tokens_total
        await comp.complete(Ask("doc", code + "x = fo", "\n", max_tokens=4))
        reused = comp.scheduler.stats.cached_prompt_tokens_total - before
        # one more character: all but the last few prompt tokens come from the cache
        assert reused >= first.prompt_tokens - 6, (reused, first.prompt_tokens)
        # a newer request for the same document supersedes the one still pending: the
        # worker is held (its lock) so a fast machine cannot finish the first one before
        # the second arrives
        sched = comp.scheduler
        with sched._cv:
            slow = asyncio.ensure_future(comp.complete(Ask("doc", code, "", max_tokens=200)))
            while "doc" not in comp._running:
                await asyncio.sleep(0.005)
            first_handle = comp._running["doc"]
            fresh_task = asyncio.ensure_future(
                comp.complete(Ask("doc", code + "y", "\n", max_tokens=2))
            )
            while comp._running.get("doc") is first_handle:
                await asyncio.sleep(0.005)
        fresh = await fresh_task
        assert (await slow).superseded and not fresh.superseded

    try:
        asyncio.run(run())
    finally:
        comp.close()
