"""Tool calling: tool schemas, prompt formats chosen from the chat template, grammars that
make calls parse, parsers for each format, and the call-run-answer loop.

Entry points: `ToolPlan` (one request's format, prompt, constraint and parser), `tool`
(the `@corral.tool` decorator), `chat_with_tools` (what `Model.chat(tools=...)` runs).
"""

from corral.chat.tools.decorator import ToolFunction, tool
from corral.chat.tools.formats import ToolFormat, detect_format
from corral.chat.tools.parse import ParsedOutput, ToolCallParser, parse_output
from corral.chat.tools.plan import ToolPlan
from corral.chat.tools.types import (
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    parse_tool_choice,
    parse_tools,
)

__all__ = [
    "ParsedOutput",
    "Tool",
    "ToolCall",
    "ToolCallParser",
    "ToolChoice",
    "ToolChoiceMode",
    "ToolFormat",
    "ToolFunction",
    "ToolPlan",
    "detect_format",
    "parse_output",
    "parse_tool_choice",
    "parse_tools",
    "tool",
]
