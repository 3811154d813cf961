"""Every suffix-aware path ends a middle on the model's FIM markers that are no
end-of-generation tokens: llama.cpp /infill, Tabby /v1/completions, OpenAI /v1/completions
with `suffix`, ollama /api/generate with `suffix`, and `corral lsp`'s Completer.

A random tiny model would seldom write a marker by itself, so the scheduler is wrapped to
force the output "ab", then the marker, then "cd": a path that stops on the marker answers
"ab", one that does not answers "abcd".
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from starlette.testclient import TestClient

from corral.engine.scheduler import Scheduler
from corral.fim import FimStops, find_fim_tokens
from corral.lsp.complete import Ask, Completer
from corral.model import load
from corral.server import ServerConfig, create_app
from corral.store import Store
from tiny_gguf import write_tiny

STARCODER = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<repo_name>",
             "<file_sep>"]  # fmt: skip
CODEGEMMA = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|file_separator|>"]
PRE, SUF = "def f(a):\n    ", "\n    return b\n"
# (model, marker): markers outside the tiny vocabulary's end-of-generation set
CASES = [
    ("starcoder", "<fim_prefix>"),
    ("starcoder", "<fim_suffix>"),
    ("starcoder", "<fim_middle>"),
    ("starcoder", "<file_sep>"),
    ("starcoder", "<repo_name>"),
    ("codegemma", "<|file_separator|>"),
    ("codegemma", "<|fim_prefix|>"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fimstops")
    return {
        "starcoder": write_tiny(d / "sc.gguf", context=256, extra_specials=STARCODER),
        "codegemma": write_tiny(d / "cg.gguf", context=256, extra_specials=CODEGEMMA),
    }


class _Force:
    """Wraps a request's constraint: only `seq` may be drawn, then only the end token; the
    wrapped constraint alone decides when the request is done."""

    def __init__(self, inner: Any, seq: list[int], eos: int) -> None:
        self.inner, self.seq, self.eos, self.i = inner, seq, eos, 0

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(logits, float("-inf"))
        out[self.seq[self.i] if self.i < len(self.seq) else self.eos] = 0.0
        return out

    def accept(self, token: int) -> None:
        self.i += 1
        if self.inner is not None:
            self.inner.accept(token)

    def is_done(self) -> bool:
        return self.inner is not None and self.inner.is_done()


@pytest.fixture
def force(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Set `force["marker"]`; every request submitted then writes "ab", marker, "cd"."""
    chosen: dict[str, str] = {}
    real = Scheduler.submit

    def submit(self: Scheduler, request: Any, loop: Any = None) -> Any:
        tok = self.model.tokenizer
        seq = tok.encode("ab", add_special=False) + [tok.vocab.token_to_id[chosen["marker"]]]
        seq += tok.encode("cd", add_special=False)
        wrapped = _Force(request.constraint, seq, tok.eos_id)
        return real(self, dataclasses.replace(request, constraint=wrapped), loop)

    monkeypatch.setattr(Scheduler, "submit", submit)
    return chosen


def test_markers_are_stops_but_not_end_of_generation(files: dict[str, Path]) -> None:
    """What the tests below rely on: none of the markers ends generation by itself."""
    for name, marker in CASES:
        tok = load(files[name]).tokenizer
        tid = tok.vocab.token_to_id[marker]
        assert tid not in tok.eog_ids
        found = find_fim_tokens(tok)
        assert found is not None and tid in found.stop_ids
        assert tid in FimStops.of_model(tok).ids


@pytest.fixture(scope="module")
def client(
    files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("fimstops-home")
    store = Store(home)
    for name, path in files.items():
        store.add_file(path, name)
    with TestClient(create_app(ServerConfig(store_home=home)), raise_server_exceptions=False) as c:
        yield c


def _route(client: TestClient, route: str, model: str) -> str:
    if route == "infill":
        body = {"model": model, "input_prefix": PRE, "input_suffix": SUF, "n_predict": 8}
        r = client.post("/infill", json=body)
        return r.json()["content"]  # type: ignore[no-any-return]
    if route == "tabby":
        seg = {"prefix": PRE, "suffix": SUF}
        r = client.post("/v1/completions", json={"model": model, "segments": seg, "max_tokens": 8})
        return r.json()["choices"][0]["text"]  # type: ignore[no-any-return]
    if route == "openai":
        body = {"model": model, "prompt": PRE, "suffix": SUF, "max_tokens": 8}
        r = client.post("/v1/completions", json=body)
        return r.json()["choices"][0]["text"]  # type: ignore[no-any-return]
    body = {"model": model, "prompt": PRE, "suffix": SUF, "stream": False,
            "options": {"num_predict": 8}}  # fmt: skip
    r = client.post("/api/generate", json=body)
    return r.json()["response"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("model", "marker"), CASES)
@pytest.mark.parametrize("route", ["infill", "tabby", "openai", "ollama"])
def test_routes_stop_on_markers(
    client: TestClient, force: dict[str, str], route: str, model: str, marker: str
) -> None:
    force["marker"] = marker
    assert _route(client, route, model) == "ab"


def test_routes_without_a_suffix_are_not_cut(client: TestClient, force: dict[str, str]) -> None:
    """The check above can fail: a plain completion does not stop on FIM markers, and the
    forced text runs past the marker."""
    force["marker"] = "<file_sep>"
    r = client.post("/v1/completions", json={"model": "starcoder", "prompt": PRE, "max_tokens": 8})
    assert r.json()["choices"][0]["text"] == "abcd"


@pytest.mark.parametrize(("model", "marker"), CASES[::2])
@pytest.mark.parametrize("healed", [False, True])
def test_lsp_stops_on_markers(
    files: dict[str, Path], force: dict[str, str], model: str, marker: str, healed: bool
) -> None:
    """The language server's completer uses the same stops (with and without its blank
    healing, which wraps the request's constraint too)."""
    force["marker"] = marker
    comp = Completer(str(files[model]))
    comp.load()
    prefix = "def f(a):\n" + ("    " if healed else "")
    ask = Ask("doc", prefix, "\n\nx = 1\n", max_tokens=8)
    try:
        answer = asyncio.run(comp.complete(ask))
    finally:
        comp.close()
    if not healed:
        assert answer.text == "ab"
    else:
        # the forced "ab" is no blank, so healing cannot write the typed indentation:
        # whatever it keeps, nothing after the marker may come through
        assert "cd" not in answer.text
