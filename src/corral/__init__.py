"""corral: run open LLMs on your own machine, straight from GGUF files.

`import corral` stays light (the CLI's --help must answer fast): torch and the engine are
imported on first use of `load`, `Model` and friends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "Embedder",
    "GenerationEvent",
    "GenerationResult",
    "Model",
    "embed",
    "load",
    "load_embedder",
    "tool",
]

if TYPE_CHECKING:
    from corral.chat.tools import tool
    from corral.embed import Embedder, embed, load_embedder
    from corral.generation import GenerationEvent, GenerationResult
    from corral.model import Model, load

_LAZY = {
    "load": "corral.model",
    "Model": "corral.model",
    "GenerationEvent": "corral.generation",
    "GenerationResult": "corral.generation",
    "Embedder": "corral.embed",
    "embed": "corral.embed",
    "load_embedder": "corral.embed",
    "tool": "corral.chat.tools",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'corral' has no attribute {name!r}")
