"""Prompts as token ids: chat templates (the model's or a created model's TEMPLATE), plain
text, and fill-in-the-middle. Shared by both API families.

These run a template and a tokenizer, so routes call them through `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from corral.server.errors import ApiError

if TYPE_CHECKING:
    from corral.chat import ChatTemplate
    from corral.model import Model
    from corral.server.manager import LoadedModel


def with_defaults(entry: LoadedModel, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A created model's SYSTEM (unless the request brings a system message) and MESSAGE
    history, put before the request's messages, as ollama does."""
    mf = entry.modelfile
    head: list[dict[str, Any]] = []
    if mf.system is not None and not any(m.get("role") == "system" for m in messages):
        head.append({"role": "system", "content": mf.system})
    return head + [dict(m) for m in mf.messages] + messages


def render(
    entry: LoadedModel,
    messages: list[dict[str, Any]],
    template: ChatTemplate | None = None,
    add_generation_prompt: bool = True,
    **extra: Any,
) -> str:
    """The conversation as prompt text: `template`, else the created model's TEMPLATE,
    else the model's own chat template."""
    tpl = template or entry.template
    if tpl is None and not extra:
        return entry.model.render_chat(messages, add_generation_prompt=add_generation_prompt)
    if tpl is None:
        from corral.chat import template_for

        tpl = template_for(entry.model.info.metadata)
    return tpl.render(messages, add_generation_prompt=add_generation_prompt, **extra)


def text_ids(model: Model, text: str, add_special: bool = True) -> list[int]:
    """Token ids of prompt text; special-token texts in it become those tokens, as
    llama.cpp's server does (prompts carry chat markup)."""
    ids = model.tokenize(text, add_special=add_special, parse_special=True)
    bos = model.tokenizer.bos_id
    # templates usually write the BOS text themselves; don't start with two BOS tokens
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return ids


def chat_ids(
    entry: LoadedModel, messages: list[dict[str, Any]], template: ChatTemplate | None = None,
    **extra: Any,
) -> list[int]:  # fmt: skip
    """Token ids of a conversation, ready to generate the assistant's answer from."""
    return text_ids(entry.model, render(entry, messages, template, **extra))


def fim_ids(model: Model, prefix: str, suffix: str, max_tokens: int | None = None) -> list[int]:
    """Fill-in-the-middle prompt from the model's own FIM tokens (corral.fim: its family's
    layout, prefix-suffix-middle order), fitted to the context leaving room for
    `max_tokens`; a 400 for a model without FIM tokens."""
    from corral.fim import FimBuilder, FimRequest, NoFimError, prompt_budget, require_fim_tokens

    info = model.info
    try:
        tokens = require_fim_tokens(model.tokenizer, info.metadata, f"model {info.name!r}")
    except NoFimError as e:
        raise ApiError(400, str(e), param="suffix") from None
    budget = prompt_budget(info.n_ctx, max_tokens)
    return FimBuilder(model.tokenizer, tokens).build(FimRequest(prefix, suffix), budget).ids


def check_ids(model: Model, ids: Sequence[Any], param: str) -> list[int]:
    """Client-given token ids, checked against the vocabulary."""
    n = model.tokenizer.vocab_size
    out = []
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n:
            raise ApiError(400, f"'{param}' holds {t!r}, not a token id below {n}", param=param)
        out.append(t)
    return out
