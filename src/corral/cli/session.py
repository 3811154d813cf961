"""A chat session with one loaded model: the conversation, its settings, streaming answers.

Used by both `corral run` modes: one-shot asks once, the REPL asks many times and changes
settings in between. The model is duck-typed (`chat_prompt_ids`, `generate`, `info`,
`load_seconds`) so the session can be tested with a stand-in.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from corral.cli.output import WordWrapper, isatty, timing_report
from corral.cli.params import generate_kwargs, max_tokens, show_value

# Tokens kept free for the answer when old turns must go to make the conversation fit:
# at most this share of the context, less when num_predict asks for fewer.
ANSWER_SHARE = 4


@dataclass(frozen=True)
class Answer:
    """What one `Session.ask` produced."""

    text: str
    interrupted: bool  # Ctrl-C stopped it; `text` is what came before
    finish_reason: str | None


class Session:
    """One conversation with a model.

    `loader(n_ctx)` loads the model again with another context size (for num_ctx);
    `params` are generation parameters by their ollama names (see params.PARAMS).
    """

    def __init__(
        self,
        model: Any,
        params: dict[str, Any] | None = None,
        *,
        system: str | None = None,
        verbose: bool = False,
        wordwrap: bool = True,
        loader: Callable[[int], Any] | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.model = model
        self.params: dict[str, Any] = dict(params or {})
        self.system = system
        self.verbose = verbose
        self.wordwrap = wordwrap
        self.messages: list[dict[str, str]] = []
        self.loader = loader
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._unreported_load = True  # the next --verbose report includes the load time

    # -- settings ------------------------------------------------------------------------

    def set_param(self, name: str, value: Any) -> None:
        """Set a generation parameter; num_ctx reloads the model with the new context."""
        if name == "num_ctx" and value != self.model.info.n_ctx:
            if self.loader is None:
                from corral.errors import CorralError

                raise CorralError("this session cannot change the context size")
            self.model = self.loader(value)
            self._unreported_load = True
        self.params[name] = value

    def set_option(self, name: str) -> str:
        """/set verbose|quiet|wordwrap|nowordwrap; returns the confirmation to print."""
        if name in ("verbose", "quiet"):
            self.verbose = name == "verbose"
            return "Set 'verbose' mode." if self.verbose else "Set 'quiet' mode."
        self.wordwrap = name == "wordwrap"
        return "Set 'wordwrap' mode." if self.wordwrap else "Set 'nowordwrap' mode."

    def clear(self) -> None:
        """Forget the conversation (the system message and parameters stay)."""
        self.messages.clear()

    def show(self, topic: str) -> str:
        """Text for `/show TOPIC`."""
        if topic == "system":
            return self.system or "No system message was specified for this session."
        if topic == "parameters":
            return self._show_parameters()
        from corral.cli.show import info_report, read_facts

        facts = read_facts(self.model.info.path)
        if topic == "template":
            return facts.template
        if topic == "license":
            return facts.license or "No license was specified for this model."
        n_ctx = self.model.info.n_ctx
        return info_report(facts) + f"\n  Session\n    context size        {n_ctx}\n"

    def _show_parameters(self) -> str:
        lines = ["User defined parameters:"] if self.params else ["No parameters set."]
        for name, value in self.params.items():
            lines.append(f"  {name:<18} {show_value(value)}")
        lines.append(f"Context size in use: {self.model.info.n_ctx}")
        return "\n".join(lines)

    # -- answering -----------------------------------------------------------------------

    def conversation(self, messages: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
        """The messages sent to the model: the system message, then the turns (by default
        the session's)."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + (self.messages if messages is None else messages)

    def ask(self, text: str) -> Answer:
        """Add a user message, stream the answer to `out`, and keep it in the history.

        Ctrl-C stops the answer; what was written so far stays in the history. A failure
        before the answer starts (a CorralError) leaves the history as it was. Old turns
        are forgotten when the conversation outgrows the context.
        """
        t0 = time.perf_counter()
        # History changes only once the answer is under way: a failure keeps it as it was.
        ids, kept = self._fit(self.messages + [{"role": "user", "content": text}])
        n_ctx = self.model.info.n_ctx
        events = self.model.generate(
            ids, max_tokens(self.params, n_ctx), stream=True, **generate_kwargs(self.params)
        )
        if dropped := len(self.messages) + 1 - len(kept):
            self.err.write(f"(forgot the {dropped} oldest message(s) to fit the context)\n")
        self.messages[:] = kept
        answer, timings = self._stream(events)
        if answer.text or not answer.interrupted:
            self.messages.append({"role": "assistant", "content": answer.text})
        else:  # stopped before a word came out: forget the question too
            self.messages.pop()
        if self.verbose and timings is not None:
            load = self.model.load_seconds if self._unreported_load else 0.0
            self._unreported_load = False
            report = timing_report(
                time.perf_counter() - t0 + load, load, timings.prompt_tokens, timings.prompt_s,
                timings.decode_tokens, timings.decode_s, getattr(timings, "cached_tokens", 0),
            )  # fmt: skip
            self.err.write(report + "\n")
            self.err.flush()
        return answer

    def _fit(self, messages: list[dict[str, str]]) -> tuple[list[int], list[dict[str, str]]]:
        """Token ids of the conversation and the messages kept in it: the oldest turns go
        while too little room is left for an answer (as ollama does); the last one stays."""
        n_ctx = self.model.info.n_ctx
        room = min(max_tokens(self.params, n_ctx), n_ctx // ANSWER_SHARE)
        while True:
            ids = self.model.chat_prompt_ids(self.conversation(messages))
            if len(ids) + room <= n_ctx or len(messages) <= 1:
                return ids, messages
            messages = messages[1:]  # a user message; its answer goes with it
            while len(messages) > 1 and messages[0]["role"] != "user":
                messages = messages[1:]

    def _wrap_width(self) -> int | None:
        if not self.wordwrap or not isatty(self.out):
            return None
        return shutil.get_terminal_size().columns - 1

    def _stream(self, events: Iterator[Any]) -> tuple[Answer, Any]:
        width = self._wrap_width()
        wrap = WordWrapper(width) if width else None
        parts: list[str] = []
        last = None
        interrupted = False
        try:
            for ev in events:
                parts.append(ev.text)
                last = ev
                self._write(wrap.feed(ev.text) if wrap else ev.text)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # a generator stopped early still updates the model's cache record
        text = "".join(parts)
        self._write(wrap.flush() if wrap else "")
        if text and not text.endswith("\n"):
            self._write("\n")
        reason = getattr(getattr(last, "finish_reason", None), "value", None)
        timings = None if interrupted else getattr(last, "timings", None)
        return Answer(text, interrupted, reason), timings

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
