"""The interactive chat of `corral run`, as `ollama run` has it: `>>> ` prompt, `\"\"\"`
multi-line input, and slash commands (/set, /show, /clear, /bye, /?).

Input comes from a `LineReader`: prompt_toolkit on a terminal (editing, history), or any
file-like object otherwise, which is what makes the loop scriptable and testable. Parsing a
line into a `Command` is a pure function; `Repl` executes commands against a `Session`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from corral.cli.output import isatty
from corral.cli.params import PARAMS, parse_param, show_value

PROMPT = ">>> "
CONTINUATION = "... "
FENCE = '"""'
PLACEHOLDER = "Send a message (/? for help)"

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""
HELP_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
"""
HELP_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""
HELP_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding; clear the line; twice to exit
  Ctrl + d            Exit (/bye)
  Up / Down           Browse the input history
"""
SET_OPTIONS = ("verbose", "quiet", "wordwrap", "nowordwrap")
SHOW_TOPICS = ("info", "license", "parameters", "system", "template")


def help_parameters() -> str:
    """The `/set parameter` help: every parameter and what it does."""
    lines = ["Available Parameters:"]
    lines += [f"  /set parameter {p.name:<18} {p.help}" for p in PARAMS.values()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Command:
    """One REPL input, parsed.

    action: prompt (value: the text), set_parameter (name, value), set_system (value),
    set_option (name), show (name), clear, bye, help (name: topic), error (value: message),
    empty.
    """

    action: str
    name: str = ""
    value: Any = None


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def parse_command(line: str) -> Command:
    """Turn one input line into a Command (anything not starting with '/' is a prompt)."""
    text = line.strip()
    if not text:
        return Command("empty")
    if not text.startswith("/"):
        return Command("prompt", value=text)
    head, _, rest = text.partition(" ")
    rest = rest.strip()
    cmd = head.lower()
    if cmd in ("/bye", "/exit"):
        return Command("bye")
    if cmd == "/clear":
        return Command("clear")
    if cmd in ("/?", "/help"):
        return Command("help", name=rest.lower())
    if cmd == "/system":
        return _set_system(rest)
    if cmd == "/show":
        topic = rest.lower()
        if topic in SHOW_TOPICS:
            return Command("show", name=topic)
        return Command("help", name="show") if not topic else _unknown(f"/show {topic}")
    if cmd == "/set":
        return _parse_set(rest)
    return _unknown(head)


def _unknown(what: str) -> Command:
    return Command("error", value=f"Unknown command '{what}'. Type /? for help")


def _set_system(text: str) -> Command:
    if not text:
        return Command("error", value="Usage: /set system <message>")
    return Command("set_system", value=_unquote(text))


def _parse_set(rest: str) -> Command:
    sub, _, args = rest.partition(" ")
    sub, args = sub.lower(), args.strip()
    if not sub:
        return Command("help", name="set")
    if sub in SET_OPTIONS:
        return Command("set_option", name=sub)
    if sub == "system":
        return _set_system(args)
    if sub == "parameter":
        if not args:
            return Command("help", name="parameters")
        name, _, value = args.partition(" ")
        if not value.strip():
            return Command("error", value="Usage: /set parameter <name> <value>")
        try:
            key, parsed = parse_param(name, value)
        except ValueError as e:
            return Command("error", value=f"Couldn't set parameter: {e}")
        return Command("set_parameter", name=key, value=parsed)
    return _unknown(f"/set {sub}")


class LineReader(Protocol):
    """Where REPL lines come from. `read` raises EOFError at the end, and KeyboardInterrupt
    for Ctrl-C on an empty line."""

    def read(self, prompt: str) -> str: ...


class StreamReader:
    """Lines from a file-like object (a pipe, a file, a StringIO in tests).

    The prompt is written to `out`; input that is not typed on a terminal is echoed after
    it, so the output reads as a transcript.
    """

    def __init__(self, stream: TextIO, out: TextIO) -> None:
        self.stream, self.out = stream, out
        self.echo = not isatty(stream)

    def read(self, prompt: str) -> str:
        """The next line without its newline; EOFError at the end of the stream."""
        self.out.write(prompt)
        self.out.flush()
        line = self.stream.readline()
        if not line:
            raise EOFError
        line = line.rstrip("\r\n")
        if self.echo:
            self.out.write(line + "\n")
        return line


class TerminalReader:
    """prompt_toolkit line editing, with history kept in `history_path` across sessions.

    Ctrl-C clears a line holding text; on an empty line it raises KeyboardInterrupt (the
    REPL exits on the second one in a row).
    """

    def __init__(self, history_path: Path | None = None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, History, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        bindings = KeyBindings()

        @bindings.add("c-c")
        def _interrupt(event: Any) -> None:
            buffer = event.app.current_buffer
            if buffer.text:
                buffer.reset()
            else:
                event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

        history: History = InMemoryHistory()
        if history_path is not None:
            try:
                history_path.parent.mkdir(parents=True, exist_ok=True)
                history = FileHistory(str(history_path))
            except OSError:  # a read-only home: history for this session only
                pass
        self.session: Any = PromptSession(history=history, key_bindings=bindings)

    def read(self, prompt: str) -> str:
        """A line typed at the terminal."""
        placeholder = PLACEHOLDER if prompt == PROMPT else None
        return self.session.prompt(prompt, placeholder=placeholder)


def make_reader(stream: TextIO, out: TextIO, history_path: Path | None) -> LineReader:
    """prompt_toolkit when both ends are a terminal, else plain line reading."""
    if isatty(stream) and isatty(out):
        try:
            return TerminalReader(history_path)
        except Exception:  # noqa: BLE001 - an odd terminal: plain input still works
            pass
    return StreamReader(stream, out)


def read_command(reader: LineReader) -> Command:
    """Read one Command, gathering a \"\"\"-fenced message over several lines.

    A fence opens a message when a line starts with it, or follows `/set system` or
    `/system`; text before the closing fence on its line belongs to the message.
    """
    line = reader.read(PROMPT)
    stripped = line.strip()
    head, fenced = "", ""
    if stripped.startswith(FENCE):
        fenced = stripped[len(FENCE) :]
    else:
        for prefix in ("/set system ", "/system "):
            rest = stripped[len(prefix) :].lstrip()
            if stripped.lower().startswith(prefix) and rest.startswith(FENCE):
                head, fenced = prefix, rest[len(FENCE) :]
    if not (stripped.startswith(FENCE) or head):
        return parse_command(line)
    parts = []
    while not fenced.rstrip().endswith(FENCE):
        parts.append(fenced)
        fenced = reader.read(CONTINUATION)
    parts.append(fenced.rstrip()[: -len(FENCE)])
    text = "\n".join(parts).strip("\n")
    if head:
        return _set_system(text) if text.strip() else _set_system("")
    return Command("prompt", value=text) if text.strip() else Command("empty")


class Repl:
    """Runs commands against a `Session` until /bye, end of input or a double Ctrl-C."""

    def __init__(self, session: Any, reader: LineReader, out: TextIO | None = None) -> None:
        self.session = session
        self.reader = reader
        self.out = out or sys.stdout

    def run(self) -> int:
        """The loop; returns the exit status (0)."""
        interrupted = False
        while True:
            try:
                cmd = read_command(self.reader)
            except EOFError:
                self.out.write("\n")
                return 0
            except KeyboardInterrupt:
                if interrupted:  # a second Ctrl-C in a row leaves
                    self.out.write("\n")
                    return 0
                interrupted = True
                self.out.write("\nUse Ctrl + d or /bye to exit (Ctrl + c again also exits).\n")
                continue
            interrupted = False
            if not self.execute(cmd):
                return 0

    def say(self, text: str) -> None:
        """Print a line of REPL feedback."""
        self.out.write(text.rstrip("\n") + "\n")
        self.out.flush()

    def execute(self, cmd: Command) -> bool:
        """Carry out one command; False means leave the REPL."""
        from corral.errors import CorralError

        s = self.session
        try:
            match cmd.action:
                case "bye":
                    return False
                case "empty":
                    pass
                case "prompt":
                    s.ask(cmd.value)
                    self.out.write("\n")  # a blank line between the answer and the prompt
                case "error":
                    self.say(cmd.value)
                case "help":
                    self.say(_help(cmd.name))
                case "clear":
                    s.clear()
                    self.say("Cleared session context")
                case "set_system":
                    s.system = cmd.value
                    self.say("Set system message.")
                case "set_option":
                    self.say(s.set_option(cmd.name))
                case "set_parameter":
                    s.set_param(cmd.name, cmd.value)
                    self.say(f"Set parameter '{cmd.name}' to '{show_value(cmd.value)}'")
                case "show":
                    self.say(s.show(cmd.name))
        except CorralError as e:  # the session goes on after a failed turn
            self.say(f"Error: {e}")
        return True


def _help(topic: str) -> str:
    return {
        "": HELP,
        "set": HELP_SET,
        "show": HELP_SHOW,
        "shortcuts": HELP_SHORTCUTS,
        "shortcut": HELP_SHORTCUTS,
        "parameters": help_parameters(),
    }.get(topic, f"Unknown help topic '{topic}'. Type /? for help")
