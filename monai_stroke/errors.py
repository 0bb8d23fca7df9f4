"""Errors meant for the user.

A :class:`UserInputError` says what was wrong, with which file or value, and what to do. The CLI prints it
as one ``error: ...`` line on stderr and exits with status 2; library callers can catch it like any other
``ValueError``.
"""

from __future__ import annotations

__all__ = ["UserInputError", "MissingDependencyError"]


class UserInputError(ValueError):
    """Bad input from the user (a file, a folder, an option value). Exit status 2 in the CLI."""


class MissingDependencyError(UserInputError):
    """An optional package needed for this input is not installed; the message names the package."""
