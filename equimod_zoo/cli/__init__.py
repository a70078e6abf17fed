"""The `equimod-zoo` command line: it parses arguments and calls the library, nothing more.

It answers `--version`, `--help` and mistakes in its arguments before importing anything heavy:
the command modules import typer, rich and our light modules only, and each command imports
torch, timm, datasets and numpy inside its function (tests/test_cli_startup.py checks it).
"""
from __future__ import annotations

import logging
import warnings

import typer

from equimod_zoo import __version__
from equimod_zoo.after_import import after_import
from equimod_zoo.cli import extract, neighbours, probe_augs, probes, publish, train, transfer, zoo

app = typer.Typer(
    name="equimod-zoo",
    help="Self-supervised backbones that keep colour and pose (SimCLR, BYOL, EquiMod), in timm format.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's own help: it wraps to any width (80 columns included) and never cuts a word or a
    # default, where rich's panels squeeze long option names and truncate with an ellipsis
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"equimod-zoo {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Keep the libraries' own progress bars and log "
                                 "messages (datasets, huggingface_hub, timm, torch); without it each long step "
                                 "shows one bar of ours."),
) -> None:
    """Self-supervised backbones that keep colour and pose (SimCLR, BYOL, EquiMod), in timm format."""
    library_output(verbose=verbose)


def library_output(*, verbose: bool = False) -> None:
    """Quiet (or, with `verbose`, restore) the libraries' own progress bars ("Generating train split:
    ...") and their info and warning logs: our bars say what runs. Applied now to the libraries
    already imported, and to the others when they are."""
    after_import("datasets", lambda datasets: _datasets_output(datasets, verbose))
    after_import("huggingface_hub", lambda huggingface_hub: _hub_output(verbose))
    for name in ("timm", "torch"):
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


def _datasets_output(datasets, verbose: bool) -> None:  # noqa: ANN001 (the datasets module)
    if verbose:
        datasets.enable_progress_bars()
        datasets.logging.set_verbosity_warning()
    else:
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()


def _hub_output(verbose: bool) -> None:
    import huggingface_hub.utils

    if verbose:
        huggingface_hub.utils.enable_progress_bars()
        huggingface_hub.utils.logging.set_verbosity_warning()
    else:
        huggingface_hub.utils.disable_progress_bars()
        huggingface_hub.utils.logging.set_verbosity_error()


for _module in (zoo, extract, neighbours, probes, transfer, probe_augs, train, publish):
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
