"""Publishing: the exact Hub calls (mocked at the network boundary), the zoo bundle (`zoo-add`), and no token
anywhere."""
import inspect
import json
import shutil
from types import SimpleNamespace

from pathlib import Path

import pytest
from test_export_card import make_run_folder, records_dir
from huggingface_hub import HfApi
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.json_file import read_json
from equimod_zoo.constants import WEIGHTS_FILE
from equimod_zoo.hub import publish as publish_module
from equimod_zoo.hub.publish import publish
from equimod_zoo.hub.zoo_bundle import add_to_zoo
from equimod_zoo.model_folder import sha256_file
from equimod_zoo.records import ZOO_RECORDS_DIR
from equimod_zoo.registry import BUNDLED_MODELS_DIR, CATALOGUE_FILE, Catalogue

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
    """A temporary copy of the real catalogue and its records, and an empty models folder."""
    catalogue = tmp_path / "zoo" / "catalogue.json"
    catalogue.parent.mkdir()
    shutil.copyfile(CATALOGUE_FILE, catalogue)
    shutil.copytree(ZOO_RECORDS_DIR, tmp_path / "zoo" / "records", ignore=shutil.ignore_patterns(".lock"))
    return SimpleNamespace(catalogue=catalogue, models=tmp_path / "zoo" / "models", records=tmp_path / "zoo" / "records")


