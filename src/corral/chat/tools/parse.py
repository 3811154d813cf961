"""Tool calls out of generated text, incrementally (for streaming) or all at once.

`ToolCallParser.push(text)` returns events: `ContentDelta` for ordinary text (text that may
be the start of the trigger is held back), then for each call a `CallStart` (index, id,
name) as soon as the name is known, `ArgsDelta` fragments of the arguments JSON as they
arrive, and a `CallEnd`. A call counts only when its arguments are a complete JSON object
and its name is one of the tools: the parser never reports broken JSON as a call
(`broken` is set instead, and the call is left out).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from corral.chat.tools.formats import ARGS_MARKER, CALL_ID_MARKER, FormatSpec
from corral.chat.tools.types import ToolCall


@dataclass
class ContentDelta:
    text: str


@dataclass
class CallStart:
    index: int
    id: str
    name: str


@dataclass
class ArgsDelta:
    index: int
    text: str


@dataclass
class CallEnd:
    index: int
    call: ToolCall


Event = ContentDelta | CallStart | ArgsDelta | CallEnd
_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"  # a tool name in the named formats


@dataclass
class _Args:
    """Scanning one arguments value: JSON nesting outside strings."""

    index: int
    call_id: str
    name: str
    text: str = ""
    depth: int = 0
    in_string: bool = False
    escape: bool = False
    started: bool = False

    def feed(self, s: str) -> int:
        """Consume from `s` up to the value's end; returns chars used (len(s) if unfinished,
        -1 if the value is not an object)."""
        for i, ch in enumerate(s):
            if not self.started:
                if ch.isspace():
                    continue
                if ch != "{":
                    return -1
                self.started = True
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.text += s[: i + 1]
                    return i + 1
        self.text += s
        return len(s)


def _unescape(name: str) -> str:
    """A JSON string's body as text (as written, if it is no valid JSON string)."""
    try:
        return str(json.loads('"' + name + '"'))
    except json.JSONDecodeError:
        return name


