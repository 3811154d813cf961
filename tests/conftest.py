"""Shared fixtures: where the real models and the llama.cpp oracles are.

Real-model tests are marked `realmodel`; `make test` pulls both models first, so they run
there. Outside it, they find the files through the store (`corral pull`), or through
CORRAL_TEST_MODELS (a folder holding the two .gguf files), and fail loudly if neither has them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# OpenMP threads sleep while they wait instead of spinning: on a shared or loaded machine a
# spinning pool multiplies test time many times over (measured here: a 50-schema grammar
# test 930 s -> 42 s at load ~5). Set before anything imports torch; a value set outside wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ORACLES = Path(__file__).resolve().parents[1].parent / "shared" / "oracles"
REAL_FILES = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3-270m": "gemma-3-270m-q4_k_m.gguf",
}


def real_model_path(name: str) -> Path:
    """Path of a real model's GGUF file, from the store or CORRAL_TEST_MODELS."""
    folder = os.environ.get("CORRAL_TEST_MODELS")
    if folder and (Path(folder) / REAL_FILES[name]).exists():
        return Path(folder) / REAL_FILES[name]
    try:
        from corral.store import Store

        return Store().resolve(name).path
    except Exception as e:  # noqa: BLE001 - turned into a clear test failure below
        pytest.fail(f"real model {name!r} not available (run `corral pull {name}`): {e}")


def load_oracle(short: str) -> dict:
    path = ORACLES / f"oracle_{short}.json"
    if not path.exists():
        pytest.fail(f"oracle file missing: {path}")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return real_model_path("smollm2")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    return real_model_path("gemma3-270m")


@pytest.fixture(scope="session")
def oracle_smollm2() -> dict:
    return load_oracle("smollm2")


@pytest.fixture(scope="session")
def oracle_gemma3() -> dict:
    return load_oracle("gemma3")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests for hardware this machine lacks are deselected (not skipped), so the report
    counts only what ran here: `cuda` ones without a GPU torch sees, `amx` ones without
    AMX-INT8 tiles (corral.kernels.AMX). Where the hardware is, they run with the rest."""
    import torch

    from corral import kernels

    absent = {"cuda": not torch.cuda.is_available(), "amx": not kernels.AMX}
    keep = [i for i in items if not any(absent[m] and i.get_closest_marker(m) for m in absent)]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
