"""The commands as a new user types them: defaults that work, and network failures in one line."""
from __future__ import annotations

import time

import huggingface_hub
import huggingface_hub.constants
import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from equimod_zoo import __version__
from equimod_zoo.cli import app
from equimod_zoo.cli.errors import user_errors
from equimod_zoo.cli.network import is_network_error, offline_unless_reachable
from equimod_zoo.constants import DEFAULT_MODEL
from equimod_zoo.extraction.store import load_features


def _one_line(result):
    text = result.output.strip()
    assert result.exit_code == 2 and "Traceback" not in text, text
    error_lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, text
    return error_lines[0]


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"equimod-zoo {__version__}"


@pytest.mark.parametrize("command", ["extract", "transfer", "compare", "train"])
def test_num_workers_is_accepted_beside_workers(command):
    options = [param.opts for param in typer.main.get_command(app).commands[command].params]
    assert ["--workers", "--num-workers"] in options


def test_extract_images_with_nothing_else(tmp_path, monkeypatch):
    images = tmp_path / "photos"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 20, 3), np.uint8)).save(images / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["extract", "--images", "photos/"])
    assert result.exit_code == 0, result.output
    out = f"features/photos_{DEFAULT_MODEL}"
    assert f"output folder: {out}" in result.output and DEFAULT_MODEL in result.output
    paths, features = load_features(tmp_path / out)
    assert len(paths) == 3 and features.shape == (3, 512)
    rerun = CliRunner().invoke(app, ["extract", "--images", "photos"])
    assert rerun.exit_code == 0 and "1 of 1 shards already done" in rerun.output
    out_option = next(p for p in typer.main.get_command(app).commands["extract"].params if "--out" in p.opts)
    assert f"features/photos_{DEFAULT_MODEL}" in out_option.help


def test_transfer_with_nothing_else_offline_fails_in_one_line_naming_hub_id_and_data_dir(monkeypatch):
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["transfer", "--dataset", "flowers102"])
    line = _one_line(result)
    assert f"model: {DEFAULT_MODEL} (the embedded default" in result.output
    assert "dpdl-benchmark/oxford_flowers102" in line and "--data-dir" in line
    assert time.perf_counter() - started < 60  # no minute of retries (this box's imports are slow)


def test_an_unreachable_hub_switches_the_command_to_offline_in_seconds(monkeypatch):
    class _Session:
        def head(self, *args, **kwargs):
            raise ConnectionRefusedError("connection refused")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: _Session())
    assert offline_unless_reachable() is True
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True


@pytest.mark.parametrize("error", [ConnectionError("Couldn't reach 'x/y' on the Hub"), TimeoutError("timed out")])
def test_network_failures_are_one_line_with_what_to_do(error, capsys):
    assert is_network_error(error)
    with pytest.raises(typer.Exit) as exit_info:
        with user_errors(network_hint="point --data-dir at a local copy"):
            raise error
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "network:" in err and "point --data-dir at a local copy" in err


def test_publish_upload_failure_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection: [Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    import equimod_zoo

    folder = equimod_zoo.get_entry(DEFAULT_MODEL).bundled_folder
    result = CliRunner().invoke(app, ["publish", str(folder), "--repo-id", "someone/x", "--out", str(tmp_path / "o")])
    line = _one_line(result)
    assert "network" in line or "connection" in line.lower()


def test_optional_extras_are_named_when_missing_and_never_imported_by_the_core():
    import subprocess
    import sys

    from equimod_zoo.optional import require
    from equimod_zoo.errors import MissingExtraError

    with pytest.raises(MissingExtraError, match=r"needs matplotlib, which is not installed: pip install matplotlib "
                                                r"\(or, in a checkout of equimod-zoo, pip install -e '\.\[plots\]'\)"):
        require("matplotlib_that_is_not_installed", "plots", "the comparison chart")
    code = ("import sys, equimod_zoo, equimod_zoo.cli, equimod_zoo.extraction.extract; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'tensorboard'}))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"
