"""llm-ls's request parameters, read into an `Ask`.

pygls hands custom-method params over as nested namedtuples; `plain` turns them back into
dicts and lists. `requestBody` is whatever the editor plugin forwards to its backend, so the
generation settings are looked up in each backend's spelling: top level (OpenAI, llama.cpp),
`parameters` (Hugging Face / TGI) and `options` (ollama).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.lsp.complete import DEFAULT_CONTEXT_WINDOW, Ask, FimMode

_MAX_TOKENS_KEYS = ("max_new_tokens", "max_tokens", "n_predict", "num_predict")
_STOP_KEYS = ("stop", "stop_sequences")
MAX_TOKENS_CAP = 1024  # an editor suggestion; a runaway value should not pin the model


def plain(obj: Any) -> Any:
    """Namedtuples (pygls's view of unknown params) as dicts, recursively."""
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
        return {k: plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def _settings(body: Mapping[str, Any]) -> dict[str, Any]:
    """Generation settings from a backend request body, nested spellings first overridden
    by top-level ones."""
    out: dict[str, Any] = {}
    for nested in ("options", "parameters"):
        if isinstance(body.get(nested), Mapping):
            out.update(body[nested])
    out.update({k: v for k, v in body.items() if k not in ("options", "parameters")})
    return out


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return kind(value)


def ask_from_llm_ls(
    p: Mapping[str, Any], key: str, prefix: str, suffix: str, default_max_tokens: int
) -> Ask:
    """The Ask for an `llm-ls/getCompletions` request at the cursor between prefix/suffix."""
    fim = p.get("fim") if isinstance(p.get("fim"), Mapping) else {}
    mode = FimMode.FIM if fim.get("enabled", True) else FimMode.PREFIX
    window = _number(p.get("contextWindow"), int) or DEFAULT_CONTEXT_WINDOW
    body = p.get("requestBody") if isinstance(p.get("requestBody"), Mapping) else {}
    s = _settings(body)
    max_tokens = next(
        (n for k in _MAX_TOKENS_KEYS if (n := _number(s.get(k), int)) is not None and n > 0),
        default_max_tokens,
    )
    ask = Ask(key, prefix, suffix, mode, max(16, window), min(max_tokens, MAX_TOKENS_CAP))
    if (temp := _number(s.get("temperature"), float)) is not None and temp >= 0:
        ask.temperature = temp
    if (top_p := _number(s.get("top_p"), float)) is not None and 0 < top_p <= 1:
        ask.top_p = top_p
    for k in _STOP_KEYS:
        stop = s.get(k)
        if isinstance(stop, str):
            ask.stop = [stop]
        elif isinstance(stop, list):
            ask.stop = [x for x in stop if isinstance(x, str) and x]
    return ask
