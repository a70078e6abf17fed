"""`train --out` writes only into a new or empty folder or an earlier run of its own (the one output rule,
equimod_zoo/output_folder.py): a folder of the user's files, a model folder that publish wrote, a file, the data
itself are refused in one line, before any work, and not one of their files changes."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from test_export_card import make_run_folder
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.hub.export import export_model
from toy_training import tiny_recipe, write_toy_parquet


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return write_toy_parquet(tmp_path_factory.mktemp("toy"), num_images=32)


@pytest.fixture
def train_args(toy_data, tmp_path):
    recipe = tiny_recipe("simclr", epochs=1).to_dict()
    recipe.pop("name")
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(recipe))

    def args(out, *more):
        return ["train", "--recipe", str(tmp_path / "toy.yaml"), "--data", str(toy_data), "--out", str(out),
                "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", *more]
    return args


def snapshot(path: Path) -> dict[str, str]:
    """Every file under `path` (or `path` itself) with its content's sha256."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def refused(args, target: Path, *watched: Path) -> str:
    before = {w: snapshot(w) for w in (target, *watched)}
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    assert {w: snapshot(w) for w in (target, *watched)} == before  # not one file changed
    return lines[0]


def test_a_folder_of_the_users_files_is_refused(train_args, tmp_path):
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    (mine / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really")
    (mine / "config.json").write_text('{"my": "settings"}\n')  # what a run would rewrite
    (mine / "log.csv").write_text("date,weight\n2026-01-01,70\n")  # what a run would truncate
    line = refused(train_args(mine), mine)
    assert "not a previous train output" in line and "--out" in line


def test_a_model_folder_written_by_publish_is_refused(train_args, tmp_path, tiny_resnet18_cifar):
    make_run_folder(tmp_path / "source", tiny_resnet18_cifar, results=False)
    published = tmp_path / "published"
    export_model(tmp_path / "source", published, repo_id="me/model")
    refused(train_args(published), published)
    refused(train_args(published, "--time-budget", "1m"), published)


def test_a_file_is_refused(train_args, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert "not a folder this command wrote" in refused(train_args(notes), notes)


def test_the_data_itself_is_refused(train_args, toy_data, tmp_path):
    assert "is (or holds) the source" in refused(train_args(toy_data), toy_data)
    refused(train_args(toy_data / "train.parquet"), toy_data)  # its file
    assert "is (or holds) the source" in refused(train_args(toy_data.parent), toy_data)  # a folder holding it


def test_an_earlier_run_is_continued_and_a_finished_model_is_not_a_new_runs_source(train_args, tmp_path):
    run = tmp_path / "run"
    first = CliRunner().invoke(app, train_args(run, "--max-steps", "1"))
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, train_args(run, "--resume"))  # an earlier run of ours: accepted
    assert again.exit_code == 0 and "finished" in again.output, again.output
    assert json.loads((run / "model" / "config.json").read_text())["equimod"]["steps"] == 2
    # a new cycle from that run may not write into it
    refused(train_args(run, "--init-from", str(run)), run)
    (run / "my_notes.txt").write_text("mine\n")  # a run holding a file of the user's is no longer ours to write
    assert "my_notes.txt" in refused(train_args(run, "--resume"), run)
