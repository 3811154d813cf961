"""Work and size limits for rendering untrusted chat templates.

A chat template comes from a downloaded model file, so it is untrusted code. Jinja2's
sandbox stops it from reaching Python internals, but not from burning CPU or memory: a
loop over `range(10**9)`, `'x' * 10**10` or a runaway macro would hang or exhaust the
process. This module holds the numbers that bound a render and the per-render budget the
sandbox charges as the template runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass

from jinja2.utils import Namespace

from corral.errors import TemplateError

# Most container slots the weight cache keeps alive (about 8 MB of pointers).
_CACHE_SLOTS = 1_000_000

# Values that print small whatever they hold (ints are kept small by `int_binop_bits`).
SCALARS = frozenset({int, float, bool, type(None)})


@dataclass(frozen=True)
class RenderLimits:
    """Bounds on one render; the defaults are far above what real chat templates need."""

    #: Longest rendered prompt, and the largest value (string, list) a template may build.
    max_output_chars: int = 4_000_000
    #: Longest `range()` a template may ask for.
    max_range: int = 100_000
    #: Loop iterations plus calls (macros, methods, filters) in one render.
    max_steps: int = 500_000
    #: Calls nested inside calls; only runaway macro recursion gets deep.
    max_call_depth: int = 64
    #: Characters of new strings and container slots a render may create in all; this
    #: catches many big values built one after another (a lazy `map` of huge strings).
    max_allocated_chars: int = 64_000_000
    #: Wall-clock seconds for one render, checked as the template runs.
    time_limit_s: float = 2.0
    #: Longest template source accepted.
    max_source_chars: int = 1_000_000


class Budget:
    """What one render has spent so far; the sandbox charges it on every step."""

    __slots__ = ("limits", "deadline", "steps", "depth", "allocated", "weights", "_held")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.time_limit_s
        self.steps = 0
        self.depth = 0
        self.allocated = 0
        # id -> (container, weight): weighing the same list again (a loop that filters
        # `messages` each turn) must not cost its size again. Holding the object keeps
        # its id from being reused during the render.
        self.weights: dict[int, tuple[object, int]] = {}
        self._held = 0  # slots of the containers `weights` keeps alive

    def remember(self, container: Sized, weight: int) -> None:
        """Cache a container's weight. The cache keeps what it holds alive, so it is
        emptied past `_CACHE_SLOTS`: a loop growing a list (`ns.l = ns.l + [x]`) would
        otherwise keep every intermediate list until the render ends."""
        size = len(container) + 1
        if self._held + size > _CACHE_SLOTS:
            self.weights.clear()
            self._held = 0
        self.weights[id(container)] = (container, weight)
        self._held += size

    def charge(self, chars: int) -> None:
        """Count `chars` newly created characters or slots against the allocation limit."""
        self.allocated += chars
        if self.allocated > self.limits.max_allocated_chars:
            raise TemplateError(
                f"chat template created more than {self.limits.max_allocated_chars}"
                " characters of data"
            )

    def tick(self) -> None:
        """Charge one step (loop iteration or call) and enforce the step and time limits."""
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise TemplateError(
                f"chat template ran more than {self.limits.max_steps} loop steps and calls"
            )
        self.check_time()

    def check_time(self) -> None:
        """Fail once the render has run past its wall-clock limit."""
        if time.monotonic() > self.deadline:
            raise TemplateError(
                f"chat template ran longer than its {self.limits.time_limit_s:g} s limit"
            )


# The budget of the render in progress. A ContextVar rather than an attribute on the
# environment so that one ChatTemplate can be rendered from several threads at once.
CURRENT_BUDGET: ContextVar[Budget | None] = ContextVar("corral_chat_budget", default=None)


def tick() -> None:
    """Charge one step to the render in progress, if any (compile-time folding has none)."""
    budget = CURRENT_BUDGET.get()
    if budget is not None:
        budget.tick()


def shallow_size(value: object) -> int:
    """Characters or slots a value took to create, not counting what it shares."""
    if isinstance(value, Sized):
        try:
            return len(value)
        except TypeError:  # a __len__ that refuses (a strict Undefined)
            return 0
    return 0


def _children(item: object) -> Iterable[object] | None:
    """The parts `str(item)` prints, for the containers a template can build."""
    if isinstance(item, Mapping):
        return [*item.keys(), *item.values()]
    if isinstance(item, list | tuple | set | frozenset):
        return item
    if isinstance(item, Namespace):
        # `{% set ns.x = ... %}` fills a private dict that repr(ns) prints in full.
        attrs = object.__getattribute__(item, "_Namespace__attrs")
        return [*attrs.values()]
    return None


def weigh(value: object, limit: int) -> int:
    """Roughly how many characters `str(value)` would take, counting at most past `limit`.

    It walks containers but stops as soon as the total passes `limit`, so it costs at most
    about `limit` steps whatever the value; each element counts at least 1, which also
    ends the walk on cycles. Weights of containers seen earlier in the render are reused.
    """
    kind = type(value)
    if kind is str or kind is bytes:  # the common case, kept fast: this runs per output
        return len(value)  # type: ignore[arg-type]
    if kind in SCALARS:
        return 8
    budget = CURRENT_BUDGET.get()
    cache = budget.weights if budget is not None else None
    if cache is not None and id(value) in cache:
        return cache[id(value)][1]
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
            continue
        if isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 1
            continue
        if cache is not None and id(item) in cache:
            total += cache[id(item)][1]
            continue
        children = _children(item)
        if children is None:
            total += 4
            continue
        total += 2 + 2 * len(children)  # type: ignore[arg-type]
        if total <= limit:
            stack.extend(children)
    # Only immutable-in-the-sandbox containers are cached; a Namespace can change.
    if budget is not None and isinstance(value, list | tuple | dict):
        budget.remember(value, total)
    return total


def check_weight(chars: int, limits: RenderLimits, what: str = "a value") -> None:
    """Refuse an operation that would build more than `max_output_chars` characters."""
    if chars > limits.max_output_chars:
        raise TemplateError(
            f"chat template builds {what} larger than {limits.max_output_chars} characters"
        )


def check_value(value: object, limits: RenderLimits, what: str = "a value") -> None:
    """Refuse a value (string or container) that is already too big to keep or print."""
    check_weight(weigh(value, limits.max_output_chars), limits, what)


def check_int(value: object, limit: int, what: str) -> None:
    """Refuse an int argument used as a size (width, count, length) above `limit`."""
    if isinstance(value, int) and abs(value) > limit:
        raise TemplateError(f"chat template asks for {what} of size {value}; the limit is {limit}")


def one_line(text: object, limit: int = 400) -> str:
    """Collapse a message onto one line (errors are shown to users as is) and shorten it."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
