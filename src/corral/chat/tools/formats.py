"""Tool-call prompt formats, chosen from the model's chat template.

Each format says how calls appear in the model's output (what starts them, whether they are
a JSON array, the key holding the arguments) and whether the template renders the tool list
and tool turns itself (`native`). Templates with no tool support get GENERIC: the Hermes
convention (`<tool_call>{...}</tool_call>`, results in `<tool_response>`) written into the
prompt by corral, which is also what OpenHermes-style fine-tunes were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ToolFormat(Enum):
    HERMES = "hermes"  # Hermes 2 Pro, Qwen 2/2.5/3: <tools> in the system prompt
    MISTRAL = "mistral"  # Mistral v3+: [AVAILABLE_TOOLS], [TOOL_CALLS] [{...}], [TOOL_RESULTS]
    # Mistral v11+ (Mistral Small 3.1+, Devstral, Magistral): [TOOL_CALLS]name[ARGS]{...}
    MISTRAL_V11 = "mistral-v11"
    LLAMA3 = "llama3"  # Llama 3.1+: a bare {"name": ..., "parameters": {...}} object
    GENERIC = "generic"  # no tool support in the template: corral describes the tools


@dataclass(frozen=True)
class FormatSpec:
    """How one format writes calls."""

    trigger: str  # text opening the calls (for LLAMA3, the output's first '{')
    close: str  # text closing one call ("" when the JSON's end closes it)
    args_key: str  # "arguments", or "parameters" for Llama 3
    array: bool  # the calls are one JSON array after the trigger (Mistral)
    native: bool  # the template renders tools, tool_calls and tool results itself
    at_start: bool = False  # calls can only open the output (no text before them)
    # an output opening with this holds calls even without the trigger: Mistral's
    # [TOOL_CALLS] is a control token, which the answer's text leaves out
    bare_start: str = ""
    # each call is written `trigger name [CALL_ID]id [ARGS] {arguments}` (Mistral v11+),
    # not as a JSON object holding the name; [CALL_ID]id is optional (v13 templates)
    named: bool = False


# Mistral v11+ marker between a call's name and its arguments, and the optional call id's
ARGS_MARKER = "[ARGS]"
CALL_ID_MARKER = "[CALL_ID]"


SPECS: dict[ToolFormat, FormatSpec] = {
    ToolFormat.HERMES: FormatSpec("<tool_call>", "</tool_call>", "arguments", False, True),
    ToolFormat.MISTRAL: FormatSpec(
        "[TOOL_CALLS]", "", "arguments", True, True, bare_start='[{"name"'
    ),
    ToolFormat.MISTRAL_V11: FormatSpec("[TOOL_CALLS]", "", "arguments", False, True, named=True),
    ToolFormat.LLAMA3: FormatSpec("{", "", "parameters", False, True, at_start=True),
    ToolFormat.GENERIC: FormatSpec("<tool_call>", "</tool_call>", "arguments", False, False),
}


def detect_format(template_source: str | None) -> ToolFormat:
    """The tool format a chat template was written for (GENERIC if it shows none)."""
    src = template_source or ""
    if "[TOOL_CALLS]" in src and ARGS_MARKER in src:  # checked first: v11 has both markers
        return ToolFormat.MISTRAL_V11
    if "[TOOL_CALLS]" in src or "[AVAILABLE_TOOLS]" in src:
        return ToolFormat.MISTRAL
    if "<tool_call>" in src:
        return ToolFormat.HERMES
    if "<|start_header_id|>" in src and "tools" in src and '"parameters"' in src:
        return ToolFormat.LLAMA3
    return ToolFormat.GENERIC
