"""One data folder for examples, benchmarks and tests: $EQUIMOD_DATA (else ../shared/data beside the
checkout), and a one-line message naming what to set when what they need is not there."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from equimod_zoo.records import command_option, data_folder, data_path, transfer_settings

REPOSITORY = Path(__file__).resolve().parents[1]


def test_the_data_folder_is_equimod_data_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIMOD_DATA", str(tmp_path))
    (tmp_path / "flowers102").mkdir()
    assert data_folder() == tmp_path
    assert data_path("flowers102") == tmp_path / "flowers102"
    assert data_path("flowers102", given=tmp_path) == tmp_path  # the option wins


def test_a_missing_dataset_says_what_to_set_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIMOD_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        data_path("flowers102")
    message = str(error.value)
    assert "\n" not in message and "EQUIMOD_DATA" in message and "--data-dir" in message
    with pytest.raises(FileNotFoundError, match="--data-dir .*missing: no such file"):
        data_path("flowers102", given=tmp_path / "missing")


def test_a_benchmark_without_its_data_stops_with_one_line(tmp_path):
    env = {**os.environ, "EQUIMOD_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, str(REPOSITORY / "bench" / "transfer.py")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: flowers102: not in the data folder $EQUIMOD_DATA={tmp_path}; set EQUIMOD_DATA to the folder "
        f"that holds flowers102/, or give --data-dir DIR"]


def test_a_recorded_option_is_read_back_from_its_command():
    command = "equimod-zoo transfer --dataset flowers102 --resolution 64 --json out.json"
    assert command_option(command, "--resolution") == "64"
    assert command_option("equimod-zoo transfer --resolution=96", "--resolution") == "96"
    assert command_option(command, "--model") is None


def test_the_settings_shown_beside_a_transfer_number_come_from_its_command():
    command = "equimod-zoo transfer --dataset flowers102 --resolution 64 --precision fp32"
    assert transfer_settings([command, command]) == "64 px, fp32 features"
    assert transfer_settings([command, "equimod-zoo transfer --dataset flowers102"]) == (
        "64 px, fp32 features or the model's default size")
