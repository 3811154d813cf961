"""Pre-GGUF llama.cpp model files (GGML, GGMF, GGJT v1-v3): read them, migrate them to GGUF.

`corral.load()` refuses these files with a pointer to `corral migrate`; `migrate()` writes
the GGUF equivalent (llama architecture, SPM vocabulary with scores).
"""

from corral.legacy.format import Container, LegacyModel, LegacyType, read_legacy_file
from corral.legacy.migrate import MigrateReport, OutType, migrate
from corral.legacy.parts import read_legacy

__all__ = [
    "Container",
    "LegacyModel",
    "LegacyType",
    "MigrateReport",
    "OutType",
    "migrate",
    "read_legacy",
    "read_legacy_file",
]
