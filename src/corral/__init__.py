"""corral: run open LLMs on your own machine, straight from GGUF files."""

from __future__ import annotations

__version__ = "0.1.0"
