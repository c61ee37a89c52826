"""Exceptions of the domain layer.

The web layer maps them to HTTP statuses in one place; the CLI prints one line
and exits non-zero.
"""


class CurationError(Exception):
    """Base class of every error the domain raises on purpose."""


class ConfigurationError(CurationError):
    """A setting is missing or has a value that cannot be used."""


class RejectedInput(CurationError):
    """An untrusted input (file, filename, URL, JSON) was refused.

    ``reason`` is one short sentence meant for the person who sent it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotFound(CurationError):
    """A row that the caller named does not exist."""


class Conflict(CurationError):
    """The request contradicts what is already stored."""


class Forbidden(CurationError):
    """The user's role does not allow what they asked for."""
