"""`corral lsp`: a language server on stdio that completes code with a local model.

It speaks llm-ls's protocol (what llm.nvim, llm-vscode and llm-intellij send) and the
standard completion requests:

- `llm-ls/getCompletions`: params as llm-ls defines them (textDocument, position, model,
  fim {enabled, prefix, middle, suffix}, contextWindow, tokensToClear, requestBody, ide,
  backend/url/apiToken/tokenizerConfig/tlsSkipVerifyInsecure). The prompt is built from the
  model's own FIM tokens, so `fim.prefix/middle/suffix` strings are not needed; with
  `fim.enabled: false` the prefix alone is completed, as llm-ls does. The backend fields
  are ignored (the model runs here); `model` names the model to load when `corral lsp` was
  started without `--model`. `requestBody` may set max tokens and sampling in any of the
  backends' spellings. Answer: `{"request_id", "completions": [{"generated_text"}]}`.
- `llm-ls/acceptCompletion`, `llm-ls/rejectCompletion`: acknowledged and logged.
- `textDocument/inlineCompletion` and `textDocument/completion`.

Documents sync incrementally; positions use the encoding negotiated at `initialize` (the
first of utf-8/utf-16/utf-32 the client lists, utf-16 when it lists none, as LSP says).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any

from lsprotocol import types as t
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from corral import __version__
from corral.errors import CorralError
from corral.lsp.complete import Answer, Ask, Completer, FimMode
from corral.lsp.params import ask_from_llm_ls, plain
from corral.lsp.shape import Shape

log = logging.getLogger("corral.lsp")
REQUEST_FAILED = -32803  # LSP's RequestFailed
_WORD_TAIL = re.compile(r"[A-Za-z0-9_]*$")


class CorralLanguageServer(LanguageServer):
    """pygls server holding the Completer and the defaults for standard requests."""

    def __init__(self, completer: Completer, mode: FimMode, max_tokens: int) -> None:
        super().__init__("corral-lsp", __version__)
        self.completer = completer
        self.mode = mode
        self.max_tokens = max_tokens

    def document(self, uri: str) -> TextDocument:
        """An open document; llm-ls's error for one never opened."""
        if uri not in self.workspace.text_documents:
            raise JsonRpcInvalidParams(f"failed to find document {uri} (not opened)")
        return self.workspace.get_text_document(uri)

    async def answer(self, ask: Ask, model: str | None = None) -> Answer:
        """Run a completion; user-facing failures become RequestFailed errors."""
        try:
            return await self.completer.complete(ask, model)
        except (CorralError, ValueError) as e:
            raise JsonRpcException(str(e), code=REQUEST_FAILED) from None


def cursor_offset(doc: TextDocument, pos: t.Position) -> int:
    """Index into `doc.source` of a client position (negotiated units), clamped to the line."""
    lines = doc.lines
    if pos.line >= len(lines):
        return len(doc.source)
    offset = doc.offset_at_position(pos)
    start = sum(len(x) for x in lines[: pos.line])
    end = start + len(lines[pos.line].rstrip("\r\n"))
    return max(start, min(offset, end))


def _ask(ls: CorralLanguageServer, doc: TextDocument, pos: t.Position) -> Ask:
    off = cursor_offset(doc, pos)
    src = doc.source
    path = file_name(ls, doc)
    return Ask(doc.uri, src[:off], src[off:], ls.mode, max_tokens=ls.max_tokens, path=path)


def file_name(ls: CorralLanguageServer, doc: TextDocument) -> str | None:
    """The document's path as repo-level FIM prompts name files: relative to the workspace
    root (as the models saw them in training), else the base name."""
    if not doc.path:
        return None
    root = ls.workspace.root_path
    if root and os.path.commonpath([root, doc.path]) == os.path.normpath(root):
        return os.path.relpath(doc.path, root)
    return os.path.basename(doc.path)


