"""The error a user can fix: its message names the file or argument and what to do.

The command line turns it (and missing files, folders and permissions) into one line and exit
status 2; every other exception is a bug and keeps its traceback. It is a ValueError, so code
that catches bad values still catches it; an unknown name is also a KeyError.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input: a name, path, file, argument or setting the user can correct."""


class NetworkError(UserError):
    """Something had to be downloaded and could not be: the message says what and how to work offline."""


class UnknownNameError(UserError, KeyError):
    """A name that is none of the known ones (a recipe, dataset, column, parameter, override key)."""

    def __str__(self) -> str:  # the message as written, not KeyError's quoted repr of it
        return str(self.args[0]) if self.args else ""


class LimitExceededError(UserError):
    """A size or count from outside that is over its stated limit (equimod_zoo.limits); nothing was allocated."""


class NonFiniteFeaturesError(UserError, FloatingPointError):
    """A model gave NaN or inf features: the message names the model, the image and the likely cause."""


class DiskError(UserError, OSError):
    """The disk refused an output (full, over quota, read-only, not permitted): the message names the file and
    what to do. Files already written are whole: every output is written atomically."""

    def __str__(self) -> str:  # the message as written, not OSError's "[Errno N] ..." form
        return str(self.args[0]) if self.args else ""
