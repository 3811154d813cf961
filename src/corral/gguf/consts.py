"""gguf-py's format tables (its `gguf.constants` module) without the rest of the package.

`import gguf` runs the package's init, which loads its reader, writer, quantizers, vocab and
metadata modules (and yaml): ~57 ms, a third of what llama.cpp needs to load SmolLM2. Loading
a model only needs the tables, so this executes gguf/constants.py as the module
`gguf.constants`. A later `import gguf` (the converter, the quantizer, tests) finds that
module in sys.modules and reuses it, so both routes share the same enum classes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _constants() -> ModuleType:
    name = "gguf.constants"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("gguf")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the gguf package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "constants.py"
    mspec = importlib.util.spec_from_file_location(name, path)
    if mspec is None or mspec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(mspec)
    sys.modules[name] = module
    try:
        mspec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


_c = _constants()
GGML_QUANT_SIZES = _c.GGML_QUANT_SIZES
GGMLQuantizationType = _c.GGMLQuantizationType
GGUFValueType = _c.GGUFValueType
LlamaFileType = _c.LlamaFileType

__all__ = ["GGML_QUANT_SIZES", "GGMLQuantizationType", "GGUFValueType", "LlamaFileType"]
