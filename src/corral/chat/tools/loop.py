"""`Model.chat(..., tools=[...])`: tool calls parsed from the answer, and with
run_tools=True the whole loop: the model calls, corral runs the functions and feeds their
results back as `tool` messages, until the model answers in text or `max_steps` rounds of
calls have run (then it must answer without tools).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.chat.tools.decorator import ToolFunction
from corral.chat.tools.plan import ToolPlan
from corral.chat.tools.types import (
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    parse_tool_choice,
    parse_tools,
)
from corral.engine.generate import FinishReason
from corral.engine.sampling import SamplingParams
from corral.errors import InvalidRequestError
from corral.generation import GenerationEvent, GenerationResult

if TYPE_CHECKING:
    from corral.model import Model

DEFAULT_MAX_STEPS = 5
_SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingParams)}


@dataclass
class ToolChatResult(GenerationResult):
    """A chat answer with tools: `text` is the content, `tool_calls` the complete calls of
    the last answer (none once run_tools got a text answer), `messages` the conversation
    with every call and result, `steps` the rounds of calls run."""

    tool_calls: list[ToolCall] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0

    @property
    def finish(self) -> str:
        """OpenAI's finish_reason: "tool_calls", "stop" or "length"."""
        if self.finish_reason is FinishReason.LENGTH:
            return "length"  # calls cut off after the complete ones: the answer is truncated
        return "tool_calls" if self.tool_calls else "stop"


def as_tools(tools: list[Any]) -> tuple[list[Tool], dict[str, Callable[..., Any]]]:
    """Tools from @tool functions, plain functions or OpenAI dicts; and the runnable ones."""
    out: list[Tool] = []
    funcs: dict[str, Callable[..., Any]] = {}
    for t in tools:
        if isinstance(t, dict):
            out.extend(parse_tools([t]))
            continue
        if isinstance(t, Tool):
            out.append(t)
            continue
        if not isinstance(t, ToolFunction):
            if not callable(t):
                raise InvalidRequestError(f"{t!r} is not a tool: pass functions or schemas")
            t = ToolFunction(t, None, None)
        out.append(t.tool)
        funcs[t.name] = t
    return out, funcs


def run_call(fn: Callable[..., Any] | None, call: ToolCall) -> str:
    """A call's result as the text of a `tool` message (errors too: the model sees them)."""
    if fn is None:
        return json.dumps({"error": f"no function named {call.name!r} can be run"})
    try:
        result = fn(**call.arguments)
    except Exception as e:  # noqa: BLE001 - reported to the model, which may retry
        return json.dumps({"error": f"{type(e).__name__}: {e}"})
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)


def _template_source(model: Model) -> str:
    from corral.chat import template_for

    return template_for(model.info.metadata).source


def chat_with_tools(
    model: Model,
    messages: list[dict[str, Any]],
    tools: list[Any],
    max_tokens: int = 512,
    *,
    stream: bool = False,
    tool_choice: Any = None,
    parallel_tool_calls: bool = True,
    run_tools: bool = False,
    max_steps: int = DEFAULT_MAX_STEPS,
    **kwargs: Any,
) -> ToolChatResult | Iterator[GenerationEvent]:
    """See the module docstring; `kwargs` are `Model.generate`'s sampling keywords."""
    specs, funcs = as_tools(tools)
    choice = parse_tool_choice(tool_choice, specs)
    plan = ToolPlan.create(_template_source(model), specs, choice, parallel_tool_calls)
    params = SamplingParams(**{k: v for k, v in kwargs.items() if k in _SAMPLING_FIELDS})
    extra = {k: v for k, v in kwargs.items() if k in ("stop", "ignore_eos", "truncate")}
    unknown = set(kwargs) - _SAMPLING_FIELDS - set(extra)
    if unknown:
        raise TypeError(f"chat() got unexpected keyword arguments: {sorted(unknown)}")
    history = [dict(m) for m in messages]

    def generate(p: ToolPlan, stream_now: bool) -> Any:
        msgs, template_tools = p.prepare(history)
        ids = model.chat_prompt_ids(msgs, template_tools)
        c = p.constraint(model.tokenizer)
        return model.generate_with(
            ids, max_tokens, params, stream=stream_now, constraint=c, **extra
        )

    if stream:
        if run_tools:
            raise InvalidRequestError("run_tools=True cannot stream; call chat() without it")
        return generate(plan, True)  # type: ignore[no-any-return]
    steps = 0
    while True:
        result: GenerationResult = generate(plan, False)
        parsed = plan.parse(result.text)
        calls = parsed.calls
        content = parsed.content if calls else result.text
        out = ToolChatResult(**vars(result), tool_calls=calls, steps=steps)
        out.text = content
        if not calls or not run_tools:
            out.messages = history + [_assistant(content, calls)]
            return out
        history.append(_assistant(content, calls))
        for call in calls:
            history.append(
                {"role": "tool", "tool_call_id": call.id, "name": call.name,
                 "content": run_call(funcs.get(call.name), call)}
            )  # fmt: skip
        steps += 1
        # a required call is made; after that the model chooses, and past the limit it answers
        mode = ToolChoiceMode.NONE if steps >= max_steps else ToolChoiceMode.AUTO
        plan = dataclasses.replace(plan, choice=ToolChoice(mode))


def _assistant(content: str, calls: list[ToolCall]) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = [c.openai() for c in calls]
    return msg
