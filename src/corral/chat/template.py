"""Render Hugging Face style chat templates (the GGUF key `tokenizer.chat_template`) safely.

A chat template is Jinja2 code shipped inside a downloaded model, so it is untrusted. It
is compiled in `BoundedEnvironment` (an immutable sandbox with limits on time, steps and
sizes) with the same options and helpers `transformers` gives templates, so real-world
templates render exactly as they do there:

* `trim_blocks=True`, `lstrip_blocks=True` and the `loopcontrols` extension
  (`{% break %}` / `{% continue %}`), plus `{% generation %}` blocks, rendered as is;
* `raise_exception(msg)`, `strftime_now(fmt)` and a `tojson` filter that keeps non-ASCII
  text as is (`ensure_ascii=False`) and accepts `indent`, `separators`, `sort_keys`;
* variables `messages`, `tools`, `add_generation_prompt`, `bos_token`, `eos_token`.

Every failure (syntax, `raise_exception`, escape attempts, limits) surfaces as a one-line
`corral.errors.TemplateError`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser

from corral.chat.limits import RenderLimits, check_value, one_line
from corral.chat.sandbox import BoundedEnvironment, render_bounded
from corral.errors import CorralError, TemplateError

if TYPE_CHECKING:
    from corral.chat.builtin import BuiltinTemplate

# json.dumps with a big indent repeats it on every line; real templates use 2 or 4.
_MAX_JSON_INDENT = 64
# strftime expands each directive a little; a date format is never this long.
_MAX_DATE_FORMAT = 1000


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}`: transformers uses it to mark assistant
    text for training masks; for inference the body simply renders in place."""

    tags = {"generation"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _raise_exception(message: object) -> None:
    """Template helper: stop rendering with the template's own message."""
    raise TemplateError(f"chat template error: {one_line(message)}")


def _strftime_now(date_format: str) -> str:
    """Template helper: the current local time, formatted (Llama 3 puts dates in prompts)."""
    if not isinstance(date_format, str) or len(date_format) > _MAX_DATE_FORMAT:
        raise TemplateError("chat template passes strftime_now() a bad or overlong format")
    return datetime.now().strftime(date_format)


@functools.lru_cache(maxsize=8)
def _environment(limits: RenderLimits) -> BoundedEnvironment:
    """One environment per set of limits: compiling is per template, rendering is
    thread-safe, so templates can share it."""

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | str | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        """JSON as transformers' templates expect: plain text, not HTML-escaped."""
        check_value(value, limits)
        width = indent if isinstance(indent, int) else len(indent or "")
        if width > _MAX_JSON_INDENT:
            raise TemplateError(f"chat template asks tojson for an indent of {width}")
        return json.dumps(
            value,
            ensure_ascii=ensure_ascii,
            indent=indent,
            separators=separators,
            sort_keys=sort_keys,
        )

    return BoundedEnvironment(
        limits,
        extra_globals={"raise_exception": _raise_exception, "strftime_now": _strftime_now},
        extra_filters={"tojson": tojson},
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols", _GenerationBlock],
    )


class ChatTemplate:
    """A compiled chat template that turns a conversation into a prompt string.

    `source` is Jinja2 text, usually the GGUF key `tokenizer.chat_template`;
    `bos_token` / `eos_token` are the model's special tokens as text, given to the
    template as variables. The template is compiled here, so a broken one fails early.
    """

    def __init__(
        self,
        source: str,
        bos_token: str = "",
        eos_token: str = "",
        *,
        limits: RenderLimits | None = None,
        name: str | None = None,
    ) -> None:
        self.limits = limits or RenderLimits()
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.name = name
        if not isinstance(source, str):
            raise TemplateError(f"chat template is a {type(source).__name__}, not text")
        if len(source) > self.limits.max_source_chars:
            raise TemplateError(
                f"chat template is {len(source)} characters long;"
                f" the limit is {self.limits.max_source_chars}"
            )
        self.source = source
        try:
            self._template = _environment(self.limits).from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(
                f"chat template does not compile: line {e.lineno}: {one_line(e.message)}"
            ) from e
        except CorralError:
            raise
        except Exception as e:  # noqa: BLE001 - RecursionError, SyntaxError, MemoryError...
            raise TemplateError(
                f"chat template does not compile: {type(e).__name__}: {one_line(e)}"
            ) from e

    @classmethod
    def named(
        cls,
        name: str | BuiltinTemplate,
        bos_token: str | None = None,
        eos_token: str | None = None,
        *,
        limits: RenderLimits | None = None,
    ) -> ChatTemplate:
        """A built-in template by name ("chatml", "llama-2", "gemma", ...).

        Tokens left as None take the format's usual ones (`<s>` / `</s>` for llama-2).
        """
        # Imported here: builtin.py builds ChatTemplates, so a top-level import would cycle.
        from corral.chat.builtin import builtin_source, builtin_tokens, parse_builtin

        which = parse_builtin(name)
        default_bos, default_eos = builtin_tokens(which)
        return cls(
            builtin_source(which),
            default_bos if bos_token is None else bos_token,
            default_eos if eos_token is None else eos_token,
            limits=limits,
            name=which.value,
        )

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """The prompt for `messages` (dicts with "role" and "content").

        `add_generation_prompt` appends the opening of the assistant's turn; `tools`
        is given to templates that describe tools; `extra` adds variables (for example
        `enable_thinking=False`) and may override `bos_token` / `eos_token`.
        """
        if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
            raise TypeError(f"messages must be a list of dicts, not {type(messages).__name__}")
        variables: dict[str, Any] = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            **extra,
            "messages": list(messages),
            "add_generation_prompt": bool(add_generation_prompt),
            "tools": tools,
        }
        try:
            return render_bounded(self._template, variables, self.limits)
        except CorralError:
            raise
        except jinja2.exceptions.SecurityError as e:
            raise TemplateError(f"chat template blocked: {one_line(e)}") from e
        except RecursionError as e:
            raise TemplateError("chat template recursed too deeply") from e
        except MemoryError as e:
            raise TemplateError("chat template ran out of memory") from e
        except jinja2.TemplateError as e:
            raise TemplateError(f"chat template failed: {one_line(e)}") from e
        except Exception as e:  # noqa: BLE001 - any template bug becomes one clear error
            raise TemplateError(f"chat template failed: {type(e).__name__}: {one_line(e)}") from e

    def __repr__(self) -> str:
        if self.name is not None:
            return f"ChatTemplate.named({self.name!r})"
        return f"ChatTemplate(<{len(self.source)} characters>)"
