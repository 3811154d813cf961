"""Fixtures for the language-server tests: tiny models, and `corral lsp` under a client."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lsp_client import LspClient

from tiny_gguf import write_tiny

STARCODER = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<repo_name>",
             "<file_sep>"]  # fmt: skip


@pytest.fixture(scope="session")
def lsp_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("lspmodels")
    return {
        "coder": write_tiny(d / "coder.gguf", context=512, extra_specials=STARCODER),
        "plain": write_tiny(d / "plain.gguf", context=512),
    }


@pytest.fixture
def start_lsp(tmp_path: Path) -> Iterator[Callable[..., LspClient]]:
    """Start `corral lsp ARGS...` as a subprocess; shut down after the test."""
    clients: list[LspClient] = []

    def start(*args: str) -> LspClient:
        log = open(tmp_path / f"lsp{len(clients)}.log", "wb")  # noqa: SIM115 - lives with it
        # OpenMP threads that sleep instead of spinning while they wait: on a machine whose
        # cores other processes share, spinning made the real-model test 7x slower
        env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "CORRAL_HOME": str(tmp_path / "home")}
        c = LspClient([sys.executable, "-m", "corral", "lsp", *args], env, log)
        clients.append(c)
        return c

    yield start
    for c in clients:
        c.close()
