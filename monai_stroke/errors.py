"""Errors meant for the user.

A :class:`UserInputError` says what was wrong, with which file or value, and what to do. The CLI prints it
as one ``error: ...`` line on stderr and exits with status 2; library callers can catch it like any other
``ValueError``.
"""

from __future__ import annotations

__all__ = ["UserInputError", "MissingDependencyError", "find_user_error"]


class UserInputError(ValueError):
    """Bad input from the user (a file, a folder, an option value). Exit status 2 in the CLI."""


class MissingDependencyError(UserInputError):
    """An optional package needed for this input is not installed; the message names the package."""


def find_user_error(exc: BaseException | None) -> UserInputError | None:
    """The :class:`UserInputError` behind ``exc``, if any.

    MONAI's ``Compose`` re-raises a transform's exception as ``RuntimeError("applying transform ...")`` with the
    original as its cause; a bad input found deep inside a transform chain is still the user's to fix.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
