"""The GPU campaign's whole path on the CPU (--dry-run): queue -> calibrate -> train -> export -> parts within
what a GPU run brings back -> collect rebuilds loadable, checked models; and the queue as data."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

import equimod_zoo
from equimod_zoo.errors import UserError
from equimod_zoo.training import campaign, travel
from equimod_zoo.training.recipe import list_recipes, load_recipe
from toy_training import write_toy_parquet


def test_the_queue_names_shipped_recipes_in_issue_12s_order():
    items = campaign.read_queue()
    assert items[0].models == ["byol_equimod_r50_cifar10"] and items[1].models == ["byol_r50_cifar10"]
    assert [i.models for i in items[2:4]] == [["simclr_r18_cifar10", "simclr_equimod_r18_cifar10"],
                                              ["byol_r18_cifar10", "byol_equimod_r18_cifar10"]]
    recipes = set(list_recipes())
    for item in items:
        assert set(item.models) <= recipes, item.id
        assert set(item.init_from) <= set(item.models), item.id
        assert item.status in ("todo", "done")
        if all(name.startswith("byol") for name in item.models):  # the short-cycle target momentum
            assert item.overrides == {"method.momentum_base": 0.99}, item.id


def _queue(tmp_path, models):
    path = tmp_path / "queue.yaml"
    path.write_text("# the test's queue\nitems:\n" + yaml.safe_dump(
        [{"id": "pair-c1", "models": models, "epochs": None, "status": "todo"}]).replace("- ", "  - ", 1)
        .replace("\n  ", "\n    ").replace("\n- ", "\n  - "))
    return path


def files_under(folder: Path):
    return [p for p in folder.rglob("*") if p.is_file()]


def test_dry_run_fits_what_a_gpu_run_brings_back_and_collect_rebuilds_the_models(tmp_path, monkeypatch):
    data = write_toy_parquet(tmp_path, num_images=48)
    queue = _queue(tmp_path, ["byol_r18_cifar10", "byol_equimod_r18_cifar10"])
    # Small parts, so that the pair needs several calls: the first brings back what fits, `send` the rest.
    monkeypatch.setattr(campaign, "PART_BYTES", 64 * 1024)
    monkeypatch.setattr(campaign, "OUT_MAX_FILES", 4)
    outs = [tmp_path / "out0"]
    manifest = campaign.run(out=outs[0], minutes=5, data=data / "train.parquet", work=tmp_path / "work",
                            dry_run=True, queue=queue)
    assert manifest["epochs"] == 1 and not manifest["interrupted"]
    assert set(manifest["models"]) == {"byol_r18_cifar10", "byol_equimod_r18_cifar10"}
    while json.loads((tmp_path / "work" / "sent.json").read_text()) != [p["name"] for p in manifest["parts"]]:
        outs.append(tmp_path / f"out{len(outs)}")
        assert campaign.send(work=tmp_path / "work", out=outs[-1])
    for out in outs:  # each call's OUT: at most 8 (here 4) files, 16 MiB each, 64 MiB in all, 2 folders deep
        files = files_under(out)
        assert 1 < len(files) <= 4 and sum(f.stat().st_size for f in files) <= 64 * 2**20
        assert all(f.stat().st_size <= 16 * 2**20 and len(f.relative_to(out).parts) <= 3 for f in files)
    assert len(outs) > 1
    with pytest.raises(FileNotFoundError, match="campaign send"):  # a missing part is named
        campaign.collect(outs[:1], work=tmp_path / "partial", evaluate=False, queue=queue)
    folders = campaign.collect(outs, work=tmp_path / "here", evaluate=False, queue=queue)
    for name, folder in folders.items():
        model = equimod_zoo.load(folder)
        meta = json.loads((folder / "config.json").read_text())["equimod"]
        assert meta["weights_sha256"] == manifest["models"][name]["weights_sha256"]
        assert (folder / "equimod_heads.safetensors").is_file()  # heads to continue the cycle
        assert next(model.parameters()).dtype.is_floating_point and meta["cycles"][0]["epochs"] == 1
    assert campaign.read_queue(queue)[0].status == "todo"  # a dry run marks nothing done


def test_collect_refuses_a_damaged_part_and_marks_a_real_item_done(tmp_path):
    data = write_toy_parquet(tmp_path, num_images=32)
    queue = _queue(tmp_path, ["simclr_r18_cifar10"])
    campaign.run(out=tmp_path / "out", minutes=5, data=data / "train.parquet", work=tmp_path / "work", dry_run=True,
                 queue=queue)
    part = next((tmp_path / "out").glob("models.tar.*"))
    original = part.read_bytes()
    part.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ValueError, match="sha256 differs"):
        campaign.collect([tmp_path / "out"], work=tmp_path / "bad", evaluate=False, queue=queue)
    part.write_bytes(original)
    manifest_path = tmp_path / "out" / campaign.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["dry_run"] = False  # as a GPU run's manifest: collect then marks its item done
    manifest_path.write_text(json.dumps(manifest))
    campaign.collect([tmp_path / "out"], work=tmp_path / "good", evaluate=False, queue=queue)
    item = campaign.read_queue(queue)[0]
    assert item.status == "done" and item.done["simclr_r18_cifar10"]["epochs"] == 1
    assert queue.read_text().startswith("# the test's queue")
    with pytest.raises(ValueError, match="no item left"):
        campaign.next_item(queue)


def test_each_item_trains_recipes_of_its_own_method_and_a_pair_only_differs_by_equimod():
    for item in campaign.read_queue():
        for name in item.models:
            assert load_recipe(name).method.name == name.split("_r")[0]
        if len(item.models) == 2:  # a matched pair: same recipe but for the EquiMod module
            base, equimod = (load_recipe(n).to_dict() for n in item.models)
            assert base["method"]["name"] + "_equimod" == equimod["method"]["name"]
            for key in ("epochs", "batch_size", "seed", "optim", "augment", "arch", "data_size"):
                assert base[key] == equimod[key], (item.id, key)


class _FakeResult:
    def __init__(self, epochs):
        self.interrupted, self.epochs_completed, self.step = False, epochs, epochs * 98


def _fake_gpu(monkeypatch, speeds, trained, overrides_seen=None):
    """train() that writes a calibration log at `speeds` images/s and records the real runs; a stub export."""
    overrides_seen = [] if overrides_seen is None else overrides_seen
    def fake_train(recipe, *, out, epochs, batch_size, overrides, max_steps=None, resume=False, **kw):
        out.mkdir(parents=True, exist_ok=True)
        if max_steps is None:  # the real run, after calibration
            trained.append((out.name, epochs, resume))
            overrides_seen.append(overrides)
            (out / "log.csv").write_text("step\n")
            return _FakeResult(epochs)
        every, ips = overrides["log_every"], speeds[out.name]
        rows = [f"{s},{s / 98:.4f},{ips / 10 if s == every else ips}" for s in range(every, max_steps + 1, every)]
        (out / "log.csv").write_text("step,epoch,images_per_s\n" + "\n".join(rows) + "\n")

    def fake_export(folder, out, **kw):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"weights of " + folder.name.encode())
        return type("Exported", (), {"weights_sha256": folder.name})()

    monkeypatch.setattr("equimod_zoo.training.trainer.train", fake_train)
    monkeypatch.setattr("equimod_zoo.hub.export.export_model", fake_export)


def test_the_budget_fits_one_epoch_count_for_the_pair_from_timed_runs(tmp_path, monkeypatch):
    speeds = {"simclr_r18_cifar10": 1000.0, "simclr_equimod_r18_cifar10": 500.0}  # images per second
    trained = []
    _fake_gpu(monkeypatch, speeds, trained)
    queue = _queue(tmp_path, list(speeds))
    # A resumed model: its checkpoint is continued, not restarted.
    (tmp_path / "work" / "runs" / "simclr_equimod_r18_cifar10").mkdir(parents=True)
    (tmp_path / "work" / "runs" / "simclr_equimod_r18_cifar10" / "checkpoint.pt").write_bytes(b"")
    manifest = campaign.run(out=tmp_path / "out", minutes=10, data="data", work=tmp_path / "work", queue=queue)
    # 98 steps of 512 images an epoch: 50.2 s and 100.4 s; the slow first interval (warm-up) is not counted;
    # the export reserve comes off the 10 minutes.
    expected = int((600 - campaign.EXPORT_RESERVE_S) // (98 * 512 / 1000 + 98 * 512 / 500))
    assert trained == [("simclr_r18_cifar10", expected, False), ("simclr_equimod_r18_cifar10", expected, True)]
    assert manifest["epochs"] == expected
    assert manifest["calibrated_seconds_per_epoch"]["simclr_r18_cifar10"] == pytest.approx(98 * 512 / 1000, rel=1e-3)
    assert not (tmp_path / "work" / "calibration").exists()
    assert json.loads((tmp_path / "out" / campaign.MANIFEST_FILE).read_text())["epochs"] == expected


def test_an_item_with_fixed_epochs_trains_every_model_for_them_and_a_budget_too_short_is_refused(tmp_path,
                                                                                                 monkeypatch):
    trained, overrides = [], []
    _fake_gpu(monkeypatch, {"byol_r18_cifar10": 10.0, "byol_equimod_r18_cifar10": 10.0}, trained, overrides)
    queue = tmp_path / "queue.yaml"
    queue.write_text(yaml.safe_dump({"items": [{"id": "fixed", "models": ["byol_r18_cifar10", "byol_equimod_r18_cifar10"],
                                                "epochs": 38, "overrides": {"method.momentum_base": 0.99}}]}))
    manifest = campaign.run(out=tmp_path / "out", minutes=10, data="data", work=tmp_path / "work", queue=queue)
    assert [(name, epochs) for name, epochs, _ in trained] == [("byol_r18_cifar10", 38), ("byol_equimod_r18_cifar10", 38)]
    assert overrides == [{"method.momentum_base": 0.99}] * 2 and manifest["overrides"] == overrides[0]
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump({"items": [{"id": "slow", "models": ["byol_r18_cifar10"]}]}))
    with pytest.raises(ValueError, match="give more --minutes"):  # 10 images/s: one epoch is 83 minutes
        campaign.run(out=tmp_path / "out2", minutes=10, data="data", work=tmp_path / "work2", queue=slow)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout


def test_prepare_leaves_the_bundled_models_behind_only_when_asked_and_retrack_puts_them_back(tmp_path):
    root = tmp_path / "checkout"
    (root / travel.BUNDLED_MODELS / "m").mkdir(parents=True)
    weights = root / travel.BUNDLED_MODELS / "m" / "model.safetensors"
    weights.write_bytes(b"w" * 300_000)
    (root / "code.py").write_text("print(1)\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "c")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.parquet").write_bytes(b"p" * 100_000)
    options = dict(data=data, wheels=False, root=root.resolve(), limit=200_000)

    with pytest.raises(UserError, match="would send 0.4 MiB.*add --untrack-models"):
        campaign.prepare(root / ".gpu", **options)
    assert _git(root, "status", "--porcelain") == ""  # the refusal changed nothing; .gpu is ignored here

    size, total = campaign.prepare(root / ".gpu", untrack_models=True, **options)
    assert size == 100_000 and size < total < 200_000  # the folder and the code, not the weights
    assert not _git(root, "ls-files", travel.BUNDLED_MODELS) and weights.read_bytes() == b"w" * 300_000

    assert travel.retrack_bundled_models(root)
    assert _git(root, "status", "--porcelain") == "" and _git(root, "ls-files", travel.BUNDLED_MODELS)
    assert not travel.retrack_bundled_models(root)  # once only
    assert "/.gpu/" in (root / ".git" / "info" / "exclude").read_text()
