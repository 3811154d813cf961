"""Fixtures for the server tests: a store holding tiny random models, apps over it, and
servers on free loopback ports (in-process uvicorn, or a `corral serve` subprocess).

The tiny models answer gibberish fast; tests check shapes, statuses and plumbing, and one
realmodel test checks an actual answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server_helpers import free_port, inprocess_server, wait_up
from starlette.testclient import TestClient

from corral.server import ServerConfig, create_app
from corral.store import Store
from tiny_gguf import write_tiny


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny model files (different weights) with a 512-token context."""
    folder = tmp_path_factory.mktemp("tiny")
    return {
        "tiny": write_tiny(folder / "tiny.gguf", context=512),
        "other": write_tiny(folder / "other.gguf", context=512, seed=1),
    }


@pytest.fixture
def home(tmp_path: Path, tiny_files: dict[str, Path]) -> Path:
    """A CORRAL_HOME with models `tiny` and `other` in its store."""
    home = tmp_path / "home"
    store = Store(home)
    for name, path in tiny_files.items():
        store.add_file(path, name)
    return home


@pytest.fixture
def make_client(home: Path) -> Iterator[Callable[..., TestClient]]:
    """Build a TestClient over a new app on `home`; keyword args go to ServerConfig."""
    clients: list[TestClient] = []

    def make(**kw: object) -> TestClient:
        config = ServerConfig(store_home=home, **kw)  # type: ignore[arg-type]
        client = TestClient(create_app(config), raise_server_exceptions=False)
        client.__enter__()  # runs the lifespan: models unload at the end
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A client over an app with default settings."""
    return make_client()


@pytest.fixture
def live(home: Path) -> Iterator[tuple[str, object]]:
    """An in-process uvicorn server over `home`."""
    with inprocess_server(ServerConfig(store_home=home, port=free_port())) as pair:
        yield pair


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`corral serve` in a subprocess on a free port, CORRAL_HOME a fresh store holding
    `tiny`; yields its base URL. Shared by a module's tests (startup costs seconds)."""
    folder = tmp_path_factory.mktemp("served")
    home = folder / "home"
    Store(home).add_file(write_tiny(folder / "tiny.gguf", context=512), "tiny")
    port = free_port()
    env = {**os.environ, "CORRAL_HOME": str(home)}
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "serve", "--port", str(port), "--keep-alive", "-1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base, proc=proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
