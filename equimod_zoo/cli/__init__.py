"""The `equimod-zoo` command line: it parses arguments and calls the library, nothing more.

It answers `--version`, `--help` and mistakes in its arguments before importing anything heavy:
the command modules import typer, rich and our light modules only, and each command imports
torch, timm, datasets and numpy inside its function (tests/test_cli_startup.py checks it).
"""
from __future__ import annotations

import warnings

import typer

from equimod_zoo import __version__
from equimod_zoo.after_import import after_import
from equimod_zoo.cli import extract, probe_augs, probes, publish, train, transfer, zoo

app = typer.Typer(
    name="equimod-zoo",
    help="Self-supervised backbones that keep colour and pose (SimCLR, BYOL, EquiMod), in timm format.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"equimod-zoo {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                           help="Print the version and exit."),
) -> None:
    """Self-supervised backbones that keep colour and pose (SimCLR, BYOL, EquiMod), in timm format."""


for _module in (zoo, extract, probes, transfer, probe_augs, train, publish):
    _module.register(app)


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
    return f"warning: {' '.join(str(message).split())}\n"


def _use_idle_cores(torch) -> None:  # noqa: ANN001 (the torch module)
    from equimod_zoo.runtime import num_threads_to_use

    torch.set_num_threads(num_threads_to_use())  # one per idle core: a busy machine slows us by its share only


def main() -> None:
    # The command line is this process: its warnings are one line, like its errors.
    warnings.formatwarning = _one_line_warning
    after_import("torch", _use_idle_cores)  # when a command first needs torch, not before
    app()
