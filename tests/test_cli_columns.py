"""At 80 columns every help text, table and progress bar is readable: nothing cut with an ellipsis,
no default truncated, each score and its interval on one line."""
from __future__ import annotations

import io

import click
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.cli.probe_augs import report_table
from equimod_zoo.cli.probes import results_table
from equimod_zoo.probes.frozen import FrozenProbeReport
from equimod_zoo.probes.knn import KnnResult
from equimod_zoo.probes.linear import LinearProbeResult
from equimod_zoo.progress import progress_bar

COMMANDS = sorted(typer.main.get_command(app).commands)


def _render(renderable, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_at_80_columns_cuts_nothing(command):
    args = ["--help"] if command is None else [command, "--help"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    for line in result.output.splitlines():  # a line runs past 80 only for a word longer than the space left
        assert len(line) <= 80 or " " not in line.strip()[40:], line
    group = typer.main.get_command(app)
    params = group.params if command is None else group.commands[command].params
    flat = _flat(result.output)
    for param in params:
        if isinstance(param, click.Option) and param.help:
            assert _flat(param.help) in flat, param.help  # the whole description, every word
        if isinstance(param, click.Option) and param.show_default and param.default not in (None, False, ()):
            assert f"[default: {param.default}" in flat, param.name


def _score(value, low, high, metric="r2"):
    return {"metric": metric, "value": value, "ci_low": low, "ci_high": high}


def test_the_probe_augs_table_keeps_each_interval_on_one_line():
    names = ("crop_top", "crop_height", "jitter_order_0", "brightness", "grayscale", "blur_sigma", "solarize")
    report = {
        "model": "simclr_equimod_r18_cifar10", "dataset": "cifar10", "num_images": 2000, "resolution": 32,
        "inputs": {kind: {name: _score(-0.123 + i / 10, -0.456, 0.789, "balanced_accuracy" if i % 2 else "r2")
                          for i, name in enumerate(names)} for kind in ("view", "pair")},
        "equivariance": None,
    }
    text = _render(report_table(report))
    assert "…" not in text
    for line in text.splitlines():
        assert len(line) <= 80, line
    for i, name in enumerate(names):
        cell = f"{-0.123 + i / 10:.3f} [-0.456, 0.789]"
        row = next(line for line in text.splitlines() if line.strip().startswith(name))
        assert row.count(cell) == 2, row  # view and pair, whole, on the parameter's own line


def test_the_linear_table_fits_80_columns():
    linear = LinearProbeResult(top1=78.68, top5=98.54, mean_per_class_accuracy=78.61, weight_decay=0.000464,
                               val_scores={}, select_metric="top1", train_size=40000, val_size=10000,
                               test_size=10000, num_classes=10)
    knn = KnnResult(top1=73.32, top5=97.1, mean_per_class_accuracy=73.2, k=200, temperature=0.1, train_size=50000,
                    test_size=10000, num_classes=10)
    report = FrozenProbeReport("simclr_equimod_r18_cifar10", "0" * 64, "train", "test", None, linear, knn, {})
    text = _render(results_table(report))
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    for number in ("78.68", "98.54", "78.61", "73.32", "40000", "10000", "k=200,"):
        assert any(number in line for line in text.splitlines()), number


def test_a_progress_bar_at_80_columns_wraps_its_words_and_cuts_none():
    bar = progress_bar(status=True)  # the training bar
    task = bar.add_task("train simclr_equimod_r18_cifar10 on $EQUIMOD_DATA/cifar10-jpeg, 64 px", total=15600,
                        status="")
    bar.update(task, completed=15600, status="loss 5.1234  12,345 img/s")
    text = _render(bar.make_tasks_table(bar.tasks))
    assert "…" not in text
    for word in ("simclr_equimod_r18_cifar10", "15600/15600", "5.1234", "12,345"):
        assert any(word in line for line in text.splitlines()), (word, text)
