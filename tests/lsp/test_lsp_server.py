"""`corral lsp` driven over stdio by a client speaking the LSP wire protocol."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from lsp_client import LspClient, LspError

URI = "file:///work/example.py"
SOURCE = 'def add(a, b):\n    \n\n\nnote = "𝄞😀"; total\nx = max(a, )\n'
#                                               ^ line 4: two non-BMP characters before "total"


def _units(text: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(text.encode())
    if encoding == "utf-16":
        return len(text.encode("utf-16-le")) // 2
    return len(text)


def _params(line: int, character: int, **extra: object) -> dict[str, object]:
    return {
        "textDocument": {"uri": URI}, "position": {"line": line, "character": character},
        "model": "ignored", "backend": "huggingface", "url": None, "ide": "neovim",
        "fim": {"enabled": True, "prefix": "<fim_prefix>", "middle": "<fim_middle>",
                "suffix": "<fim_suffix>"},
        "tokensToClear": [], "contextWindow": 256, "tlsSkipVerifyInsecure": False,
        "requestBody": {"parameters": {"max_new_tokens": 12, "temperature": 0}},
        **extra,
    }  # fmt: skip


@pytest.fixture
def coder(start_lsp: Callable[..., LspClient], lsp_models: dict[str, Path]) -> LspClient:
    c = start_lsp("--model", str(lsp_models["coder"]), "--max-tokens", "12")
    init = c.initialize()
    caps = init["capabilities"]
    assert caps["positionEncoding"] == "utf-16"  # the default when the client lists none
    assert caps["textDocumentSync"]["change"] == 2  # incremental
    assert "inlineCompletionProvider" in caps and "completionProvider" in caps
    c.open(URI, SOURCE)
    return c


def test_llm_ls_get_completions(coder: LspClient) -> None:
    out = coder.request("llm-ls/getCompletions", _params(1, 4))  # inside the empty body
    uuid.UUID(out["request_id"])
    assert len(out["completions"]) == 1
    text = out["completions"][0]["generated_text"]
    assert isinstance(text, str)
    # multi-line in an empty block: every line after the first stays inside the block
    assert all(ln.startswith((" ", "\t")) for ln in text.split("\n")[1:] if ln.strip())
    # mid-line (before ")"): one line only
    mid = coder.request("llm-ls/getCompletions", _params(5, 11))
    assert "\n" not in mid["completions"][0]["generated_text"]
    # inside a word: nothing, as llm-ls
    word = coder.request("llm-ls/getCompletions", _params(0, 2))
    assert word["completions"] == []
    assert coder.request("llm-ls/acceptCompletion", {"request_id": out["request_id"],
                         "accepted_completion": 0, "shown_completions": [0]}) is None  # fmt: skip
    assert coder.request("llm-ls/rejectCompletion", {"request_id": out["request_id"],
                         "shown_completions": [0]}) is None  # fmt: skip


def test_tokens_to_clear_are_removed(coder: LspClient) -> None:
    pos = (4, _units('note = "𝄞😀"; total', "utf-16"))
    first = coder.request("llm-ls/getCompletions", _params(*pos))["completions"][0]
    text = first["generated_text"]
    assert text, "the tiny model should say something here"
    clear = sorted(set(text))[:3]  # characters it did write
    again = coder.request("llm-ls/getCompletions", _params(*pos, tokensToClear=clear))
    cleared = again["completions"][0]["generated_text"]
    assert not any(c in cleared for c in clear)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8"])
def test_position_encodings(
    encoding: str, start_lsp: Callable[..., LspClient], lsp_models: dict[str, Path]
) -> None:
    c = start_lsp("--model", str(lsp_models["coder"]), "--max-tokens", "8")
    init = c.initialize([encoding] if encoding != "utf-16" else ["utf-16", "utf-8"])
    assert init["capabilities"]["positionEncoding"] == encoding
    c.open(URI, SOURCE)
    line = 'note = "𝄞😀"; total'
    cursor = _units(line, encoding)  # the end of "total", in the client's units
    word = _units('note = "𝄞😀"; ', encoding)
    pos = {"line": 4, "character": cursor}
    doc = {"textDocument": {"uri": URI}, "position": pos}
    items = c.request("textDocument/completion", doc)["items"]
    assert len(items) == 1
    edit = items[0]["textEdit"]
    # the edit starts at the word being typed: the server found the cursor in these units
    assert edit["range"]["start"] == {"line": 4, "character": word}
    assert edit["range"]["end"] == pos and edit["newText"].startswith("total")
    inline = c.request("textDocument/inlineCompletion", {**doc, "context": {"triggerKind": 1}})
    item = inline["items"][0]
    assert item["range"]["start"] == {"line": 4, "character": word}
    assert item["insertText"].startswith("total")
    # incremental sync: type "ly" after "total", then ask again one word later
    change = {"range": {"start": pos, "end": pos}, "text": "ly"}
    c.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": 2},
                                        "contentChanges": [change]})  # fmt: skip
    moved = {"line": 4, "character": cursor + 2}
    items = c.request("textDocument/completion", {**doc, "position": moved})["items"]
    assert items[0]["textEdit"]["newText"].startswith("totally")
    assert items[0]["textEdit"]["range"]["end"] == moved


def test_model_without_fim_tokens(
    start_lsp: Callable[..., LspClient], lsp_models: dict[str, Path]
) -> None:
    c = start_lsp("--model", str(lsp_models["plain"]), "--max-tokens", "4")
    c.initialize()
    c.open(URI, SOURCE)
    with pytest.raises(LspError, match="no fill-in-the-middle tokens"):
        c.request("llm-ls/getCompletions", _params(1, 4))
    off = _params(1, 4, fim={"enabled": False, "prefix": "", "middle": "", "suffix": ""})
    assert len(c.request("llm-ls/getCompletions", off)["completions"]) == 1
    with pytest.raises(LspError, match="failed to find document"):
        c.request("llm-ls/getCompletions", {**off, "textDocument": {"uri": "file:///nope.py"}})