@dataclass
class ToolCallParser:
    """Splits a format's output into content and tool calls; see the module docstring."""

    spec: FormatSpec
    names: frozenset[str] | None = None  # allowed tool names (None: any)
    calls: list[ToolCall] = field(default_factory=list)
    content: str = ""
    raw: str = ""
    broken: bool = False
    repeats: int = 0  # calls dropped as repeats of earlier ones
    _pending: str = ""
    _in_calls: bool = False
    _args: _Args | None = None
    _decided_start: bool = False
    _held: list[Event] | None = None
    _bare: bool = False  # the calls opened without their trigger's text

    def __post_init__(self) -> None:
        if self.spec.named:
            # the markers are control tokens the answer's text usually leaves out, so each
            # is optional: `[TOOL_CALLS]name[ARGS]{` and `name{` both open a call
            self._header = re.compile(
                r"\s*(?:" + re.escape(self.spec.trigger) + r"\s*)?(" + _NAME + r")\s*"
                r"(?:" + re.escape(CALL_ID_MARKER) + r"\s*([A-Za-z0-9_-]+)\s*)?"
                r"(?:" + re.escape(ARGS_MARKER) + r"\s*)?(?=\{)"
            )
            return
        key = re.escape(self.spec.args_key)
        # Llama 3.x models sometimes open with "type": "function" (llama.cpp takes it too)
        self._header = re.compile(
            r'\{\s*(?:"type"\s*:\s*"function"\s*,\s*)?"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"'
            + key
            + r'"\s*:\s*'
        )

    def push(self, text: str) -> list[Event]:
        """Events for the next piece of generated text."""
        self.raw += text
        self._pending += text
        out: list[Event] = []
        if not self._in_calls:
            self._content_step(out)
        if self._in_calls:
            self._calls_step(out)
        return out

    def _emit_content(self, text: str, out: list[Event]) -> None:
        if text:
            self.content += text
            out.append(ContentDelta(text))

    def _named_start(self, head: str) -> bool | None:
        """Whether an output opening with `head` holds named calls (None: too soon to
        tell). Known tool names decide early; without them, any identifier followed by
        `{` or a marker does."""
        trig = self.spec.trigger
        if head.startswith(trig):
            return True
        if trig.startswith(head):
            return None
        openers = ("{", ARGS_MARKER, CALL_ID_MARKER)
        if self.names is not None:
            heads = [n + o for n in self.names for o in openers]
            if any(head.startswith(h) for h in heads):
                return True
            return None if any(h.startswith(head) for h in heads) else False
        m = re.match(_NAME, head)
        if m is None:
            return False
        rest = head[m.end() :]
        if any(rest.startswith(o) for o in openers):
            return True
        return None if any(o.startswith(rest) for o in openers) else False

    def _content_step(self, out: list[Event]) -> None:
        trig = self.spec.trigger
        bare = self.spec.bare_start
        if self.spec.named and not self._decided_start:
            head = self._pending.lstrip()
            verdict = self._named_start(head)
            if verdict is None:
                return
            self._decided_start = True
            if verdict:
                self._in_calls = self._bare = True
                self._pending = head
                return
        if bare and not self._decided_start:
            head = self._pending.lstrip()
            if bare.startswith(head):
                return  # too little text yet to tell
            self._decided_start = True
            if head.startswith(bare):
                self._in_calls = self._bare = True
                self._pending = head
                return
        if self.spec.at_start:
            if not self._decided_start:
                stripped = self._pending.lstrip()
                if not stripped:
                    return
                self._decided_start = True
                if stripped.startswith(trig):
                    self._in_calls = True
                    self._pending = stripped
                    return
            text, self._pending = self._pending, ""
            self._emit_content(text, out)
            return
        at = self._pending.find(trig)
        if at >= 0:
            self._emit_content(self._pending[:at], out)
            self._pending = self._pending[at + len(trig) :]
            self._in_calls = True
            return
        hold = 0
        for n in range(min(len(trig) - 1, len(self._pending)), 0, -1):
            if self._pending.endswith(trig[:n]):
                hold = n
                break
        cut = len(self._pending) - hold
        self._emit_content(self._pending[:cut], out)
        self._pending = self._pending[cut:]

    def _calls_step(self, out: list[Event]) -> None:
        while True:
            if self._args is None:
                # named calls follow one another: each header opens the remaining text
                find = self._header.match if self.spec.named else self._header.search
                m = find(self._pending)
                if m is None:
                    return
                name, given_id = m.group(1), m.group(2) if self.spec.named else None
                if not self.spec.named:
                    name = _unescape(name)
                index = len(self.calls)
                self._args = _Args(index, given_id or ToolCall(name, {}).id, name)
                # a second call of a tool may repeat the first: held back until it is known
                self._held = [] if any(c.name == name for c in self.calls) else None
                self._put(CallStart(index, self._args.call_id, name), out)
                self._pending = self._pending[m.end() :]
            a = self._args
            before = len(a.text)
            used = a.feed(self._pending)
            if used < 0:
                self.broken = True
                self._args = None
                self._pending = ""
                return
            if len(a.text) > before:
                self._put(ArgsDelta(a.index, a.text[before:]), out)
            self._pending = self._pending[used:]
            if a.depth > 0 or not a.started:
                return
            self._args = None
            held, self._held = self._held, None
            call = self._finish_call(a)
            if call is None:
                self.broken = True
            elif self._repeats(call):  # the same call again is dropped: one result
                self.repeats += 1  # would answer both
            else:
                out.extend(held or [])
                self.calls.append(call)
                out.append(CallEnd(a.index, call))

    def _put(self, event: Event, out: list[Event]) -> None:
        (self._held if self._held is not None else out).append(event)

    def _repeats(self, call: ToolCall) -> bool:
        return any(c.name == call.name and c.arguments == call.arguments for c in self.calls)

    def _finish_call(self, a: _Args) -> ToolCall | None:
        try:
            args = json.loads(a.text)
        except json.JSONDecodeError:
            return None
        if not isinstance(args, dict) or (self.names is not None and a.name not in self.names):
            return None
        return ToolCall(a.name, args, a.call_id)

    def finish(self) -> list[Event]:
        """Events once the text is complete: held-back content, or the verdict on calls."""
        out: list[Event] = []
        if self._args is not None:  # cut inside the arguments (max_tokens)
            self.broken = True
            self._args = None
        elif self._in_calls and not self.calls and not self.broken:
            # the trigger came but no call followed: it was just text
            kept = self.spec.at_start or self._bare
            self._emit_content(("" if kept else self.spec.trigger) + self._pending, out)
        elif not self._in_calls:
            self._emit_content(self._pending, out)
        self._pending = ""
        return out


@dataclass
class ParsedOutput:
    content: str
    calls: list[ToolCall]
    broken: bool  # a call was started but is not a complete, valid call (it is left out)


def parse_output(text: str, spec: FormatSpec, names: frozenset[str] | None = None) -> ParsedOutput:
    """Content and calls of a whole output. The complete calls count; a broken one (cut
    by max_tokens, or not a call at all) is dropped, and with no complete call before it
    the whole text is content.

    A GENERIC output that is nothing but a bare call object ({"name", "arguments"}) without
    the tags also counts, since models without tool training often answer that way."""
    p = ToolCallParser(spec, names)
    p.push(text)
    p.finish()
    if p.broken and not p.calls:
        return ParsedOutput(text, [], True)
    if not p.calls and spec.trigger == "<tool_call>":
        bare = ToolCallParser(
            FormatSpec("{", "", spec.args_key, False, False, at_start=True), names
        )
        bare.push(text)
        bare.finish()
        if bare.calls and not bare.broken and not bare.content.strip("} \n"):
            return ParsedOutput("", bare.calls, False)
    return ParsedOutput(p.content.strip(), p.calls, p.broken)
