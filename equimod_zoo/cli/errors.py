"""One-line errors for the command line: expected failures print a message, not a traceback."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

from equimod_zoo.atomic import disk_error
from equimod_zoo.cli.network import is_network_error, network_message
from equimod_zoo.errors import UserError

# Failures a user can fix: our UserError (bad names, files, arguments, settings) and the
# operating system's word on a path they gave, or on a disk that refused a write (full, read-only:
# `equimod_zoo.atomic.disk_error` says what to do). Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, NotADirectoryError,
                                                 IsADirectoryError, PermissionError, FileExistsError)

err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr; the caller raises the returned exit (status 2)."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code=2)


@contextlib.contextmanager
def user_errors(*, network_hint: str | None = None) -> Iterator[None]:
    """Turn expected failures into one line and exit status 2.

    Args:
        network_hint: what to do when something could not be downloaded (e.g. "point --data-dir at
            a local copy"); network failures never print a traceback.
    """
    try:
        yield
    except Exception as error:
        if is_network_error(error) and not isinstance(error, UserError):
            raise fail(_escape(network_message(error, network_hint))) from None
        if isinstance(error, OSError):
            error = disk_error(error)
        if isinstance(error, USER_ERRORS):
            raise fail(_escape(" ".join(str(error).split()))) from None
        raise


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def check_device(device: str | None) -> None:
    """Refuse a --device this machine does not have (None: the library picks CUDA or CPU)."""
    if device is not None:
        from equimod_zoo.devices import resolve_device

        resolve_device(device)
