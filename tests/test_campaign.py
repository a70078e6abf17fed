"""The GPU campaign tool (tools/, not installed): the queue as data; the whole path on the CPU (--dry-run):
train to the minutes -> fp16 export -> parts within what one call returns -> collect rebuilds whatever has fully
arrived (a backbone before its heads) and loads it; what a call sends stays under its limit."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import equimod_zoo
from equimod_zoo.errors import UserError
from equimod_zoo.training.recipe import list_recipes, load_recipe
from toy_training import write_toy_parquet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import campaign  # noqa: E402
import parts  # noqa: E402
import travel  # noqa: E402


def test_the_queue_names_shipped_recipes_and_each_pair_differs_only_by_equimod():
    items = campaign.read_queue()
    assert items[0].models == ["byol_equimod_r50_cifar10"] and items[1].models == ["byol_r50_cifar10"]
    recipes = set(list_recipes())
    for item in items:
        assert set(item.models) <= recipes and set(item.init_from) <= set(item.models), item.id
        assert item.status in ("todo", "done")
        if all(name.startswith("byol") for name in item.models):  # the short-cycle target momentum
            assert item.overrides == {"method.momentum_base": 0.99}, item.id
        if item.init_from:  # a cycle item carries one ResNet-18 with its heads
            assert len(item.models) == 1, item.id
        if len(item.models) == 2:  # a matched pair, the slower EquiMod model first: it sets the epochs
            equimod, base = (load_recipe(n).to_dict() for n in item.models)
            assert base["method"]["name"] + "_equimod" == equimod["method"]["name"]
            for key in ("epochs", "batch_size", "seed", "optim", "augment", "arch", "data_size"):
                assert base[key] == equimod[key], (item.id, key)


def test_the_package_ships_no_campaign():
    import equimod_zoo.training as training

    folder = Path(training.__file__).parent
    assert not any((folder / name).exists() for name in ("campaign.py", "travel.py", "campaign_queue.yaml"))


def _queue(tmp_path, models, epochs=1):
    path = tmp_path / "queue.yaml"
    path.write_text("# the test's queue\n" + yaml.safe_dump(
        {"items": [{"id": "item-c1", "models": models, "epochs": epochs, "status": "todo"}]}))
    return path


def files_under(folder: Path):
    return [p for p in folder.rglob("*") if p.is_file()]


def test_a_dry_run_returns_backbones_first_within_each_calls_limits_and_collect_rebuilds_them(tmp_path,
                                                                                             monkeypatch):
    data = write_toy_parquet(tmp_path, num_images=32)
    queue = _queue(tmp_path, ["byol_equimod_r18_cifar10", "byol_r18_cifar10"])
    # small parts and calls, so that the pair needs several calls, as a ResNet-50 with its heads does on a GPU
    monkeypatch.setattr(parts, "PART_BYTES", 128 * 1024)  # a tiny backbone (~450 KB in fp16) is 4 parts
    monkeypatch.setattr(parts, "OUT_MAX_BYTES", 640 * 1024)
    work = tmp_path / "work"
    outs = [tmp_path / "out0"]
    manifest = campaign.run(out=outs[0], minutes=2, data=data, work=work, dry_run=True, queue=queue)
    assert not manifest["errors"] and set(manifest["models"]) == {"byol_equimod_r18_cifar10", "byol_r18_cifar10"}
    assert all(m["epochs"] == 1 and m["steps"] == 2 for m in manifest["models"].values())
    item_work = next(work.iterdir())
    while json.loads((item_work / parts.SENT_FILE).read_text()) != [p["name"] for p in manifest["parts"]]:
        outs.append(tmp_path / f"out{len(outs)}")
        parts.send(work=item_work, out=outs[-1])
    for out in outs:  # each call: at most 8 files, 16 MiB each (here 128 KiB parts), its bytes, 2 folders deep
        files = files_under(out)
        assert 1 < len(files) <= parts.OUT_MAX_FILES and sum(f.stat().st_size for f in files) <= parts.OUT_MAX_BYTES
        assert all(f.stat().st_size <= 16 * 2**20 and len(f.relative_to(out).parts) <= 3 for f in files)
    assert len(outs) > 1
    first = campaign.collect(outs[:1], work=tmp_path / "partial", queue=queue)
    assert set(first) == {"byol_equimod_r18_cifar10"}  # its backbone came in the first call...
    assert not (first["byol_equimod_r18_cifar10"] / "equimod_heads.safetensors").exists()  # ... its heads not yet
    equimod_zoo.load(first["byol_equimod_r18_cifar10"])
    folders = campaign.collect(outs, work=tmp_path / "here", queue=queue)
    assert set(folders) == set(manifest["models"])
    for name, folder in folders.items():
        meta = json.loads((folder / "config.json").read_text())["equimod"]
        assert meta["weights_sha256"] == manifest["weights_sha256"][name] and meta["steps"] == 2
        assert (folder / "equimod_heads.safetensors").is_file()  # the heads a next cycle needs
        equimod_zoo.load(folder)
    assert campaign.read_queue(queue)[0].status == "todo"  # a dry run marks nothing done


def test_a_resnet50_with_its_heads_comes_back_backbone_first_in_two_calls():
    mib = 2**20  # an fp16 ResNet-50 (47 MB) with BYOL+EquiMod heads (41 MB), in 15 MiB parts
    backbone = [15 * mib, 15 * mib, 14 * mib + 900_000]
    heads = [15 * mib, 15 * mib, 8 * mib]
    calls = parts.schedule(backbone + heads, first_bytes=8_000, max_files=8, max_bytes=64 * mib)
    assert len(calls) == 2 and set(range(len(backbone))) <= set(calls[0])
    for call in calls:
        assert len(call) + 1 <= 8 and sum((backbone + heads)[i] for i in call) + 8_000 <= 64 * mib


def test_collect_refuses_a_damaged_part_and_marks_a_real_item_done(tmp_path):
    data = write_toy_parquet(tmp_path, num_images=32)
    queue = _queue(tmp_path, ["simclr_r18_cifar10"])
    campaign.run(out=tmp_path / "out", minutes=1, data=data, work=tmp_path / "work", dry_run=True, queue=queue)
    part = next((tmp_path / "out").glob("*.backbone.000"))
    original = part.read_bytes()
    part.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(UserError, match="sha256 differs"):
        campaign.collect([tmp_path / "out"], work=tmp_path / "bad", queue=queue)
    part.write_bytes(original)
    manifest_path = tmp_path / "out" / parts.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["dry_run"] = False  # as a GPU run's manifest: collect then marks its item done
    manifest_path.write_text(json.dumps(manifest))
    campaign.collect([tmp_path / "out"], work=tmp_path / "good", release=False, queue=queue)
    item = campaign.read_queue(queue)[0]
    assert item.status == "done" and item.done["simclr_r18_cifar10"]["epochs"] == 1
    assert queue.read_text().startswith("# the test's queue")
    with pytest.raises(UserError, match="no item left"):
        campaign.next_item(queue)


def test_a_failure_in_training_still_returns_what_was_trained(tmp_path, monkeypatch):
    from equimod_zoo.training import trainer

    data = write_toy_parquet(tmp_path, num_images=32)
    queue = _queue(tmp_path, ["simclr_equimod_r18_cifar10", "simclr_r18_cifar10"])
    real = trainer.train

    def failing_second(recipe, **kwargs):
        if recipe == "simclr_r18_cifar10":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(recipe, **kwargs)

    monkeypatch.setattr(trainer, "train", failing_second)
    manifest = campaign.run(out=tmp_path / "out", minutes=1, data=data, work=tmp_path / "work", dry_run=True,
                            queue=queue)
    assert manifest["errors"] == ["RuntimeError: CUDA error: an illegal memory access was encountered"]
    assert set(manifest["weights_sha256"]) == {"simclr_equimod_r18_cifar10"}
    folders = campaign.collect([tmp_path / "out"], work=tmp_path / "here", queue=queue)
    equimod_zoo.load(folders["simclr_equimod_r18_cifar10"])


def test_the_version_check_is_one_line_and_refuses_what_pyproject_does_not_allow(monkeypatch, capsys):
    found = campaign.check_versions()
    line = capsys.readouterr().out.strip()
    assert line.startswith("versions: python ") and "\n" not in line and found["torch"] in line
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "2.0.0" if name == "torch" else real(name))
    with pytest.raises(UserError, match=r"torch 2\.0\.0 \(needs >=2\.11\)"):
        campaign.check_versions()


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
    queue = _queue(tmp_path, ["simclr_r18_cifar10"])
    options = dict(data=data, wheels=False, root=root.resolve(), limit=200_000, queue=queue)

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


def test_prepare_carries_a_cycles_model_with_its_heads_only(tmp_path):
    root = tmp_path / "checkout"
    root.mkdir()
    _git(root, "init", "-q")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.parquet").write_bytes(b"p" * 1000)
    queue = tmp_path / "queue.yaml"
    queue.write_text(yaml.safe_dump({"items": [{"id": "c2", "models": ["simclr_equimod_r18_cifar10"],
                                                "init_from": {"simclr_equimod_r18_cifar10": "simclr_equimod_r18_cifar10"}}]}))
    size, total = campaign.prepare(root / ".gpu", data=data, queue=queue, wheels=False, root=root.resolve())
    carried = sorted(p.name for p in (root / ".gpu" / "init" / "simclr_equimod_r18_cifar10").iterdir())
    assert carried == ["config.json", "equimod_heads.safetensors", "model.safetensors"]
    assert total < 64 * 2**20  # a ResNet-18 with its heads and the data fit one call
    queue.write_text(yaml.safe_dump({"items": [{"id": "c2", "models": ["byol_r18_cifar10"],
                                                "init_from": {"byol_r18_cifar10": "byol_r18_cifar10"}}]}))
    with pytest.raises(UserError, match="no equimod_heads.safetensors"):
        campaign.prepare(root / ".gpu2", data=data, queue=queue, wheels=False, root=root.resolve())


def test_the_step_check_runs_the_real_step_and_says_so_in_one_line(tmp_path):
    from equimod_zoo.training.step_check import check_step

    data = write_toy_parquet(tmp_path, num_images=32)
    check = check_step("byol_equimod_r18_cifar10", data=data, device="cpu", steps=2, batch_size=16,
                       overrides={**campaign.DRY_RUN, "precision": "fp32"}, cache_dir=tmp_path / "cache")
    assert check.steps == 2 and check.seconds_per_step > 0 and check.autocast == "fp32"
    assert check.sync_free is None  # host syncs are caught on CUDA only
    assert check.summary().startswith("step check on cpu: 2 steps, fp32, compile off")
