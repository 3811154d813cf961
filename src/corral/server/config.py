"""`ServerConfig`: every setting of `corral serve`, typed, with the defaults the CLI shows.

The server reads nothing from module globals or the environment at import time; `create_app`
gets one of these and everything downstream takes its settings from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise: the API has no auth by default
DEFAULT_PORT = 11435  # ollama's 11434 plus one, so both can run side by side


@dataclass(frozen=True)
class ServerConfig:
    """Settings for one server instance.

    keep_alive: seconds a model stays loaded after its last request (ollama's default 5m);
    negative keeps models forever, 0 unloads right after each request.
    memory_budget: bytes the loaded models' files may add up to (None: no limit); past it the
    least recently used idle model is unloaded first.
    n_ctx: context size models are loaded with (None: the model's own, capped at 4096).
    lora: startup LoRA adapters as (path, scale), ids in this order (server/loras.py);
    lora_apply False loads them at scale 0 until a request or POST /lora-adapters asks.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    # the retrieval plugin's API (/upsert, /query, ...): its own token (None: open, unless
    # api_key guards every route), the collection it serves, the embedder a new one gets
    # (None: the only embedding model stored)
    bearer_token: str | None = None
    retrieval_collection: str = "default"
    retrieval_embedder: str | None = None
    models_max: int = 3
    max_queue: int = 64
    slots: int = 4  # requests per model decoded together (continuous batching)
    memory_budget: int | None = None
    keep_alive: float = 300.0
    max_body_bytes: int = 8 * 1024 * 1024
    n_ctx: int | None = None
    threads: int | None = None
    store_home: Path | None = None  # None: $CORRAL_HOME or ~/.cache/corral
    # how long a client is told to wait before retrying a full queue (Retry-After)
    retry_after_s: int = 1
    lora: tuple[tuple[str, float], ...] = ()
    lora_apply: bool = True

    def __post_init__(self) -> None:
        if self.models_max < 1:
            raise ValueError("models_max must be at least 1")
        if self.max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
