"""Outputs: `--overwrite` replaces only a previous output of the same command, never the source or the user's own
files; a killed publish leaves no debris that the next run does not clean."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_export_card import make_run_folder
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.constants import WEIGHTS_FILE
from equimod_zoo.hub.convert import convert_checkpoint
from equimod_zoo.hub.export import export_model
from equimod_zoo.atomic import clean_debris, staging_dir
from equimod_zoo.hub.zoo_bundle import add_to_zoo
from equimod_zoo.model_folder import sha256_file


@pytest.fixture
def run(tmp_path, tiny_resnet18_cifar):
    """A training run as `equimod-zoo train` leaves it: a model folder plus the checkpoint and logs."""
    folder = tmp_path / "run"
    make_run_folder(folder, tiny_resnet18_cifar, results=False)
    (folder / "checkpoint.pt").write_bytes(b"the run's checkpoint")
    (folder / "tb").mkdir()
    return folder


@pytest.fixture
def checkpoint(tmp_path, tiny_resnet18_cifar):
    path = tmp_path / "ckpt" / "x.pt"
    path.parent.mkdir()
    torch.save({"state_dict": tiny_resnet18_cifar.state_dict()}, path)
    return path


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_refusal(result, *words):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    for word in words:
        assert word in result.output, result.output


def test_publish_onto_its_own_run_is_refused_and_the_run_survives(run):
    before = _snapshot(run)
    result = CliRunner().invoke(app, ["publish", str(run), "--repo-id", "org/tiny", "--out", str(run),
                                      "--dry-run", "--overwrite"])
    _one_line_refusal(result, "is (or holds) the source")
    assert _snapshot(run) == before and (run / "tb").is_dir()


def test_publish_onto_a_folder_holding_the_source_is_refused(run, tmp_path):
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["publish", str(run), "--repo-id", "org/tiny", "--out", str(tmp_path),
                                      "--dry-run", "--overwrite"])
    _one_line_refusal(result, "is (or holds) the source")
    assert _snapshot(tmp_path) == before


def test_publish_overwrite_replaces_a_previous_export_only(run, tmp_path):
    out = tmp_path / "out"
    export_model(run, out, repo_id="org/tiny")
    export_model(run, out, repo_id="org/tiny", overwrite=True, with_heads=False)  # a previous export: replaced
    assert (out / WEIGHTS_FILE).is_file()
    (out / "notes.txt").write_text("mine")  # the user added a file to it: no longer ours alone
    result = CliRunner().invoke(app, ["publish", str(run), "--repo-id", "org/tiny", "--out", str(out),
                                      "--dry-run", "--overwrite"])
    _one_line_refusal(result, "notes.txt", "does not write")
    assert (out / "notes.txt").read_text() == "mine"
    # a run folder, even one that looks like a model folder, is not an export
    other = tmp_path / "other_run"
    make_run_folder(other, _tiny(), results=False)
    before = _snapshot(other)
    with pytest.raises(ValueError, match="not a previous export output"):
        export_model(run, other, repo_id="org/tiny", overwrite=True)
    assert _snapshot(other) == before


def _tiny():
    import timm

    torch.manual_seed(1)
    return timm.create_model("resnet18_cifar", num_classes=0, channels=(8, 16, 32, 64), stem_width=8).eval()


def test_convert_overwrite_never_deletes_the_users_files(checkpoint, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    result = CliRunner().invoke(app, ["convert", str(checkpoint), "--from", "torchvision", "--out", str(out),
                                      "--overwrite"])
    _one_line_refusal(result, "not a previous convert output")
    assert (out / "thesis.tex").read_text() == "years of work"
    # the checkpoint's own folder is the source: refused even when empty of other files
    result = CliRunner().invoke(app, ["convert", str(checkpoint), "--from", "torchvision", "--out",
                                      str(checkpoint.parent), "--overwrite"])
    _one_line_refusal(result, "is (or holds) the source")
    assert checkpoint.is_file()


def test_convert_overwrite_replaces_its_own_previous_output_not_an_export(checkpoint, run, tmp_path):
    out = tmp_path / "converted"
    first = convert_checkpoint(checkpoint, source="torchvision", out=out)
    second = convert_checkpoint(checkpoint, source="torchvision", out=out, overwrite=True, dtype=torch.float16)
    assert first.weights_sha256 != second.weights_sha256 == sha256_file(out / WEIGHTS_FILE)
    assert json.loads((out / "config.json").read_text())["equimod"]["written_by"] == "convert"
    export_model(run, tmp_path / "exported", repo_id="org/tiny")
    with pytest.raises(ValueError, match="not a previous convert output"):
        convert_checkpoint(checkpoint, source="torchvision", out=tmp_path / "exported", overwrite=True)
    with pytest.raises(ValueError, match="not a previous export output"):
        export_model(run, out, repo_id="org/tiny", overwrite=True)


def test_a_link_or_a_file_at_out_is_refused(checkpoint, tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "file").write_text("data")
    for out in (tmp_path / "link", tmp_path / "file"):
        with pytest.raises(ValueError, match="not a folder this command wrote"):
            convert_checkpoint(checkpoint, source="torchvision", out=out, overwrite=True)
    assert (tmp_path / "file").read_text() == "data" and (tmp_path / "link").is_symlink()


def test_zoo_add_never_replaces_a_folder_it_did_not_write(run, tmp_path):
    export_model(run, tmp_path / "out", repo_id="org/tiny")
    catalogue = tmp_path / "zoo" / "catalogue.json"
    catalogue.parent.mkdir()
    catalogue.write_text("[]")
    (tmp_path / "zoo" / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "zoo" / "models" / "tiny" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="--name .*tiny: not a previous export output"):
        add_to_zoo(tmp_path / "out", "tiny", catalogue_path=catalogue, models_dir=tmp_path / "zoo" / "models")
    assert catalogue.read_text() == "[]" and (tmp_path / "zoo" / "models" / "tiny" / "keep.txt").is_file()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_publish_killed_while_staging_leaves_debris_the_next_run_removes(run, tmp_path):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from equimod_zoo.atomic import staging_dir
        with staging_dir(Path({str(out)!r})) as stage:
            (stage / "model.safetensors").write_bytes(bytes(2**20))
            print("staged", flush=True)
            time.sleep(120)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "staged"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    debris = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert len(debris) == 1 and debris[0].name.endswith(".partial") and (debris[0] / "model.safetensors").is_file()
    export_model(run, out, repo_id="org/tiny")  # the next run cleans what the dead one left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert (out / WEIGHTS_FILE).is_file()


def test_a_swap_cut_between_its_renames_gives_the_previous_output_back(tmp_path):
    out = tmp_path / "out"
    old = tmp_path / f".out.{_dead_pid()}.0123abcd.old"
    old.mkdir()
    (old / "config.json").write_text("{}")
    stale = tmp_path / f".out.{_dead_pid()}.4567cdef.partial"
    stale.mkdir()
    live = tmp_path / f".out.{os.getpid()}.89abcdef.partial"  # a live process's staging is left alone
    live.mkdir()
    other = tmp_path / f".other.{_dead_pid()}.0123abcd.partial"  # another output's: not this run's to judge
    other.mkdir()
    assert sorted(p.name for p in clean_debris(out)) == sorted([old.name, stale.name])
    assert (out / "config.json").read_text() == "{}"  # restored, not deleted
    assert not stale.exists() and live.is_dir() and other.is_dir()
    with staging_dir(tmp_path / "other"):
        pass
    assert not other.exists()


@pytest.fixture
def tiny_model_folder(tmp_path, tiny_resnet18_cifar):
    from equimod_zoo.model_folder import write_model_folder

    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar",
                       model_args={"channels": (8, 16, 32, 64), "stem_width": 8})
    return tmp_path / "model"


def _images(folder: Path, count: int = 2) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("where", ["own files", "the images folder", "above the images folder"])
def test_extract_never_writes_into_a_folder_of_the_users_own_files(tmp_path, tiny_model_folder, where):
    images = _images(tmp_path / "photos" / "holiday")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes\n")
    out = {"own files": mine, "the images folder": images, "above the images folder": images.parent}[where]
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["extract", "--images", str(images), "--out", str(out),
                                      "--model", str(tiny_model_folder), "--device", "cpu", "--workers", "0"])
    _one_line_refusal(result, str(out))
    assert _snapshot(tmp_path) == before


def test_extract_writes_a_new_or_empty_folder_and_resumes_its_own(tmp_path, tiny_model_folder):
    images = _images(tmp_path / "photos")
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--images", str(images), "--model", str(tiny_model_folder), "--device", "cpu", "--workers", "0"]
    for out in (tmp_path / "new", empty, empty):  # the last: an earlier extraction, resumed
        result = CliRunner().invoke(app, ["extract", *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
    assert "1 of 1 shards already done" in result.output
