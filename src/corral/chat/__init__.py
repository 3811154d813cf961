"""Chat templates: turn a list of messages into the prompt a model was trained on.

`template_for(metadata)` gives the template of a GGUF file (its own Jinja2 template, or a
built-in format chosen from its metadata); `ChatTemplate.render(messages)` renders it in
a sandbox with limits, raising `corral.errors.TemplateError` on any failure.
"""

from __future__ import annotations

from corral.chat.builtin import BuiltinTemplate, builtin_for, template_for
from corral.chat.limits import RenderLimits
from corral.chat.template import ChatTemplate

__all__ = ["BuiltinTemplate", "ChatTemplate", "RenderLimits", "builtin_for", "template_for"]
