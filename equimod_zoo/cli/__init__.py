"""The `equimod-zoo` command line: it parses arguments and calls the library, nothing more."""
from __future__ import annotations

import typer

from equimod_zoo.cli import extract, probe_augs, probes, publish, train, transfer, zoo
from equimod_zoo.runtime import apply_cpu_policy

app = typer.Typer(
    name="equimod-zoo",
    help="Self-supervised backbones that keep colour and pose (SimCLR, BYOL, EquiMod), in timm format.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for _module in (zoo, extract, probes, transfer, probe_augs, train, publish):
    _module.register(app)


def main() -> None:
    apply_cpu_policy()  # one torch thread per idle core: a busy machine slows us by its share, not several-fold
    app()
