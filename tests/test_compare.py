"""`compare`: EquiMod/baseline pairing, the markdown, CSV and PNG outputs, and reuse of cached results."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from equimod_zoo.method import Method
from equimod_zoo.probes import frozen
from equimod_zoo.transfer.compare import (ModelIdentity, Pairing, Score, compare, model_identity,
                                          parse_data_dir_map, write_comparison)

COLOURS = ((220, 40, 40), (40, 200, 60), (40, 60, 220))



def identity(method: str, epochs: int = 100) -> ModelIdentity:
    return ModelIdentity(Method.parse(method), "resnet18", "cifar10", epochs)


def scores() -> list[Score]:
    ids = {name: identity(name.removesuffix("_r18")) for name in
           ("simclr_r18", "simclr_equimod_r18", "byol_r18", "byol_equimod_r18")}
    return [
        Score("simclr_r18", "flowers102", "linear", "mean_per_class_accuracy", 80.0, identity=ids["simclr_r18"]),
        Score("byol_equimod_r18", "flowers102", "linear", "mean_per_class_accuracy", 84.0,
              identity=ids["byol_equimod_r18"]),
        Score("simclr_equimod_r18", "flowers102", "linear", "mean_per_class_accuracy", 83.5,
              identity=ids["simclr_equimod_r18"]),
        Score("byol_r18", "flowers102", "linear", "mean_per_class_accuracy", 82.0, identity=ids["byol_r18"]),
        Score("simclr_r18", "cifar10", "linear", "top1", 90.0, identity=ids["simclr_r18"]),
        Score("simclr_equimod_r18", "cifar10", "linear", "top1", 91.25, identity=ids["simclr_equimod_r18"]),
    ]


def test_pairs_sit_side_by_side_baseline_first():
    pairing = Pairing.of_identities({
        "simclr_r18": identity("simclr"), "byol_equimod_r18": identity("byol_equimod"),
        "simclr_equimod_r18": identity("simclr_equimod"), "byol_r18": identity("byol"), "solo": None})
    assert pairing.models == ["simclr_r18", "simclr_equimod_r18", "byol_r18", "byol_equimod_r18", "solo"]
    assert pairing.baseline("simclr_equimod_r18") == "simclr_r18" and pairing.baseline("byol_r18") is None
    assert pairing.baseline("solo") is None


def test_pairs_come_from_registry_fields_not_names():
    """Names mean nothing: method, architecture, data and budget decide the pair."""
    pairing = Pairing.of_identities({
        "mine": identity("simclr_equimod"), "baseline_b": identity("simclr", epochs=50), "other": identity("byol"),
        "baseline_a": identity("simclr"), "model_equimod_x": None})
    assert pairing.baseline("mine") == "baseline_a"  # same budget; baseline_b trained for 50 epochs
    assert pairing.baseline("model_equimod_x") is None  # `_equimod` in a name pairs nothing
    assert pairing.models.index("mine") == pairing.models.index("baseline_a") + 1


def test_zoo_names_pair_by_their_registry_rows():
    from equimod_zoo.registry import catalogue

    entries = [e for e in catalogue().entries if e.method.equimod]
    assert {e.method.base for e in entries} >= {"simclr", "byol", "vicreg", "barlow_twins"}
    for equimod in entries:
        base = [e for e in catalogue().entries if e.method == equimod.method.baseline
                and (e.arch, e.data, e.epochs) == (equimod.arch, equimod.data, equimod.epochs)]
        pairing = Pairing.of_names([equimod.name, *(b.name for b in base)])
        assert pairing.baseline(equimod.name) == (base[0].name if base else None)
    assert model_identity("simclr_equimod_r18_cifar10").method == Method("simclr", equimod=True)
    assert Pairing.of_names(["vicreg_equimod_r18_cifar10", "vicreg_r18_cifar10"]).baseline(
        "vicreg_equimod_r18_cifar10") == "vicreg_r18_cifar10"
    assert model_identity("not_a_model") is None


def test_write_comparison_markdown_csv_png(tmp_path):
    report = write_comparison(scores(), tmp_path / "out")
    lines = report.markdown_path.read_text().splitlines()
    assert "| model | flowers102 (mean per-class) | cifar10 (top-1) |" in lines
    rows = [line for line in lines if line.startswith("| ")][1:]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == [
        "simclr_r18", "simclr_equimod_r18", "*EquiMod gain over simclr_r18*",
        "byol_r18", "byol_equimod_r18", "*EquiMod gain over byol_r18*"]
    assert "| *EquiMod gain over simclr_r18* | +3.50 | +1.25 |" in lines
    assert "| byol_r18 | 82.00 | - |" in lines

    with open(report.csv_path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 6
    equimod = next(r for r in table if r["model"] == "simclr_equimod_r18" and r["dataset"] == "cifar10")
    assert equimod["baseline"] == "simclr_r18" and float(equimod["score"]) == 91.25

    with Image.open(report.png_path) as image:
        image.load()
        assert image.format == "PNG" and image.width >= 600 and image.height >= 400
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # bars, text, colours: not a blank canvas


def test_write_comparison_needs_scores(tmp_path):
    with pytest.raises(ValueError, match="nothing to compare"):
        write_comparison([], tmp_path)


def test_data_dir_map_parsing():
    assert parse_data_dir_map("flowers102=/a, cub200=/b/c") == {"flowers102": "/a", "cub200": "/b/c"}
    assert parse_data_dir_map(None) == {}
    with pytest.raises(ValueError, match="'flowers102' is not DATASET=DIR"):
        parse_data_dir_map("flowers102")


def test_compare_runs_transfer_then_reuses_results(tmp_path, tiny_resnet18_cifar, monkeypatch):
    from equimod_zoo.model_folder import write_model_folder

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for split, n in (("train", 12), ("test", 6)):
        for i in range(n):
            pixels = np.array(COLOURS[i % 3]) + rng.normal(0, 25, size=(12, 12, 3))
            path = data / split / f"c{i % 3}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    models = []
    for name in ("simclr_equimod_tiny", "simclr_tiny"):
        torch.manual_seed(len(models))
        for p in tiny_resnet18_cifar.parameters():
            torch.nn.init.normal_(p, std=0.1)
        write_model_folder(tmp_path / name, tiny_resnet18_cifar, arch="resnet18_cifar",
                           model_args={"channels": (8, 16, 32, 64), "stem_width": 8},
                           equimod={"method": name.removesuffix("_tiny"), "epochs": 2, "data": {"name": "cifar10"}})
        models.append(str(tmp_path / name))
    probes = []
    real_probe = frozen.linear_probe
    monkeypatch.setattr(frozen, "linear_probe", lambda *a, **k: probes.append(1) or real_probe(*a, **k))

    options = dict(out=tmp_path / "cmp", data_dirs={"cifar10": str(data)}, resolution=16, cache_dir=tmp_path / "cache",
                   num_workers=0, device="cpu", progress=False)
    report = compare(models, ["cifar10"], **options)
    assert len(probes) == 2
    assert [s.model for s in report.scores] == ["simclr_equimod_tiny", "simclr_tiny"]
    assert "*EquiMod gain over simclr_tiny*" in report.markdown
    assert report.png_path.is_file() and report.csv_path.is_file()

    again = compare(models, ["cifar10"], **options)
    assert len(probes) == 2, "a second compare reuses the cached results"
    assert [s.value for s in again.scores] == [s.value for s in report.scores]
    compare(models, ["cifar10"], **{**options, "reuse": False})
    assert len(probes) == 4

    with pytest.raises(ValueError, match="--data-dir-map names 'flowers102'"):
        compare(models, ["cifar10"], **{**options, "data_dirs": {"flowers102": str(data)}})


def test_compare_command(tmp_path, tiny_resnet18_cifar):
    from typer.testing import CliRunner

    from equimod_zoo.cli import app
    from equimod_zoo.model_folder import write_model_folder

    rng = np.random.default_rng(1)
    for split, n in (("train", 9), ("test", 6)):
        for i in range(n):
            path = tmp_path / "data" / split / f"c{i % 3}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.array(COLOURS[i % 3]) + rng.normal(0, 25, size=(12, 12, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    write_model_folder(tmp_path / "byol_tiny", tiny_resnet18_cifar, arch="resnet18_cifar",
                       model_args={"channels": (8, 16, 32, 64), "stem_width": 8})
    result = CliRunner().invoke(app, [
        "compare", "--models", str(tmp_path / "byol_tiny"), "--datasets", "stl10", "--out", str(tmp_path / "cmp"),
        "--data-dir-map", f"stl10={tmp_path / 'data'}", "--resolution", "16", "--cache-dir", str(tmp_path / "cache"),
        "--workers", "0", "--device", "cpu", "--protocol", "knn"])
    assert result.exit_code == 0, result.output
    assert "| byol_tiny |" in result.output
    assert (tmp_path / "cmp" / "comparison.png").is_file()
    empty = CliRunner().invoke(app, ["compare", "--models", " , ", "--datasets", "stl10", "--out",
                                     str(tmp_path / "cmp2")])
    assert empty.exit_code == 2 and "--models" in empty.output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("my own notes\n")
    mine = CliRunner().invoke(app, ["compare", "--models", str(tmp_path / "byol_tiny"), "--datasets", "stl10",
                                    "--out", str(tmp_path / "mine")])
    assert mine.exit_code == 2 and "holds notes.md" in mine.output  # refused before any work
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.md"]