def _installed_zoo() -> dict:
    """Every file of the installed package's zoo, so a test can show that publishing never edits it."""
    return {p: p.read_bytes() for folder in (CATALOGUE_FILE.parent,) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".safetensors" and "__pycache__" not in p.parts and p.name != ".lock"}


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
    # an uploaded folder names its repository, and its card shows hf-hub usage
    assert json.loads((tmp_path / "out" / "config.json").read_text())["equimod"]["hf_hub_id"] == "equimod-zoo/tiny"
    assert 'timm.create_model("hf-hub:equimod-zoo/tiny", pretrained=True)' in (tmp_path / "out" / "README.md").read_text()


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
    path = next(records_dir(run).glob("*.json"))
    data = json.loads(path.read_text())
    data["weights_sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="holds records of weights 0"):
        publish(run, repo_id="org/tiny", out=tmp_path / "out", records_dirs=[records_dir(run)])
    assert hub.calls == [] and not (tmp_path / "out").exists()


def test_publish_never_edits_the_installed_package(hub, run, tmp_path):
    before = _installed_zoo()
    publish(run, repo_id="org/tiny", out=tmp_path / "out", records_dirs=[records_dir(run)])
    publish(run, repo_id="org/tiny", out=tmp_path / "dry", dry_run=True, records_dirs=[records_dir(run)])
    assert _installed_zoo() == before
    assert "zoo_entry" not in inspect.signature(publish).parameters


def test_zoo_add_updates_the_entry_and_bundles_a_loadable_folder(hub, run, tmp_path, zoo):
    before = {r["name"]: r for r in json.loads(zoo.catalogue.read_text())}
    installed = _installed_zoo()
    publish(run, repo_id="org/tiny", out=tmp_path / "out", dry_run=True)
    entry = add_to_zoo(tmp_path / "out", "simclr_equimod_r18_cifar10", hf_hub_id="org/tiny",
                       records_dirs=[records_dir(run)], catalogue_path=zoo.catalogue, models_dir=zoo.models)
    rows = {r["name"]: r for r in json.loads(zoo.catalogue.read_text())}
    row = rows["simclr_equimod_r18_cifar10"]
    sha = sha256_file(tmp_path / "out" / WEIGHTS_FILE)
    assert row["status"] == "available" and row["folder"] == "simclr_equimod_r18_cifar10"
    assert row["sha256"] == sha and row["epochs"] == 3 and row["hf_hub_id"] == "org/tiny"
    # what the weights were trained with replaces the plan
    assert row["num_train_images"] == 50000 and row["recipe"] == "simclr_equimod_r18_cifar10"
    assert "for 3 epochs" in row["notes"] and "not trained yet" not in row["notes"]
    # the numbers are the zoo's records of these weights, never written in the catalogue
    assert "metrics" not in row
    assert {(m.metric, m.value, m.weights_sha256) for m in entry.metrics} == {("top1", 41.2345, sha),
                                                                            ("knn_top1", 38.5, sha)}
    assert (zoo.records / f"{sha}.json").is_file()
    assert all(rows[name] == before[name] for name in rows if name != "simclr_equimod_r18_cifar10")  # untouched
    assert entry.status == "available"
    bundled = zoo.models / "simclr_equimod_r18_cifar10"
    assert sha256_file(bundled / WEIGHTS_FILE) == sha
    card = (bundled / "README.md").read_text()
    assert 'equimod_zoo.load("simclr_equimod_r18_cifar10")' in card and "| 41.23 |" in card
    assert 'timm.create_model("hf-hub:org/tiny", pretrained=True)' in card  # published: hf-hub usage
    assert equimod_zoo.load(bundled).num_features == 64
    Catalogue.from_file(zoo.catalogue)  # still a valid catalogue
    assert _installed_zoo() == installed  # the real zoo untouched


def test_zoo_add_without_a_hub_id_and_a_new_name_gets_a_new_entry(hub, run, tmp_path, zoo):
    publish(run, repo_id="org/tiny", out=tmp_path / "out", dry_run=True)
    add_to_zoo(tmp_path / "out", "tiny_simclr_equimod_r18", catalogue_path=zoo.catalogue, models_dir=zoo.models)
    rows = {r["name"]: r for r in json.loads(zoo.catalogue.read_text())}
    row = rows["tiny_simclr_equimod_r18"]
    assert row["hf_hub_id"] is None and row["method"] == "simclr_equimod" and row["arch"] == "resnet18_cifar"
    assert row["data"] == "cifar10" and row["num_train_images"] == 50000 and row["epochs"] == 3
    assert len(rows) == len(json.loads(CATALOGUE_FILE.read_text())) + 1
    assert "hf-hub:" not in (zoo.models / "tiny_simclr_equimod_r18" / "README.md").read_text()


def test_zoo_entry_of_another_method_is_refused_and_nothing_changes(run, tmp_path, zoo):
    publish(run, repo_id="org/tiny", out=tmp_path / "out", dry_run=True)
    before = zoo.catalogue.read_text()
    with pytest.raises(ValueError, match="method 'simclr_equimod' differs from zoo entry 'byol_r18_cifar10'"):
        add_to_zoo(tmp_path / "out", "byol_r18_cifar10", catalogue_path=zoo.catalogue, models_dir=zoo.models)
    assert zoo.catalogue.read_text() == before and not zoo.models.exists()
    with pytest.raises(ValueError, match="over the 0 MB"):
        add_to_zoo(tmp_path / "out", "simclr_equimod_r18_cifar10", catalogue_path=zoo.catalogue,
                   models_dir=zoo.models, max_weights_mb=0)


def test_zoo_add_command_and_the_probe_report(hub, run, tmp_path, zoo, monkeypatch):
    from equimod_zoo.hub import zoo_bundle

    publish(run, repo_id="org/tiny", out=tmp_path / "out", dry_run=True)
    sha = sha256_file(tmp_path / "out" / WEIGHTS_FILE)
    report = tmp_path / "probe.json"
    report.write_text(json.dumps({"model": str(tmp_path / "out"), "weights_sha256": sha, "dataset": "cifar10",
                                  "results": [{"parameter": "hue", "r2": 0.25}]}))
    real = zoo_bundle.add_to_zoo
    monkeypatch.setattr(zoo_bundle, "add_to_zoo", lambda *a, **k: real(*a, **k, catalogue_path=zoo.catalogue,
                                                                       models_dir=zoo.models))
    result = CliRunner().invoke(app, ["zoo-add", str(tmp_path / "out"), "--name", "tiny_new", "--records",
                                      str(records_dir(run)), "--probe-report", str(report)])
    assert result.exit_code == 0, result.output
    assert "zoo entry tiny_new: available, 2 recorded number(s)" in result.output
    bundled = json.loads((zoo.models / "tiny_new" / "probe_augs.json").read_text())
    assert bundled["model"] == "tiny_new"  # the report names the entry, not a path on this machine
    assert "| hue | 0.25 |" in (zoo.models / "tiny_new" / "README.md").read_text()
    report.write_text(json.dumps({"weights_sha256": "1" * 64}))
    bad = CliRunner().invoke(app, ["zoo-add", str(tmp_path / "out"), "--name", "tiny_new", "--probe-report",
                                   str(report)])
    assert bad.exit_code == 2 and "measured on weights 1" in bad.output and "Traceback" not in bad.output


def test_publishing_a_zoo_entry_names_it_on_the_card(hub, tmp_path):
    publish("simclr_r18_cifar10", repo_id="org/simclr", out=tmp_path / "out", dry_run=True)
    card = (tmp_path / "out" / "README.md").read_text()
    assert 'equimod_zoo.load("simclr_r18_cifar10")' in card and "| 78.58 |" in card  # the zoo's records
    assert sha256_file(tmp_path / "out" / WEIGHTS_FILE) == sha256_file(
        BUNDLED_MODELS_DIR / "simclr_r18_cifar10" / WEIGHTS_FILE)


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


def test_release_evaluates_into_records_bundles_and_publishes_once(tmp_path, tiny_resnet18_cifar, monkeypatch):
    """hub.release.release_model on tiny data: export fp16 once, every evaluation recorded outside the weights
    folder with the command that measures it again, the zoo bundled and the documents regenerated (stubbed
    here: the test leaves the installed zoo alone), and with upload=True one upload."""
    import equimod_zoo.hub.model_cards as model_cards
    import equimod_zoo.hub.publish as publish_module
    import equimod_zoo.hub.zoo_bundle as zoo_bundle
    from equimod_zoo.hub.release import release_model
    from equimod_zoo.records import read_records
    from test_export_card import make_run_folder
    from test_transfer import write_parquet

    make_run_folder(tmp_path / "run", tiny_resnet18_cifar, results=False)
    data = tmp_path / "data"
    write_parquet(data / "cifar10-jpeg", {"train": 40, "test": 30})
    write_parquet(data / "flowers102", {"train": 24, "validation": 12, "test": 15})
    calls, real_publish = [], publish_module.publish

    def publish(source, **kwargs):
        if kwargs.get("dry_run"):
            return real_publish(source, **kwargs)
        calls.append(("upload", kwargs["repo_id"]))
        (Path(kwargs["out"])).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(publish_module, "publish", publish)
    monkeypatch.setattr(zoo_bundle, "add_to_zoo", lambda folder, name, **kw: calls.append(("zoo-add", name, kw)))
    monkeypatch.setattr(model_cards, "write_model_cards", lambda **kw: calls.append(("model-cards",)))
    work = tmp_path / "release"
    result = release_model(tmp_path / "run", "tiny", work=work, data=data, device="cpu", probe_images=24, upload=True)
    folder = work / "tiny"
    weights = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert result.folder == folder and str(read_json(folder / "config.json")["equimod"]["written_by"]) == "export"
    records = read_records(result.records)
    assert {(r.dataset, r.metric) for r in records} == {("cifar10", "top1"), ("cifar10", "knn_top1"),
                                                         ("flowers102", "mean_per_class_accuracy")}
    linear = next(r for r in records if r.metric == "top1")
    assert linear.command.startswith("equimod-zoo linear --train ") and "--record" not in linear.command
    assert not [word for word in linear.command.split() if word.startswith("/")]  # retyped from the repository
    assert read_json(result.probe_report)["weights_sha256"] == records[0].weights_sha256
    assert [c[0] for c in calls] == ["zoo-add", "model-cards", "upload", "zoo-add", "model-cards"]
    assert calls[0][2]["records_dirs"] == [result.records] and calls[0][2]["probe_report"] == result.probe_report
    again = release_model(tmp_path / "run", "tiny", work=work, data=data, device="cpu", probe_images=24,
                          bundle=False)  # measured again: the weights folder is not rewritten
    assert again.folder == folder and {p.name: p.read_bytes() for p in folder.iterdir()} == weights