def _replace_range(doc: TextDocument, off: int, ans: Answer) -> tuple[t.Range, int]:
    """(range the completion replaces, start offset): from the start of the word being
    typed (so clients filter on it) to the cursor, or to the line end when a single-line
    completion already ends with the rest of the line (closing brackets)."""
    word = _WORD_TAIL.search(ans.cursor.before)
    start = off - (len(word.group()) if word else 0)
    end = off
    rest = ans.cursor.after.rstrip()
    if ans.shape is Shape.SINGLE_LINE and rest and ans.text.rstrip().endswith(rest):
        end = off + len(ans.cursor.after)
    pos = doc.client_position_at_offset
    return t.Range(pos(start), pos(end)), start


def build_server(
    completer: Completer, mode: FimMode = FimMode.FIM, max_tokens: int = 64
) -> CorralLanguageServer:
    """The language server with every feature registered."""
    ls = CorralLanguageServer(completer, mode, max_tokens)

    @ls.feature("llm-ls/getCompletions")
    async def get_completions(params: Any) -> dict[str, Any]:
        p = plain(params)
        if not isinstance(p, Mapping):
            raise JsonRpcInvalidParams("llm-ls/getCompletions takes an object")
        doc = ls.document(str(p.get("textDocument", {}).get("uri", "")))
        position = p.get("position") or {}
        pos = t.Position(int(position.get("line", 0)), int(position.get("character", 0)))
        off = cursor_offset(doc, pos)
        ask = ask_from_llm_ls(p, doc.uri, doc.source[:off], doc.source[off:], ls.max_tokens)
        ask.path = file_name(ls, doc)
        ans = await ls.answer(ask, p.get("model") or None)
        text = ans.text
        for token in p.get("tokensToClear") or []:
            if isinstance(token, str) and token:
                text = text.replace(token, "")
        # nothing inside a word; nothing for a request a newer keystroke replaced
        stale = ans.shape is Shape.EMPTY or ans.superseded
        completions = [] if stale else [{"generated_text": text}]
        return {"request_id": str(uuid.uuid4()), "completions": completions}

    @ls.feature("llm-ls/acceptCompletion")
    def accept_completion(params: Any) -> None:
        log.info("accepted completion %s", plain(params))

    @ls.feature("llm-ls/rejectCompletion")
    def reject_completion(params: Any) -> None:
        log.info("rejected completion %s", plain(params))

    @ls.feature(t.TEXT_DOCUMENT_INLINE_COMPLETION, t.InlineCompletionOptions())
    async def inline_completion(params: t.InlineCompletionParams) -> t.InlineCompletionList:
        doc = ls.document(params.text_document.uri)
        ask = _ask(ls, doc, params.position)
        ans = await ls.answer(ask)
        if not ans.text or ans.superseded:
            return t.InlineCompletionList(items=[])
        off = len(ask.prefix)
        rng, start = _replace_range(doc, off, ans)
        text = doc.source[start:off] + ans.text
        return t.InlineCompletionList(items=[t.InlineCompletionItem(insert_text=text, range=rng)])

    @ls.feature(t.TEXT_DOCUMENT_COMPLETION, t.CompletionOptions(resolve_provider=False))
    async def completion(params: t.CompletionParams) -> t.CompletionList:
        doc = ls.document(params.text_document.uri)
        ask = _ask(ls, doc, params.position)
        ans = await ls.answer(ask)
        # incomplete: the answer changes with every character, so ask again each time
        if not ans.text or ans.superseded:
            return t.CompletionList(is_incomplete=True, items=[])
        off = len(ask.prefix)
        rng, start = _replace_range(doc, off, ans)
        text = doc.source[start:off] + ans.text
        label = text.strip().split("\n", 1)[0][:80] or text[:80]
        item = t.CompletionItem(
            label=label, kind=t.CompletionItemKind.Snippet, detail="corral",
            filter_text=text, text_edit=t.TextEdit(rng, text),
            insert_text_format=t.InsertTextFormat.PlainText,
        )  # fmt: skip
        return t.CompletionList(is_incomplete=True, items=[item])

    @ls.feature(t.SHUTDOWN)
    def shutdown(params: Any) -> None:
        completer.close()

    return ls
