"""What every route of one app shares: settings, store, loaded models, counters.

It hangs off `app.state.corral` (no module globals), so several apps can live in one
process (the tests make one per test).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from corral.server.config import ServerConfig
from corral.server.manager import ModelManager
from corral.server.metrics import Metrics
from corral.store import Store


@dataclass
class ServerState:
    config: ServerConfig
    store: Store
    manager: ModelManager
    metrics: Metrics = field(default_factory=Metrics)
    started: float = field(default_factory=time.time)


def get_state(request: Request) -> ServerState:
    """The app's shared state (a FastAPI dependency)."""
    return request.app.state.corral  # type: ignore[no-any-return]
