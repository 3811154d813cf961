"""The model manager: LRU eviction, memory budget, keep_alive timers, busy models."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from corral.errors import QueueFullError
from corral.server.config import ServerConfig
from corral.server.durations import parse_keep_alive
from corral.server.manager import MemoryBudgetError, ModelManager
from corral.store import Store


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("10s", 10), (60, 60), (1.5, 1.5),
     ("0", 0), (0, 0), ("-1", math.inf), (-1, math.inf), ("-5m", math.inf), ("300", 300)],
)  # fmt: skip
def test_parse_keep_alive(value: object, seconds: float) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 m", "m", "", True, None, [1], "5mm"])
def test_parse_keep_alive_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_keep_alive(value)


def manager(home: Path, **kw: object) -> ModelManager:
    return ModelManager(ServerConfig(store_home=home, **kw), Store(home))  # type: ignore[arg-type]


def test_lru_eviction_beyond_models_max(home: Path) -> None:
    async def run() -> None:
        m = manager(home, models_max=1)
        (await m.acquire("tiny")).release()
        (await m.acquire("other")).release()
        assert [e.name for e in m.loaded()] == ["other:latest"]
        m2 = manager(home, models_max=2)
        for name in ("tiny", "other", "tiny"):
            (await m2.acquire(name)).release()
        assert [e.name for e in m2.loaded()] == ["tiny:latest", "other:latest"]
        await m.close()
        await m2.close()

    asyncio.run(run())


def test_busy_models_are_not_evicted(home: Path) -> None:
    async def run() -> None:
        m = manager(home, models_max=1)
        lease = await m.acquire("tiny")
        with pytest.raises(QueueFullError, match="busy"):
            await m.acquire("other")
        lease.release()
        (await m.acquire("other")).release()
        await m.close()

    asyncio.run(run())


def test_memory_budget(home: Path) -> None:
    size = Store(home).resolve("tiny").size

    async def run() -> None:
        m = manager(home, memory_budget=int(size * 1.5))  # room for one of the two
        (await m.acquire("tiny")).release()
        (await m.acquire("other")).release()
        assert [e.name for e in m.loaded()] == ["other:latest"]
        small = manager(home, memory_budget=size // 2)
        with pytest.raises(MemoryBudgetError, match="memory budget"):
            await small.acquire("tiny")
        await m.close()

    asyncio.run(run())


def test_keep_alive_timer_and_forever(home: Path) -> None:
    async def run() -> None:
        m = manager(home)
        (await m.acquire("tiny", keep_alive=0.2)).release()
        assert m.loaded() and m.loaded()[0].expires_at is not None
        await asyncio.sleep(0.6)
        assert m.loaded() == []
        (await m.acquire("tiny", keep_alive=math.inf)).release()
        assert m.loaded()[0].expires_at is None
        # a lease in progress keeps the model however short its keep_alive
        lease = await m.acquire("tiny", keep_alive=0)
        await asyncio.sleep(0.1)
        assert m.loaded()
        lease.release()
        await asyncio.sleep(0.2)
        assert m.loaded() == []
        await m.close()

    asyncio.run(run())


def test_concurrent_first_use_loads_once(home: Path) -> None:
    async def run() -> None:
        m = manager(home)
        leases = await asyncio.gather(*(m.acquire("tiny") for _ in range(4)))
        assert len({id(lease.entry) for lease in leases}) == 1 and leases[0].entry.leases == 4
        for lease in leases:
            lease.release()
        await m.close()

    asyncio.run(run())


def test_num_ctx_reloads_an_idle_model(home: Path) -> None:
    async def run() -> None:
        m = manager(home)
        (await m.acquire("tiny")).release()
        assert m.loaded()[0].n_ctx == 512
        (await m.acquire("tiny", n_ctx=64)).release()
        assert m.loaded()[0].n_ctx == 64
        await m.close()

    asyncio.run(run())
