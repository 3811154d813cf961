"""A Jinja2 sandbox that bounds the work a chat template does, not just what it can reach.

`ImmutableSandboxedEnvironment` already refuses `__class__`-style escapes and mutation of
lists and dicts. On top of it `BoundedEnvironment`:

* raises at once on an unsafe attribute (the stock sandbox returns an Undefined that
  prints as "", so `{{ ().__class__ }}` would render silently);
* compiles every `for` loop to iterate through a counter, so loops (even with empty
  bodies, which never yield output) charge steps and see the wall-clock deadline;
* checks the size of what `*`, `**`, `+`, `%`, `~`, `str.format`, amplifying string
  methods and filters would build *before* Python builds it in one C call;
* caps `range()`, call depth (runaway macro recursion), buffered output of macros and
  `{% set %}` blocks, and the total data a render creates.

It also turns constant folding off: Jinja would otherwise run filters at compile time,
outside any budget. Rendering itself lives in `render_bounded`.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import pass_context

from corral.chat.guards import (
    FILTER_PRECHECKS,
    MAX_INT_BITS,
    STRINGIFYING,
    check_method_call,
    int_binop_bits,
    is_int,
    percent_format_size,
    spec_width,
)
from corral.chat.limits import (
    CURRENT_BUDGET,
    SCALARS,
    Budget,
    RenderLimits,
    check_value,
    check_weight,
    shallow_size,
    tick,
    weigh,
)
from corral.errors import TemplateError


class _GuardedCodeGenerator(CodeGenerator):
    """Emits Jinja's usual Python, with loops, `~` and block buffers routed through checks."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # A loop body with no output never yields, so only the iterator itself can see
        # a runaway `{% for i in range(N) %}{% for j in range(N) %}{% endfor %}...`.
        guarded = nodes.Call(nodes.EnvironmentAttribute("corral_iter"), [node.iter], [], None, None)
        guarded.set_lineno(node.lineno).set_environment(self.environment)
        node.iter = guarded
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.corral_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("), context.eval_ctx.autoescape)")

    def buffer(self, frame: Frame) -> None:
        # Macros, `{% set %}...{% endset %}` and filter blocks collect output in a list
        # that is joined at the end; a bounded list stops it growing past the limit.
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.corral_buffer()")


class BoundedBuffer(list):
    """An output buffer that refuses to hold more than `max_output_chars` characters."""

    __slots__ = ("_limits", "_size")

    def __init__(self, limits: RenderLimits) -> None:
        super().__init__()
        self._limits = limits
        self._size = 0

    def _grow(self, chunk: object) -> None:
        self._size += (
            len(chunk) if isinstance(chunk, str) else weigh(chunk, self._limits.max_output_chars)
        )
        check_weight(self._size, self._limits, "output")

    def append(self, chunk: object) -> None:
        self._grow(chunk)
        super().append(chunk)

    def extend(self, chunks: Iterable[object]) -> None:
        chunks = tuple(chunks)
        for chunk in chunks:
            self._grow(chunk)
        super().extend(chunks)


