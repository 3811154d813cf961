"""FIM prompts per family, from tiny GGUF vocabularies with that family's tokens: exact ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from fim_vocab import byte_ids, load_vocab, write_vocab

from corral.errors import ContextOverflowError
from corral.fim import (
    ExtraFile,
    FimBuilder,
    FimFamily,
    FimOrder,
    FimRequest,
    NoFimError,
    find_fim_tokens,
    require_fim_tokens,
)

PRE, SUF = "def f(x):\n    y = ", "\n    return y\n"
BIG = 10_000

STARCODER = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
             "<repo_name>", "<reponame>", "<file_sep>", "<filename>"]  # fmt: skip
QWEN = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
        "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]  # fmt: skip
CODELLAMA = ["<unk>", "<s>", "</s>", "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]
DEEPSEEK = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁hole｜>",
            "<｜fim▁begin｜>", "<｜fim▁end｜>"]  # fmt: skip
CODESTRAL = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]"]


def _b(text: str, specials: list[str], spm: bool = False) -> list[int]:
    return byte_ids(text, len(specials) + 0, spm)


def test_starcoder_psm_spm_and_stops(tmp_path: Path) -> None:
    tok, meta = load_vocab(write_vocab(tmp_path / "sc.gguf", STARCODER, eos="<|endoftext|>"))
    t = require_fim_tokens(tok, meta)
    assert t.family is FimFamily.STARCODER
    assert (t.pre, t.suf, t.mid, t.pad, t.rep, t.sep) == (1, 3, 2, 4, 5, 7)
    psm = FimBuilder(tok, t).build(FimRequest(PRE, SUF), BIG)
    assert psm.ids == [1, *_b(PRE, STARCODER), 3, *_b(SUF, STARCODER), 2]
    spm = FimBuilder(tok, t, FimOrder.SPM).build(FimRequest(PRE, SUF), BIG)
    assert spm.ids == [3, *_b(SUF, STARCODER), 1, *_b(PRE, STARCODER), 2]
    # a new file or FIM block ends the middle, as does padding
    assert {4, 5, 7, 1, 2, 3} <= psm.stop_ids and not psm.trimmed


def test_starcoder2_repo_level(tmp_path: Path) -> None:
    tok, meta = load_vocab(write_vocab(tmp_path / "sc.gguf", STARCODER))
    t = require_fim_tokens(tok, meta)
    req = FimRequest(PRE, SUF, extra=[ExtraFile("a.py", "A = 1\n")], path="m.py", repo="r")
    ids = FimBuilder(tok, t).build(req, BIG).ids
    b = lambda s: _b(s, STARCODER)  # noqa: E731
    # <repo_name>r<file_sep>a.py\n A=1 <file_sep><fim_prefix>m.py\n prefix <fim_suffix>...
    assert ids == [5, *b("r"), 7, *b("a.py\n"), *b("A = 1\n"), 7, 1, *b("m.py\n"), *b(PRE),
                   3, *b(SUF), 2]  # fmt: skip


def test_qwen_from_gguf_keys_repo_level(tmp_path: Path) -> None:
    keys = {"fim_pre": "<|fim_prefix|>", "fim_suf": "<|fim_suffix|>", "fim_mid": "<|fim_middle|>",
            "fim_pad": "<|fim_pad|>", "fim_rep": "<|repo_name|>", "fim_sep": "<|file_sep|>"}  # fmt: skip
    tok, meta = load_vocab(write_vocab(tmp_path / "q.gguf", QWEN, fim_keys=keys))
    t = require_fim_tokens(tok, meta)
    assert t.family is FimFamily.QWEN and (t.pre, t.suf, t.mid, t.pad, t.rep, t.sep) == (
        3, 5, 4, 6, 7, 8,
    )  # fmt: skip
    extra = [ExtraFile("a.py", "A = 1\n"), ExtraFile("b.py", "B = 2\n")]
    ids = FimBuilder(tok, t).build(FimRequest(PRE, SUF, extra=extra, path="m.py"), BIG).ids
    b = lambda s: _b(s, QWEN)  # noqa: E731
    assert ids == [7, *b("repo\n"), 8, *b("a.py\n"), *b("A = 1\n"), 8, *b("b.py\n"),
                   *b("B = 2\n"), 8, *b("m.py\n"), 3, *b(PRE), 5, *b(SUF), 4]  # fmt: skip


def test_codellama_spm_vocab_with_bos_and_eot(tmp_path: Path) -> None:
    path = write_vocab(
        tmp_path / "cl.gguf", CODELLAMA, spm=True, bos="<s>", eos="</s>", add_bos=True
    )
    tok, meta = load_vocab(path)
    t = require_fim_tokens(tok, meta)
    assert t.family is FimFamily.CODELLAMA and t.eot == 6 and 6 in t.stop_ids
    ids = FimBuilder(tok, t).build(FimRequest(PRE, SUF), BIG).ids
    assert ids == [1, 3, *_b(PRE, CODELLAMA, True), 4, *_b(SUF, CODELLAMA, True), 5]
    spm = FimBuilder(tok, t, FimOrder.SPM).build(FimRequest(PRE, SUF), BIG).ids
    assert spm == [1, 4, *_b(SUF, CODELLAMA, True), 3, *_b(PRE, CODELLAMA, True), 5]


def test_deepseek(tmp_path: Path) -> None:
    b0 = "<｜begin▁of▁sentence｜>"
    path = write_vocab(tmp_path / "ds.gguf", DEEPSEEK, bos=b0, add_bos=True)
    tok, meta = load_vocab(path)
    t = require_fim_tokens(tok, meta)
    assert t.family is FimFamily.DEEPSEEK
    ids = FimBuilder(tok, t).build(FimRequest(PRE, SUF), BIG).ids
    assert ids == [0, 3, *_b(PRE, DEEPSEEK), 2, *_b(SUF, DEEPSEEK), 4]
    # no file separator: extra files are llama.cpp's snippets, before the FIM block
    req = FimRequest(PRE, SUF, extra=[ExtraFile("a.py", "A")])
    ids = FimBuilder(tok, t).build(req, BIG).ids
    assert ids[:2] == [0, *_b("\n", DEEPSEEK)] and ids[-1] == 4
    assert tok.decode(ids) == "\n\n--- snippet ---\n\nA" + PRE + SUF


def test_codestral_is_always_suffix_first(tmp_path: Path) -> None:
    path = write_vocab(
        tmp_path / "cs.gguf", CODESTRAL, spm=True, bos="<s>", eos="</s>", add_bos=True
    )
    tok, meta = load_vocab(path)
    t = require_fim_tokens(tok, meta)
    assert t.family is FimFamily.CODESTRAL and t.mid == 6
    for order in FimOrder:
        ids = FimBuilder(tok, t, order).build(FimRequest(PRE, SUF), BIG).ids
        assert ids == [1, 7, *_b(SUF, CODESTRAL, True), 5, *_b(PRE, CODESTRAL, True)]


def test_no_fim_tokens_is_a_clear_error(tmp_path: Path) -> None:
    tok, meta = load_vocab(write_vocab(tmp_path / "n.gguf", ["<|endoftext|>", "<|im_start|>"]))
    assert find_fim_tokens(tok, meta) is None
    with pytest.raises(NoFimError, match="no fill-in-the-middle tokens"):
        require_fim_tokens(tok, meta, "plain")


def test_marker_text_in_user_code_stays_text(tmp_path: Path) -> None:
    tok, meta = load_vocab(write_vocab(tmp_path / "sc.gguf", STARCODER))
    t = require_fim_tokens(tok, meta)
    ids = FimBuilder(tok, t).build(FimRequest("s = '<fim_suffix>'", ""), BIG).ids
    assert ids == [1, *_b("s = '<fim_suffix>'", STARCODER), 3, 2]


def test_fitting_trims_far_context_at_lines_and_extra_files_first(tmp_path: Path) -> None:
    tok, meta = load_vocab(write_vocab(tmp_path / "sc.gguf", STARCODER))
    t = require_fim_tokens(tok, meta)
    b = lambda s: _b(s, STARCODER)  # noqa: E731
    prefix = "".join(f"p{i}\n" for i in range(10)) + "x = "  # 3 tokens a line, 4 on the last
    suffix = "\n" + "".join(f"s{i}\n" for i in range(10))
    req = FimRequest(prefix, suffix, extra=[ExtraFile("a.py", "A = 1\n")])
    builder = FimBuilder(tok, t)
    whole = builder.build(req, BIG)
    assert whole.extra_files == 1 and not whole.trimmed
    # fixed: <repo_name>repo, <file_sep>, "filename\n" after <fim_prefix>, 3 FIM markers;
    # then room for 24 tokens of code: the extra file is the first thing dropped
    head = [5, *b("repo"), 7]
    fixed = len(head) + len(b("filename\n")) + 3
    fit = builder.build(req, fixed + 24)
    assert fit.trimmed and fit.extra_files == 0
    # suffix: a quarter of 24 = 6 tokens -> cut after the last whole line ("\n", "s0\n")
    # prefix: the other 18: "x = " and 14 more, cut back to a line start (4 lines of 3)
    assert fit.ids == [*head, 1, *b("filename\n"), *b("p6\np7\np8\np9\nx = "), 3,
                       *b("\ns0\n"), 2]  # fmt: skip
    with pytest.raises(ContextOverflowError):
        builder.build(FimRequest(prefix, suffix), 2)
