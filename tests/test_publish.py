"""Publishing: the exact Hub calls (mocked at the network boundary), the zoo bundle, and no token anywhere."""
import inspect
import json
import shutil
from types import SimpleNamespace

import pytest
from test_export_card import make_run_folder
from huggingface_hub import HfApi
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.hub import publish as publish_module
from equimod_zoo.hub.publish import publish
from equimod_zoo.hub.zoo_bundle import add_to_zoo
from equimod_zoo.model_folder import WEIGHTS_FILE, sha256_file
from equimod_zoo.registry import CATALOGUE_FILE, Catalogue

SENTINEL = "hf_SENTINELtokenDoNotLeak0123456789"


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi and records every call with its arguments."""

    calls: list = []

    def __init__(self, *args, **kwargs):
        FakeHfApi.calls.append(("__init__", args, kwargs))

    def create_repo(self, *args, **kwargs):
        FakeHfApi.calls.append(("create_repo", args, kwargs))
        return SimpleNamespace(repo_id=args[0])

    def create_branch(self, *args, **kwargs):
        FakeHfApi.calls.append(("create_branch", args, kwargs))

    def upload_folder(self, **kwargs):
        FakeHfApi.calls.append(("upload_folder", (), kwargs))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123")


@pytest.fixture
def hub(monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr(publish_module, "HfApi", FakeHfApi)
    return FakeHfApi


@pytest.fixture
def run(tmp_path, tiny_resnet18_cifar):
    make_run_folder(tmp_path / "run", tiny_resnet18_cifar)
    return tmp_path / "run"


@pytest.fixture
def zoo(tmp_path):
    """A temporary copy of the real catalogue and an empty models folder."""
    catalogue = tmp_path / "zoo" / "catalogue.json"
    catalogue.parent.mkdir()
    shutil.copyfile(CATALOGUE_FILE, catalogue)
    return SimpleNamespace(catalogue=catalogue, models=tmp_path / "zoo" / "models")


def test_publish_creates_repo_then_uploads_the_checked_folder(hub, run, tmp_path):
    result = publish(run, repo_id="equimod-zoo/tiny", out=tmp_path / "out", commit_message="first upload",
                     private=True)
    assert hub.calls == [
        ("__init__", (), {}),
        ("create_repo", ("equimod-zoo/tiny",), {"exist_ok": True, "private": True}),
        ("upload_folder", (), {"repo_id": "equimod-zoo/tiny", "folder_path": str(tmp_path / "out"),
                               "commit_message": "first upload", "revision": None}),
    ]
    assert result.commit_url == "https://huggingface.co/equimod-zoo/tiny/commit/abc123"
    assert result.zoo_entry is None


def test_publish_to_a_revision_creates_the_branch_first(hub, run, tmp_path):
    publish(run, repo_id="org/tiny", out=tmp_path / "out", revision="v1")
    names = [c[0] for c in hub.calls]
    assert names == ["__init__", "create_repo", "create_branch", "upload_folder"]
    assert hub.calls[1][2] == {"exist_ok": True, "private": False}
    assert hub.calls[2] == ("create_branch", ("org/tiny",), {"branch": "v1", "exist_ok": True})
    assert hub.calls[3][2]["revision"] == "v1" and hub.calls[3][2]["commit_message"]


def test_recorded_calls_fit_the_installed_huggingface_hub_signatures(hub, run, tmp_path):
    publish(run, repo_id="org/tiny", out=tmp_path / "out", revision="v1", private=True)
    for name, args, kwargs in hub.calls[1:]:
        inspect.signature(getattr(HfApi, name)).bind(HfApi(), *args, **kwargs)  # TypeError if they drifted


def test_dry_run_uploads_nothing(hub, run, tmp_path):
    result = publish(run, repo_id="org/tiny", out=tmp_path / "out", dry_run=True)
    assert hub.calls == [] and result.commit_url is None
    assert (tmp_path / "out" / WEIGHTS_FILE).is_file()


def test_failed_checks_upload_nothing(hub, run, tmp_path):
    config = json.loads((run / "config.json").read_text())
    config["equimod"]["results"][0]["weights_sha256"] = "0" * 64
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="measured on weights"):
        publish(run, repo_id="org/tiny", out=tmp_path / "out")
    assert hub.calls == [] and not (tmp_path / "out").exists()


def test_publish_into_the_zoo_updates_the_entry_and_bundles_a_loadable_folder(hub, run, tmp_path, zoo):
    real_catalogue = CATALOGUE_FILE.read_text()
    before = {r["name"]: r for r in json.loads(zoo.catalogue.read_text())}
    result = publish(run, repo_id="org/tiny", out=tmp_path / "out", zoo_entry="simclr_equimod_r18_cifar10",
                     catalogue_path=zoo.catalogue, models_dir=zoo.models)
    rows = {r["name"]: r for r in json.loads(zoo.catalogue.read_text())}
    row = rows["simclr_equimod_r18_cifar10"]
    sha = sha256_file(tmp_path / "out" / WEIGHTS_FILE)
    assert row["status"] == "available" and row["folder"] == "simclr_equimod_r18_cifar10"
    assert row["sha256"] == sha and row["epochs"] == 3 and row["hf_hub_id"] == "org/tiny"
    # what the weights were trained with replaces the plan
    assert row["num_train_images"] == 50000 and row["recipe"] == "simclr_equimod_r18_cifar10"
    assert "for 3 epochs" in row["notes"] and "not trained yet" not in row["notes"]
    assert {(m["name"], m["value"], m["weights_sha256"]) for m in row["metrics"]} == {
        ("top1", 41.2345, sha), ("knn_top1", 38.5, sha)}
    assert all(rows[name] == before[name] for name in rows if name != "simclr_equimod_r18_cifar10")  # untouched
    assert result.zoo_entry.status == "available"
    bundled = zoo.models / "simclr_equimod_r18_cifar10"
    assert sha256_file(bundled / WEIGHTS_FILE) == sha
    assert 'equimod_zoo.load("simclr_equimod_r18_cifar10")' in (bundled / "README.md").read_text()
    assert equimod_zoo.load(bundled).num_features == 64
    Catalogue.from_file(zoo.catalogue)  # still a valid catalogue
    assert CATALOGUE_FILE.read_text() == real_catalogue  # the real one untouched


def test_dry_run_zoo_entry_has_no_hub_id_and_a_new_name_gets_a_new_entry(hub, run, tmp_path, zoo):
    publish(run, repo_id="org/tiny", out=tmp_path / "out", dry_run=True, zoo_entry="tiny_simclr_equimod_r18",
            catalogue_path=zoo.catalogue, models_dir=zoo.models)
    rows = {r["name"]: r for r in json.loads(zoo.catalogue.read_text())}
    row = rows["tiny_simclr_equimod_r18"]
    assert row["hf_hub_id"] is None and row["method"] == "simclr_equimod" and row["arch"] == "resnet18_cifar"
    assert row["data"] == "cifar10" and row["num_train_images"] == 50000 and row["epochs"] == 3
    assert len(rows) == len(json.loads(CATALOGUE_FILE.read_text())) + 1


def test_zoo_entry_of_another_method_is_refused_and_nothing_changes(run, tmp_path, zoo):
    publish(run, repo_id="org/tiny", out=tmp_path / "out", dry_run=True)
    before = zoo.catalogue.read_text()
    with pytest.raises(ValueError, match="method 'simclr_equimod' differs from zoo entry 'byol_r18_cifar10'"):
        add_to_zoo(tmp_path / "out", "byol_r18_cifar10", catalogue_path=zoo.catalogue, models_dir=zoo.models)
    assert zoo.catalogue.read_text() == before and not zoo.models.exists()
    with pytest.raises(ValueError, match="over the 0 MB"):
        add_to_zoo(tmp_path / "out", "simclr_equimod_r18_cifar10", catalogue_path=zoo.catalogue,
                   models_dir=zoo.models, max_weights_mb=0)


def test_token_never_reaches_a_file_or_the_output(hub, run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    result = CliRunner().invoke(app, ["publish", str(run), "--repo-id", "org/tiny", "--out", str(tmp_path / "out"),
                                      "--revision", "main", "--commit-message", "upload"])
    assert result.exit_code == 0, result.output
    assert "uploaded to https://huggingface.co/org/tiny/commit/abc123" in result.output
    assert SENTINEL not in result.output
    assert all(SENTINEL not in repr(call) for call in hub.calls)  # huggingface_hub finds the token itself
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SENTINEL.encode() not in path.read_bytes(), path


def test_cli_errors_are_one_line(hub, run, tmp_path):
    result = CliRunner().invoke(app, ["publish", str(tmp_path / "absent"), "--repo-id", "org/tiny",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "error:" in result.output and "absent" in result.output
    assert "Traceback" not in result.output and hub.calls == []
