"""One-line errors for the command line: expected failures print a message, not a traceback."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

# Failures a user can fix: bad names, paths, files and arguments. Anything else is a bug and
# keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (KeyError, ValueError, FileNotFoundError, NotADirectoryError,
                                                 PermissionError)

err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as error:
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
