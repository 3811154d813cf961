"""Chain fixtures: a tiny random chat model (byte-level BPE, ChatML) and a call recorder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tiny_gguf import write_tiny


class Recorder:
    """Wraps a model; keeps the user prompt of every chat call (and the keywords)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.prompts: list[str] = []
        self.kwargs: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def chat(self, messages: list[dict[str, Any]], max_tokens: int = 512, **kw: Any) -> Any:
        self.prompts.append(messages[-1]["content"])
        self.kwargs.append(kw)
        return self.model.chat(messages, max_tokens, **kw)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer model with a 400-token context: small enough that a page of text
    needs several chunks and their summaries need collapsing."""
    return write_tiny(tmp_path_factory.mktemp("tiny") / "tiny.gguf", context=400)


@pytest.fixture(scope="session")
def tiny_model(tiny_path: Path) -> Any:
    import corral

    return corral.load(tiny_path, threads=1)


@pytest.fixture
def recorder(tiny_model: Any) -> Callable[[], Recorder]:
    return lambda: Recorder(tiny_model)
