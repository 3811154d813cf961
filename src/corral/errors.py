"""Errors corral raises for bad input: each carries a one-line, user-facing message."""

from __future__ import annotations


class CorralError(Exception):
    """Base class: the message is meant to be shown to a user as is, on one line."""


class GGUFError(CorralError):
    """A file that is not a readable GGUF model (corrupt, truncated, wrong format)."""


class UnsupportedError(CorralError):
    """A well-formed file that asks for something corral cannot run (architecture, quant type)."""


class ModelNotFoundError(CorralError):
    """A model name or path that the store cannot resolve."""


class ContextOverflowError(CorralError):
    """A prompt longer than the model's context window."""


class DownloadError(CorralError):
    """A pull that failed: network or pip error, checksum mismatch, missing file in a package."""


class TemplateError(CorralError):
    """A chat template that does not compile, raises, breaks the sandbox or its limits."""


class QueueFullError(CorralError):
    """The server's request queue is full; the client should retry later."""


class InvalidRequestError(CorralError, ValueError):
    """A request that cannot be run as asked (an empty prompt, a bad parameter)."""
