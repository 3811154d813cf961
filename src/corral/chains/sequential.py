"""Sequential chains: each step fills a prompt from the variables so far and adds one more.

    outline = LLMStep("Write an outline for a talk on {{ topic }}.", output="outline")
    talk = LLMStep("Write the talk from this outline:\\n{{ outline }}", output="talk")
    chain = SequentialChain([outline, talk])
    chain.input_variables            # frozenset({'topic'})
    result = chain.run(corral.load("smollm2"), topic="tide pools")
    result["talk"]

The chain checks when it is built that every variable a step names is either an input or
the output of an earlier step, so a typo fails before any model time is spent. Steps run on
anything with corral.Model's `chat` / `generate` (`ChainModel`); `FunctionStep` runs plain
Python between model calls (parsing, trimming, lookups).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from corral.chains.prompt import PromptTemplate, as_template
from corral.errors import InvalidRequestError

Message = dict[str, Any]
TextSink = Callable[[str], None]


class ChainModel(Protocol):
    """What chains need of a model (`corral.Model` is one)."""

    def chat(self, messages: list[Message], max_tokens: int = 512, **kw: Any) -> Any: ...
    def generate(self, prompt: str, max_tokens: int = 256, **kw: Any) -> Any: ...


def complete(
    model: ChainModel,
    prompt: str,
    *,
    system: str | None = None,
    use_chat: bool = True,
    max_tokens: int = 256,
    on_text: TextSink | None = None,
    **sampling: Any,
) -> str:
    """One model call: `prompt` as a user turn (or raw text with use_chat=False); the
    answer's text, streamed piece by piece to `on_text` when given."""
    if use_chat:
        messages: list[Message] = [{"role": "user", "content": prompt}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        events = model.chat(messages, max_tokens, stream=True, **sampling)
    else:
        events = model.generate(prompt, max_tokens, stream=True, **sampling)
    return "".join(_pieces(events, on_text)).strip()


def _pieces(events: Iterator[Any], on_text: TextSink | None) -> Iterator[str]:
    for e in events:
        # an end-of-generation token's text (e.g. "<|im_end|>") is markup, not answer
        if e.text and not getattr(e, "eog", False):
            if on_text:
                on_text(e.text)
            yield e.text


class Step(Protocol):
    """One link of a chain: reads `variables`, writes `output`."""

    @property
    def output(self) -> str: ...
    @property
    def variables(self) -> frozenset[str]: ...
    def run(
        self, model: ChainModel, values: Mapping[str, Any], on_text: TextSink | None = None
    ) -> Any: ...


@dataclass
class LLMStep:
    """Render `prompt` with the chain's variables, ask the model, store the answer as
    `output`.

    Args:
        prompt: a PromptTemplate or Jinja2 source.
        output: the variable name later steps (and the result) see the answer under.
        system: an optional system message (chat only).
        use_chat: wrap the prompt in the model's chat template (True) or continue it as
            raw text (False, for base models).
        max_tokens: answer length limit.
        sampling: keywords for `Model.generate` (temperature, seed, stop...).
    """

    prompt: PromptTemplate | str
    output: str
    system: str | None = None
    use_chat: bool = True
    max_tokens: int = 256
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prompt = as_template(self.prompt)

    @property
    def template(self) -> PromptTemplate:
        assert isinstance(self.prompt, PromptTemplate)  # made so by __post_init__
        return self.prompt

    @property
    def variables(self) -> frozenset[str]:
        return self.template.variables

    def run(
        self, model: ChainModel, values: Mapping[str, Any], on_text: TextSink | None = None
    ) -> str:
        text = self.template.render({k: values[k] for k in self.variables})
        return complete(model, text, system=self.system, use_chat=self.use_chat,
                        max_tokens=self.max_tokens, on_text=on_text, **self.sampling)  # fmt: skip


@dataclass
class FunctionStep:
    """Plain Python between model calls: `fn(**{name: value for name in inputs})` is
    stored as `output` (e.g. split a list the model wrote, or look something up)."""

    fn: Callable[..., Any]
    inputs: Sequence[str]
    output: str

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(self.inputs)

    def run(
        self, model: ChainModel, values: Mapping[str, Any], on_text: TextSink | None = None
    ) -> Any:
        return self.fn(**{k: values[k] for k in self.inputs})


class SequentialChain:
    """Steps run in order; each one's output becomes a variable of the steps after it.

    Raises:
        InvalidRequestError: at construction, when two steps write the same output, or a
            step overwrites an input (`inputs` given); at `run`, when an input is missing.
    """

    def __init__(self, steps: Sequence[Step], inputs: Sequence[str] | None = None) -> None:
        if not steps:
            raise InvalidRequestError("a chain needs at least one step")
        produced: list[str] = []
        needed: set[str] = set()
        for step in steps:
            needed |= step.variables - set(produced)
            if step.output in produced:
                raise InvalidRequestError(f"two steps write the variable {step.output!r}")
            produced.append(step.output)
        if inputs is not None:
            unknown = sorted(needed - set(inputs))
            if unknown:
                # with declared inputs, a name no step writes is a typo: say so now
                raise InvalidRequestError(f"chain variables with no source: {', '.join(unknown)}")
            clash = sorted(set(inputs) & set(produced))
            if clash:
                raise InvalidRequestError(f"steps overwrite chain inputs: {', '.join(clash)}")
            needed = set(inputs)
        self.steps = list(steps)
        self.input_variables = frozenset(needed)
        self.output_variables = tuple(produced)

    def run(
        self, model: ChainModel, inputs: Mapping[str, Any] | None = None, /,
        on_text: TextSink | None = None, **kw: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """All variables after the last step: the inputs plus every step's output.

        `on_text` receives the last step's answer as it streams (earlier steps are
        intermediate work and stay quiet)."""
        values: dict[str, Any] = dict(inputs or {}) | kw
        missing = sorted(self.input_variables - values.keys())
        if missing:
            raise InvalidRequestError(f"chain inputs not given: {', '.join(missing)}")
        last = len(self.steps) - 1
        for i, step in enumerate(self.steps):
            values[step.output] = step.run(model, values, on_text if i == last else None)
        return values

    def __call__(self, model: ChainModel, /, **inputs: Any) -> Any:
        """The last step's output."""
        return self.run(model, inputs)[self.output_variables[-1]]
