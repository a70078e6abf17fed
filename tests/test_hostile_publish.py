"""Hostile publishing inputs (issue 23, class 8): a repository id that is a path or a shell command, a records
file whose numbers are not numbers, a records folder that is not there: one line each, nothing written."""
from __future__ import annotations

import json

import pytest
from hostile import one_line_error, snapshot
from test_export_card import make_run_folder
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.errors import UserError
from equimod_zoo.hub.zoo_bundle import add_to_zoo
from equimod_zoo.records import read_records


@pytest.fixture
def run(tmp_path, tiny_resnet18_cifar):
    make_run_folder(tmp_path / "run", tiny_resnet18_cifar, results=False)
    return tmp_path / "run"


def _publish(run, out, *extra, repo_id="org/tiny"):
    return CliRunner().invoke(app, ["publish", str(run), "--repo-id", repo_id, "--out", str(out), "--dry-run", *extra])


@pytest.mark.parametrize("repo_id", ["", "../../etc", "org/../../home", "org/name; rm -rf ~", "$(touch pwned)/x",
                                     "org/name/extra", "tiny", "org/" + "n" * 97, "org/na\nme"])
def test_a_repository_id_that_is_not_one_is_refused_in_one_line(run, tmp_path, monkeypatch, repo_id):
    monkeypatch.chdir(tmp_path)
    before = snapshot(run)
    result = _publish(run, tmp_path / "out", repo_id=repo_id)
    one_line_error(result, "--repo-id", "not a Hugging Face repository id; expected ORG/NAME")
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()
    assert snapshot(run) == before


@pytest.mark.parametrize(("row", "needle"), [
    ({"value": "78.6"}, "records[0].value must be a number, got '78.6'"),
    ({"value": None}, "records[0].value"),
    ({"value": float("nan")}, "records[0].value is nan, not a measured number"),
    ({"value": True}, "records[0].value must be a number"),
    ({"date": 20261201}, "records[0].date must be a string"),
    ({"command": ["equimod-zoo", "linear"]}, "records[0].command must be a string"),
])
def test_a_records_value_of_the_wrong_type_is_one_line_naming_the_file_and_key(run, tmp_path, row, needle):
    sha = json.loads((run / "config.json").read_text())["equimod"]["weights_sha256"]
    records = tmp_path / "records"
    records.mkdir()
    good = {"dataset": "cifar10", "split": "test", "protocol": "linear", "metric": "top1", "value": 41.5,
            "command": "equimod-zoo linear", "date": "2026-12-01", "version": "0.1.0"}
    (records / f"{sha}.json").write_text(json.dumps({"weights_sha256": sha, "records": [{**good, **row}]}))
    before = snapshot(run, records)
    result = _publish(run, tmp_path / "out", "--records", str(records))
    one_line_error(result, f"{sha}.json", needle)
    assert not (tmp_path / "out").exists() and snapshot(run, records) == before


@pytest.mark.parametrize("content", ['{"weights_sha256": "SHA", "records": {"value": 1}}',
                                     '{"weights_sha256": "SHA", "records": [[1, 2]]}', "not json", "\xff\xfe"])
def test_a_records_file_of_the_wrong_shape_is_one_line(tmp_path, content):
    sha = "ab" * 32
    (tmp_path / f"{sha}.json").write_text(content.replace("SHA", sha), encoding="latin-1")
    with pytest.raises(UserError, match=f"{sha}.json: "):
        read_records(tmp_path, sha)


def test_a_records_folder_that_does_not_exist_is_an_error_not_an_empty_card(run, tmp_path):
    result = _publish(run, tmp_path / "out", "--records", str(tmp_path / "recrods"))
    one_line_error(result, "--records", "recrods: no such records folder")
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    one_line_error(_publish(run, tmp_path / "out", "--records", str(tmp_path / "file")), "file: not a folder")
    with pytest.raises(UserError, match="no such records folder"):
        add_to_zoo(run, "tiny", records_dirs=[tmp_path / "recrods"], catalogue_path=tmp_path / "c.json",
                   models_dir=tmp_path / "models")
    with pytest.raises(UserError, match="--hf-hub-id '../x': not a Hugging Face repository id"):
        add_to_zoo(run, "tiny", hf_hub_id="../x", catalogue_path=tmp_path / "c.json", models_dir=tmp_path / "models")
    assert not (tmp_path / "models").exists() and not (tmp_path / "c.json").exists()