class _BoundedFormatter(SandboxedFormatter):
    """`str.format` for templates: sandboxed field lookup plus size checks per field."""

    def __init__(self, env: BoundedEnvironment) -> None:
        super().__init__(env)
        self._limits = env.limits
        self._size = 0

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        check_value(value, self._limits)  # `!r` of a huge list would build it in full
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        tick()
        check_weight(spec_width(format_spec), self._limits, "a padded field")
        check_value(value, self._limits)
        text = super().format_field(value, format_spec)
        self._size += len(text)
        check_weight(self._size, self._limits, "a formatted string")
        return text


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Check each `{{ value }}` before it is turned into text.

    Taking the context also stops Jinja from evaluating outputs at compile time.
    """
    check_value(value, context.environment.limits, "output")  # type: ignore[attr-defined]
    return value


_SEQUENCES = (str, bytes, list, tuple)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Immutable sandbox with hard bounds on steps, time, sizes, ranges and call depth."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(
        self,
        limits: RenderLimits,
        *,
        extra_globals: Mapping[str, Any] | None = None,
        extra_filters: Mapping[str, Callable[..., Any]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(optimized=False, finalize=_finalize, **options)
        self.limits = limits
        # lipsum(n=10**9) writes gigabytes of lorem ipsum; no chat template uses it.
        self.globals.pop("lipsum", None)
        self.globals["range"] = _bounded_range(limits)
        self.globals.update(extra_globals or {})
        all_filters = {**self.filters, **(extra_filters or {})}
        self.filters = {name: self._guard_filter(name, f) for name, f in all_filters.items()}

    # --- hooks the generated code calls -------------------------------------------------

    def corral_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What every `for` loop iterates: the items, one step charged per item."""
        budget = CURRENT_BUDGET.get()
        return iterable if budget is None else _counted(iterable, budget)  # type: ignore[return-value]

    def corral_concat(self, parts: tuple[Any, ...], autoescape: bool) -> str:
        """The `~` operator: refuse before joining parts too big to print."""
        total = sum(weigh(part, self.limits.max_output_chars) for part in parts)
        check_weight(total, self.limits, "a string")
        result = markup_join(parts) if autoescape else str_join(parts)
        self.produced(result, len(result))
        return result

    def corral_buffer(self) -> BoundedBuffer:
        """A fresh output buffer for a macro or block."""
        return BoundedBuffer(self.limits)

    # --- sandbox overrides --------------------------------------------------------------

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        """Raise at once: the stock Undefined would print an escape attempt as ''."""
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Route `str.format` / `format_map` through a size-checking sandboxed formatter."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return None
        if value.__name__ not in ("format", "format_map"):
            return None
        template = value.__self__
        if not isinstance(template, str):
            return None
        is_map = value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping argument")
                args, kwargs = (), args[0]
            return type(template)(_BoundedFormatter(self).vformat(template, args, kwargs))

        return functools.update_wrapper(bounded_format, value)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call from template code: charge a step, bound nesting, check what comes back."""
        budget = CURRENT_BUDGET.get()
        if budget is not None:
            budget.tick()
            if budget.depth >= __self.limits.max_call_depth:
                raise TemplateError(
                    f"chat template nests calls deeper than {__self.limits.max_call_depth}"
                    " (runaway macro recursion?)"
                )
            budget.depth += 1
        if isinstance(__obj, LoopContext) and args:
            # `loop(children)` in a recursive for: count those items like any loop's.
            args = (__self.corral_iter(args[0]), *args[1:])
        try:
            args = check_method_call(__obj, args, kwargs, __self.limits)
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            if budget is not None:
                budget.depth -= 1
        __self.produced(result)
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """`*`, `**`, `+`, `%`: estimate the result's size before computing it."""
        tick()
        cap = self.limits.max_output_chars
        weight = None
        if is_int(left) and is_int(right):
            if int_binop_bits(operator, left, right) > MAX_INT_BITS:
                raise TemplateError(
                    f"chat template computes a number of more than {MAX_INT_BITS} bits"
                )
        elif operator == "*":
            seq, times = (left, right) if is_int(right) else (right, left)
            if isinstance(seq, _SEQUENCES) and is_int(times):
                weight = weigh(seq, cap) * max(times, 0)
                check_weight(weight, self.limits)
        elif operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            weight = weigh(left, cap) + weigh(right, cap)
            check_weight(weight, self.limits)
        elif operator == "%" and isinstance(left, str | bytes):
            check_weight(percent_format_size(left, right, self.limits), self.limits)
        result = super().call_binop(context, operator, left, right)
        self.produced(result, weight)
        return result

    # --- checks -------------------------------------------------------------------------

    def produced(self, value: Any, weight: int | None = None) -> None:
        """Check a value the template just made and charge what it cost to create."""
        kind = type(value)
        if kind in SCALARS:
            return
        if kind is str:  # fast path for the common case
            check_weight(len(value), self.limits)
            budget = CURRENT_BUDGET.get()
            if budget is not None:
                budget.charge(len(value))
            return
        if weight is None:
            weight = weigh(value, self.limits.max_output_chars)
        check_weight(weight, self.limits)
        budget = CURRENT_BUDGET.get()
        if budget is not None:
            budget.charge(shallow_size(value))
            if isinstance(value, list | tuple | dict):
                budget.remember(value, weight)

    def _guard_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a filter so it charges a step, runs its precheck and checks its result."""
        precheck = FILTER_PRECHECKS.get(name)
        needs_signature = precheck is not None or name in STRINGIFYING
        signature = inspect.signature(func) if needs_signature else None
        # Jinja's async-capable filters take an eval context their signature (that of
        # the sync function) does not list; that argument is passed through unbound.
        skip = 0
        if signature is not None and getattr(func, "jinja_pass_arg", None) is not None:
            first = next(iter(signature.parameters), "")
            skip = 0 if first in ("context", "eval_ctx", "environment") else 1

        @functools.wraps(func)  # keeps Jinja's pass_context/pass_environment marker
        def guarded(*args: Any, **kwargs: Any) -> Any:
            tick()
            if name in STRINGIFYING and len(args) > skip:
                check_value(args[skip], self.limits)  # the filter prints its whole value
            elif precheck is not None and signature is not None:
                bound = signature.bind(*args[skip:], **kwargs)
                precheck(self.limits, bound.arguments)
                args, kwargs = (*args[:skip], *bound.args), bound.kwargs
            result = func(*args, **kwargs)
            self.produced(result)
            return result

        return guarded


def _counted(iterable: Iterable[Any], budget: Budget) -> Iterator[Any]:
    for item in iterable:
        budget.tick()
        yield item


def _bounded_range(limits: RenderLimits) -> Callable[..., range]:
    def range_(*args: int) -> range:
        """`range()` for templates, refused past `max_range` items."""
        rng = range(*args)
        try:
            length = len(rng)
        except OverflowError:  # more than sys.maxsize items
            length = -1
        if length < 0 or length > limits.max_range:
            size = "an astronomical number of" if length < 0 else str(length)
            raise TemplateError(
                f"chat template asks for range() of {size} items; the limit is {limits.max_range}"
            )
        return rng

    return range_


def render_bounded(template: Any, variables: dict[str, Any], limits: RenderLimits) -> str:
    """Render a template compiled by a `BoundedEnvironment`, streaming and checking output.

    The output is collected chunk by chunk from `generate()`, so an endless or huge render
    stops at the size or time limit instead of after building everything.
    """
    budget = Budget(limits)
    token = CURRENT_BUDGET.set(budget)
    try:
        parts: list[str] = []
        size = 0
        chunks = template.generate(variables)
        try:
            for chunk in chunks:
                size += len(chunk)
                check_weight(size, limits, "a prompt")
                budget.check_time()
                parts.append(chunk)
        finally:
            chunks.close()
        return "".join(parts)
    finally:
        CURRENT_BUDGET.reset(token)
