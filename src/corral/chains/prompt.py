"""Prompt templates with named variables, rendered in corral's bounded Jinja2 sandbox.

    t = PromptTemplate("Translate to {{ lang }}:\\n{{ text }}")
    t.variables                      # frozenset({'lang', 'text'})
    t.render(lang="French", text="Good morning")

Templates use Jinja2 syntax (`{{ name }}`, `{% if %}`, filters), compiled in the same
`BoundedEnvironment` that renders chat templates from model files: a template may come from
a config file or a user, so it gets the same limits on time, steps and sizes. Every variable
the template names must be given (an `{% if x is defined %}` still counts `x` as named):
a forgotten variable is an error that names it, never a silent empty string. Values are
inserted as they are (no HTML escaping): prompts are plain text.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2 import meta

from corral.chat.limits import RenderLimits, one_line
from corral.chat.sandbox import BoundedEnvironment, render_bounded
from corral.errors import CorralError, TemplateError

# Prompts carry whole documents (a chunk to summarize), far more than a chat turn, but a
# render that runs longer than this is a runaway loop, not a prompt.
PROMPT_LIMITS = RenderLimits(time_limit_s=5.0)


@functools.lru_cache(maxsize=4)
def _environment(limits: RenderLimits) -> BoundedEnvironment:
    # StrictUndefined: a variable missing at render time (one named only inside a macro or
    # reached through an attribute) raises instead of printing "".
    return BoundedEnvironment(
        limits, undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )


class PromptTemplate:
    """A reusable prompt text with named variables; see the module docstring.

    Args:
        template: Jinja2 source, e.g. ``"Summarize:\\n{{ text }}"``.
        partial: values fixed now for some variables (the rest are given to `render`).
        limits: bounds on one render (defaults: `PROMPT_LIMITS`).

    Raises:
        TemplateError: the source does not parse.
    """

    def __init__(
        self,
        template: str,
        *,
        partial: Mapping[str, Any] | None = None,
        limits: RenderLimits = PROMPT_LIMITS,
    ) -> None:
        if not isinstance(template, str):
            raise TemplateError(f"a prompt template is a string, not {type(template).__name__}")
        if len(template) > limits.max_source_chars:
            raise TemplateError(f"prompt template is over {limits.max_source_chars} characters")
        env = _environment(limits)
        try:
            ast = env.parse(template)
            self._compiled = env.from_string(ast)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"prompt template line {e.lineno}: {one_line(e.message)}") from e
        self.template = template
        self.limits = limits
        self._named = frozenset(meta.find_undeclared_variables(ast))
        self._partial = dict(partial or {})

    @property
    def variables(self) -> frozenset[str]:
        """The names `render` still needs (those named by the template, less the partial)."""
        return self._named - self._partial.keys()

    def partial(self, **values: Any) -> PromptTemplate:
        """A copy with some variables fixed, e.g. a language for a translation prompt."""
        return PromptTemplate(self.template, partial=self._partial | values, limits=self.limits)

    def render(self, values: Mapping[str, Any] | None = None, /, **kw: Any) -> str:
        """The prompt text with the variables filled in (from `values` and keywords).

        Raises:
            TemplateError: a named variable was not given (all missing ones are listed), or
                the render broke a limit or raised.
        """
        given = self._partial | dict(values or {}) | kw
        missing = sorted(self._named - given.keys())
        if missing:
            names = ", ".join(missing)
            raise TemplateError(f"prompt template variable(s) not given: {names}")
        try:
            return render_bounded(self._compiled, given, self.limits)
        except CorralError:
            raise
        except jinja2.TemplateError as e:  # e.g. an attribute of a value that lacks it
            raise TemplateError(f"prompt template: {one_line(e)}") from e

    def format(self, **kw: Any) -> str:
        """Alias of `render` for LangChain-style callers."""
        return self.render(**kw)

    def __repr__(self) -> str:
        return f"PromptTemplate(variables={sorted(self.variables)})"


def as_template(t: PromptTemplate | str) -> PromptTemplate:
    """`t` as a PromptTemplate (strings are compiled)."""
    return t if isinstance(t, PromptTemplate) else PromptTemplate(t)
