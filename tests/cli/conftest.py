"""Fixtures for the CLI tests: a private store (CORRAL_HOME), tiny GGUF files, a stand-in model.

Nothing here loads torch or a real model; tests that need one are marked `realmodel`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from corral.store import Store

TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """An empty store under tmp_path, which is also the default one (CORRAL_HOME)."""
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    return Store()


@pytest.fixture
def make_gguf(tmp_path: Path) -> Callable[..., Path]:
    """Write a small GGUF file: two F32 tensors and one F16, a BPE vocabulary whose
    end-of-turn token is <|end|>, a chat template and a license (both optional)."""

    def make(
        name: str = "tiny.gguf",
        seed: int = 0,
        template: str | None = TEMPLATE,
        license: str | None = "mit",
    ) -> Path:
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_name(f"tiny {seed}")
        w.add_context_length(128)
        w.add_embedding_length(8)
        w.add_block_count(1)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        if license is not None:
            w.add_license(license)
        w.add_tokenizer_model("gpt2")
        w.add_token_list(["a", "b", "<|end|>"])
        w.add_token_types([1, 1, 3])
        w.add_token_merges([])
        w.add_eos_token_id(2)
        if template is not None:
            w.add_chat_template(template)
        rng = np.random.default_rng(seed)
        w.add_tensor("token_embd.weight", rng.standard_normal((3, 8), dtype=np.float32))
        w.add_tensor("output_norm.weight", rng.standard_normal(8, dtype=np.float32))
        w.add_tensor("output.weight", rng.standard_normal((3, 8)).astype(np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    return make


@dataclass
class FakeInfo:
    path: Path
    n_ctx: int = 64
    name: str = "fake"


@dataclass
class FakeEvent:
    text: str
    token_id: int | None = 0
    finish_reason: Any = None
    timings: Any = None


@dataclass
class FakeTimings:
    prompt_tokens: int = 5
    prompt_s: float = 0.5
    decode_tokens: int = 4
    decode_s: float = 2.0
    cached_tokens: int = 0


class FakeFinish:
    value = "stop"


@dataclass
class FakeModel:
    """Stands in for corral.Model in Session tests: one token per character of a
    message's text, and answers from `replies` (a list of text pieces per answer).

    An answer piece that is a BaseException instance is raised instead (a Ctrl-C mid-answer).
    """

    path: Path = Path("fake.gguf")
    n_ctx: int = 64
    replies: list[list[Any]] = field(default_factory=list)
    load_seconds: float = 1.5
    calls: list[dict[str, Any]] = field(default_factory=list)
    closed: int = 0

    def __post_init__(self) -> None:
        self.info = FakeInfo(self.path, self.n_ctx)

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return [0] * sum(len(m["content"]) + 2 for m in messages)

    def generate(self, ids: list[int], max_tokens: int, **kw: Any) -> Iterator[FakeEvent]:
        self.calls.append({"ids": ids, "max_tokens": max_tokens, **kw})
        pieces = self.replies.pop(0) if self.replies else ["ok"]
        return self._events(pieces)

    def _events(self, pieces: list[Any]) -> Iterator[FakeEvent]:
        try:
            for i, piece in enumerate(pieces):
                if isinstance(piece, BaseException):
                    raise piece
                last = i == len(pieces) - 1
                yield FakeEvent(
                    piece, finish_reason=FakeFinish() if last else None,
                    timings=FakeTimings() if last else None,
                )  # fmt: skip
        finally:
            self.closed += 1


@pytest.fixture
def fake_model(tmp_path: Path) -> FakeModel:
    """A stand-in model with a 64-token context."""
    return FakeModel(path=tmp_path / "fake.gguf")


@pytest.fixture
def fake_model_class() -> type[FakeModel]:
    """The stand-in class, for tests that need several (a reload)."""
    return FakeModel


@pytest.fixture
def tiny_template() -> str:
    """The chat template `make_gguf` writes by default."""
    return TEMPLATE
