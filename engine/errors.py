"""Errors the engine raises for bad input: each one a single line naming the file, field or limit.

The CLI and the server print these as they are; anything else escaping is a bug.
"""

from __future__ import annotations


class AgentfastError(Exception):
    """Base of every error meant for the user (one line, names what is wrong)."""


class ModelLoadError(AgentfastError):
    """A model file is missing, unreadable, corrupt or truncated."""


class UnsupportedModelError(AgentfastError):
    """The model's architecture, a config field or a tensor type is not supported."""


class ContextLengthError(AgentfastError):
    """A prompt (plus the tokens to generate) does not fit in the model's context."""


class RequestError(AgentfastError):
    """A generation request has an invalid parameter."""
