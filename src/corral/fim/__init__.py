"""Fill-in-the-middle: a model's FIM tokens, prompts built from them, and stopping rules.

    tokens = require_fim_tokens(model.tokenizer, model.info.metadata)
    prompt = FimBuilder(model.tokenizer, tokens).build(FimRequest(prefix, suffix), budget)
    stops = FimStops.of(model.tokenizer, prompt.stop_ids)
    model.generate_with(prompt.ids, ..., stop=stops.stop_strings(), constraint=stops.constraint())

Used by the server's FIM routes (OpenAI and ollama `suffix`, llama.cpp `/infill`, Tabby)
and by `corral lsp`.
"""

from corral.fim.prompt import (
    ExtraFile,
    FimBuilder,
    FimPrompt,
    FimRequest,
    keep_head,
    keep_tail,
    prompt_budget,
)
from corral.fim.stop import FimStop, FimStops, stop_texts
from corral.fim.tokens import (
    FimFamily,
    FimOrder,
    FimTokens,
    NoFimError,
    find_fim_tokens,
    require_fim_tokens,
)

__all__ = [
    "ExtraFile",
    "FimBuilder",
    "FimFamily",
    "FimOrder",
    "FimPrompt",
    "FimRequest",
    "FimStop",
    "FimStops",
    "FimTokens",
    "NoFimError",
    "find_fim_tokens",
    "keep_head",
    "keep_tail",
    "prompt_budget",
    "require_fim_tokens",
    "stop_texts",
]
