"""Every exception and warning equimod-zoo raises on purpose, in one place.

A `UserError` is a mistake the user can fix: its message names the file or argument and what to
do, and the command line prints it as one line with exit status 2. Each mixes in the builtin a
caller would catch (a `UserError` is a ValueError; a name that is not found is also a KeyError, a
missing file also a FileNotFoundError), as huggingface_hub's errors do. A broken invariant inside
our own code is not a UserError: it is an assertion or a plain exception and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input: a name, path, file, argument or setting the user can correct."""


class UnknownNameError(UserError, KeyError):
    """A name that is none of the known ones (a recipe, dataset, column, parameter, override key)."""

    def __str__(self) -> str:  # the message as written, not KeyError's quoted repr of it
        return str(self.args[0]) if self.args else ""


class UnknownModelError(UnknownNameError):
    """A model name that is no zoo name, alias or arch.tag."""


class NetworkError(UserError):
    """Something had to be downloaded and could not be: the message says what and how to work offline."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that installs it."""


class DeviceError(UserError):
    """A device that does not exist here: the message names the argument and what is available."""


# --- model folders and weights ---------------------------------------------------------------------------------


class ModelFolderError(UserError):
    """A model folder that cannot be read: the message names the file and what is wrong."""


class WeightsNotFoundError(UserError, FileNotFoundError):
    """No weights anywhere we looked; the message says where we looked and how to get them."""


class WeightsIntegrityError(UserError):
    """The weights file is not the one the registry or config.json promises, or holds NaN/inf."""


class UnverifiedWeightsWarning(UserWarning):
    """Weights loaded with no recorded sha256 to check them against."""


# --- data -------------------------------------------------------------------------------------------------------


class DatasetSpecError(UserError):
    """A spec that names nothing usable: an empty string, a folder of no known layout, an unknown name."""


class DataUnavailableError(UserError, FileNotFoundError):
    """A Hub dataset that is neither cached nor reachable."""


class ImageTooLargeError(UserError):
    """More pixels than the limit: refused before decoding, like Pillow's DecompressionBombError."""


class LimitExceededError(UserError):
    """A size or count from outside that is over its stated limit (equimod_zoo.limits); nothing was allocated."""


class NonFiniteFeaturesError(UserError, FloatingPointError):
    """A model gave NaN or inf features: the message names the model, the image and the likely cause."""


# --- outputs and records ------------------------------------------------------------------------------------------


class DiskError(UserError, OSError):
    """The disk refused an output (full, over quota, read-only, not permitted): the message names the file and
    what to do. Files already written are whole: every output is written atomically."""

    def __str__(self) -> str:  # the message as written, not OSError's "[Errno N] ..." form
        return str(self.args[0]) if self.args else ""


class OutputRefusedError(UserError, FileExistsError):
    """An output folder that is not ours to write into or replace."""


class RecordsError(UserError):
    """A records folder or file that cannot be read or written as asked."""


class OutOfDateError(UserError):
    """A committed generated document differs from what the catalogue and the records generate."""


# --- training -----------------------------------------------------------------------------------------------------


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept (the command exits with status 1)."""
