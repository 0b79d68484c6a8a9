"""The library's own error types: what a user can fix, told apart from a bug.

Every check of user input (a name, a value out of range, a prompt, a file) raises
:class:`InputError` (a ``ValueError``) with the message a user reads; an analysis that does
not apply to a model raises :class:`Unsupported` naming the architectural reason; a
refusal to exceed the memory budget raises :class:`MemoryBudgetError`; a problem of the
machine rather than the input (no registry, a full disk) raises :class:`SetupError`.  The
CLI and the app show these as one line; any other exception is a bug and is shown with its
traceback (:data:`USER_ERRORS` is the list both faces catch).
"""

from __future__ import annotations


class InputError(ValueError):
    """The input cannot be used as given; the message says what to change."""


class Unsupported(InputError):
    """The analysis does not apply to this model, for the architectural reason the message names."""


class MemoryBudgetError(InputError, MemoryError):
    """The work asked for would exceed the memory budget (``INTERP_MEMORY_MB``); ask for less."""


class SetupError(InputError):
    """The machine, not the input, is in the way: the registry cannot be reached, the disk is
    full, a cached file is missing; the message says what to do."""


#: the exceptions the CLI and the app show as one line (anything else is a bug: a traceback)
USER_ERRORS: tuple[type[BaseException], ...] = (InputError, FileNotFoundError, NotADirectoryError, PermissionError)

BUG_REPORT = (
    "This is a bug in interp, not a problem with your input: please report it with the command "
    "or code you ran, this traceback and `interp --version` (README: Reporting bugs)."
)
