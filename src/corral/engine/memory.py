"""Keep the process's resident memory close to what the model needs.

glibc raises its mmap threshold each time a large block is freed, after which big temporary
tensors (dequantized weights at load, prefill activations) come from the heap and are kept
by the allocator after being freed: ~90 MB of dead memory on SmolLM2. Fixing the threshold
makes such blocks go straight back to the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Iterator

_M_MMAP_THRESHOLD = -3
_THRESHOLD_BYTES = 256 * 1024
_done = False


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None


def tune_allocator() -> None:
    """Fix glibc's mmap threshold (once per process); a no-op elsewhere."""
    global _done
    if _done:
        return
    _done = True
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Hand memory the allocator holds but no longer uses back to the kernel."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a block that builds many long-lived
    objects (a model load: ~300k vocabulary strings, merge pairs and tensors).

    Each 700 new tuples start a collection, and the older generations hold all of torch's
    objects: on SmolLM2 the collector took ~0.1 s of a 0.3 s load. Reference counting still
    frees everything that is not in a cycle; the state before the block is restored after it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
