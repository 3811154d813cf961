"""`corral run --format json|SCHEMA_FILE` and `--tool module:function`.

Both wrap the loaded model in `StructuredModel`, which the chat session uses like a model:
with --format every answer is held to the JSON schema (or to any JSON object); with --tool
each answer runs the tool loop (the model calls, corral runs the function, the model
answers), printing each call and its result to stderr.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from corral.errors import CorralError

_SAMPLING = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty",
             "repeat_last_n", "presence_penalty", "frequency_penalty", "seed")  # fmt: skip


def load_tool(ref: str) -> Callable[..., Any]:
    """`module:function` or `path/file.py:function` -> the function (from the current
    directory too, as `python -m` finds modules)."""
    target, sep, name = ref.rpartition(":")
    if not sep or not target or not name:
        raise CorralError(f"--tool {ref!r}: give it as module:function or file.py:function")
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(target).stem, target)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {target}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")
            module = importlib.import_module(target)
    except (ImportError, OSError, SyntaxError) as e:
        raise CorralError(f"--tool {ref!r}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise CorralError(f"--tool {ref!r}: {target} has no function {name!r}")
    return fn


def format_spec(value: str) -> Any:
    """--format: "json" for any JSON object, else a file holding a JSON schema."""
    from corral.grammar import GrammarError, GrammarSpec, to_llguidance

    if value == "json":
        return GrammarSpec.json_object()
    try:
        text = Path(value).read_text()
    except OSError as e:
        raise CorralError(f"--format {value!r}: not 'json' and not a readable file ({e})") from None
    try:
        spec = GrammarSpec.json_schema(text)
        to_llguidance(spec)
    except GrammarError as e:
        raise CorralError(f"--format {value}: {e}") from None
    return spec


class StructuredModel:
    """A model whose answers follow a JSON schema, or run tools; otherwise the model."""

    def __init__(
        self, model: Any, fmt: Any = None, tools: list[Callable[..., Any]] | None = None,
        err: Any = None,
    ) -> None:  # fmt: skip
        self._model = model
        self._fmt = fmt
        self._tools = list(tools or [])
        self._err = err or sys.stderr
        self._messages: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def chat_prompt_ids(self, messages: list[dict[str, Any]], tools: Any = None) -> list[int]:
        self._messages = list(messages)
        if not self._tools:
            return self._model.chat_prompt_ids(messages)  # type: ignore[no-any-return]
        from corral.chat.tools import ToolPlan
        from corral.chat.tools.loop import _template_source, as_tools

        plan = ToolPlan.create(_template_source(self._model), as_tools(self._tools)[0])
        msgs, template_tools = plan.prepare(messages)
        return self._model.chat_prompt_ids(msgs, template_tools)  # type: ignore[no-any-return]

    def generate(
        self, ids: list[int], max_tokens: int = 256, *, stream: bool = False, **kw: Any
    ) -> Any:
        if self._tools:
            return self._tool_answer(max_tokens, kw)
        if self._fmt is None:
            return self._model.generate(ids, max_tokens, stream=stream, **kw)
        from corral.engine.sampling import SamplingParams
        from corral.grammar import make_constraint

        params = SamplingParams(**{k: v for k, v in kw.items() if k in _SAMPLING})
        constraint = make_constraint(self._model.tokenizer, self._fmt)
        return self._model.generate_with(
            ids, max_tokens, params, kw.get("stop"), stream=stream, constraint=constraint
        )

    def _tool_answer(self, max_tokens: int, kw: dict[str, Any]) -> Iterator[Any]:
        from corral.generation import GenerationEvent

        result = self._model.chat(
            self._messages, max_tokens, tools=self._tools, run_tools=True, **kw
        )
        for m in result.messages[len(self._messages) :]:
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                self._err.write(f"-> {fn['name']}({fn['arguments']})\n")
            if m["role"] == "tool":
                self._err.write(f"<- {m['content']}\n")
        self._err.flush()
        yield GenerationEvent(
            result.text, None, None, result.finish_reason, dataclasses.replace(result.timings)
        )


def wrap(model: Any, fmt: str | None, tools: list[str] | None) -> Any:
    """The model as `corral run` uses it with --format/--tool (unchanged without them)."""
    if not fmt and not tools:
        return model
    if fmt and tools:
        raise CorralError("--format and --tool cannot be combined")
    loaded = [load_tool(t) for t in tools or []]
    return StructuredModel(model, format_spec(fmt) if fmt else None, loaded)
