"""extract_features, the feature store and `equimod-zoo extract`, on tiny images and a tiny model."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.constants import DEFAULT_MODEL
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.data.sources import HFDatasetSource, imagefolder_source
from equimod_zoo.data.spec import open_split
from equimod_zoo.extraction.store import label_names, load_features, read_info, read_metadata
from equimod_zoo.model_folder import write_model_folder

GOOD = ["a_rgb.jpg", "b_cmyk.jpg", "c_16bit.png", "d_palette.png", "e_rgba.png", "f_anim.gif", "g_exif.jpg",
        "h/nested.JPG"]
BAD = ["bad_empty.jpg", "bad_text.jpg", "bad_truncated.jpg", "bad_bomb.png", "bad_dangling.png"]
TINY_ARGS = {"channels": (8, 16, 32, 64), "stem_width": 8}


def _photo(size, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8))


@pytest.fixture
def image_dir(tmp_path):
    """Every unusual-but-valid kind, and every bad kind, in one folder."""
    root = tmp_path / "images"
    (root / "h").mkdir(parents=True)
    _photo((40, 30), 0).save(root / "a_rgb.jpg")
    _photo((36, 36), 1).convert("CMYK").save(root / "b_cmyk.jpg")
    Image.fromarray((np.arange(32 * 24).reshape(24, 32) * 80).astype(np.uint16)).save(root / "c_16bit.png")
    palette = _photo((30, 30), 2).convert("P")
    palette.save(root / "d_palette.png", transparency=3)
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 28, 4), np.uint8), "RGBA").save(root / "e_rgba.png")
    frames = [_photo((24, 24), s).convert("P") for s in (4, 5)]
    frames[0].save(root / "f_anim.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 8
    _photo((50, 20), 6).save(root / "g_exif.jpg", exif=exif.tobytes())
    _photo((33, 45), 7).save(root / "h" / "nested.JPG")
    (root / "bad_empty.jpg").touch()
    (root / "bad_text.jpg").write_text("hello\n")
    _photo((64, 64), 8).save(tmp_path / "whole.jpg")
    (root / "bad_truncated.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:700])
    _photo((100, 90), 9).save(root / "bad_bomb.png")  # over the pixel limit the tests set
    os.symlink(tmp_path / "gone.png", root / "bad_dangling.png")
    return root


@pytest.fixture
def tiny(tiny_resnet18_cifar):
    return tiny_resnet18_cifar


def _extract(source, out, model, **kwargs):
    options = dict(batch_size=3, shard_size=4, num_workers=0, max_pixels=5000, progress=False)
    return extract_features(source, out=out, model=model, **{**options, **kwargs})


def test_extracts_unusual_images_and_lists_bad_ones(image_dir, tmp_path, tiny):
    summary = _extract(image_dir, tmp_path / "out", tiny, num_workers=2)
    assert (summary.num_images, summary.num_extracted, summary.num_failed) == (13, 8, 5)
    assert summary.num_features == 64 and summary.num_shards == 4

    paths, features = load_features(tmp_path / "out")
    assert [os.path.relpath(p, image_dir) for p in paths] == sorted(GOOD)
    assert features.dtype == np.float32 and features.shape == (8, 64) and np.isfinite(features).all()
    assert np.abs(features - features[0]).max() > 0  # different images, different features

    table = read_metadata(tmp_path / "out").to_pydict()
    assert "label" not in table
    sizes = {os.path.relpath(p, image_dir): (w, h) for p, w, h in zip(table["image_path"], table["width"], table["height"])}
    assert sizes["g_exif.jpg"] == (20, 50)  # EXIF orientation 8 turns the 50x20 stored image upright
    assert sizes["c_16bit.png"] == (32, 24) and sizes["h/nested.JPG"] == (33, 45)
    assert table["index"] == sorted(table["index"])

    with open(tmp_path / "out" / "failures.csv", newline="") as handle:
        failures = {os.path.basename(row["path"]): row["error"] for row in csv.DictReader(handle)}
    assert sorted(failures) == sorted(BAD)
    assert "over the limit" in failures["bad_bomb.png"]
    assert failures["bad_dangling.png"].startswith("FileNotFoundError")
    assert "UnidentifiedImageError" in failures["bad_text.jpg"] and "UnidentifiedImageError" in failures["bad_empty.jpg"]
    assert "truncated" in failures["bad_truncated.jpg"]
    info = read_info(tmp_path / "out")
    assert info["complete"] and info["num_failed"] == 5 and info["num_extracted"] == 8
    assert info["data_config"]["input_size"] == [3, 32, 32]


def test_features_match_the_plain_timm_pipeline(tmp_path, tiny):
    import timm.data

    folder = tmp_path / "plain"
    folder.mkdir()
    for i in range(5):
        _photo((48, 40), i).save(folder / f"{i}.png")
    _extract(folder, tmp_path / "out", tiny, precision="fp32")
    _, features = load_features(tmp_path / "out")
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(tiny))
    with torch.no_grad():
        expected = tiny(torch.stack([transform(Image.open(folder / f"{i}.png").convert("RGB")) for i in range(5)]))
    np.testing.assert_allclose(features, expected.numpy(), rtol=2e-3, atol=2e-3)  # float16 storage


class _Flaky(torch.nn.Module):
    """A model that crashes on its n-th forward, as an interrupted run would."""

    def __init__(self, inner: torch.nn.Module, crash_at: int | None) -> None:
        super().__init__()
        self.inner, self.crash_at, self.calls = inner, crash_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.crash_at:
            raise RuntimeError("interrupted")
        return self.inner(x)


def test_resume_after_interruption_duplicates_nothing_and_loses_nothing(image_dir, tmp_path, tiny):
    reference = _extract(image_dir, tmp_path / "reference", _Flaky(tiny, None))
    ref_paths, ref_features = load_features(tmp_path / "reference")

    # 1 forward to size the features, then batches of 3 in shards of 4: the 5th forward is shard 2's first.
    with pytest.raises(RuntimeError, match="interrupted"):
        _extract(image_dir, tmp_path / "out", _Flaky(tiny, crash_at=5))
    assert sorted(p.name for p in (tmp_path / "out" / "metadata").iterdir()) == ["metadata_0.parquet",
                                                                                   "metadata_1.parquet"]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="incomplete"):
        load_features(tmp_path / "out")

    resumed = _extract(image_dir, tmp_path / "out", _Flaky(tiny, None))
    assert resumed.shards_skipped == 2 and resumed.num_failed == reference.num_failed == 5
    paths, features = load_features(tmp_path / "out")
    assert paths == ref_paths and len(set(paths)) == len(paths) == 8
    np.testing.assert_array_equal(features, ref_features)
    failures = (tmp_path / "out" / "failures.csv").read_text()
    assert failures == (tmp_path / "reference" / "failures.csv").read_text()


def test_refuses_to_resume_a_different_extraction(image_dir, tmp_path, tiny):
    _extract(image_dir, tmp_path / "out", tiny)
    changed = _Flaky(tiny, None)  # different weight names: a different model
    with pytest.raises(ValueError, match=f"{tmp_path / 'out'}: holds an extraction with a different weights_sha256"):
        _extract(image_dir, tmp_path / "out", changed)
    with pytest.raises(ValueError, match="different normalize"):
        _extract(image_dir, tmp_path / "out", tiny, normalize=True)
    (image_dir / "new.png").write_bytes((image_dir / "d_palette.png").read_bytes())
    with pytest.raises(ValueError, match="different input"):
        _extract(image_dir, tmp_path / "out", tiny)


def test_l2_normalisation(image_dir, tmp_path, tiny):
    _extract(image_dir, tmp_path / "out", tiny, normalize=True, resolution=24)
    _, features = load_features(tmp_path / "out")
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=2e-3)
    assert read_info(tmp_path / "out")["data_config"]["input_size"] == [3, 24, 24]


def test_imagefolder_labels(tmp_path, tiny):
    for cls, seeds in (("tulip", (0, 1)), ("daisy", (2,)), ("rose", (3, 4))):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        for s in seeds:
            _photo((20, 20), s).save(tmp_path / "tree" / cls / f"{s}.jpg")
    (tmp_path / "tree" / "rose" / "broken.jpg").write_text("x")
    _extract(imagefolder_source(tmp_path / "tree"), tmp_path / "out", tiny)
    table = read_metadata(tmp_path / "out").to_pydict()
    assert label_names(tmp_path / "out") == ["daisy", "rose", "tulip"]
    assert [(Path(p).parent.name, label) for p, label in zip(table["image_path"], table["label"])] == [
        ("daisy", 0), ("rose", 1), ("rose", 1), ("tulip", 2), ("tulip", 2)]


def _parquet(tmp_path) -> Path:
    import datasets

    encoded = []
    for i in range(5):
        _photo((24 + i, 20), i).save(tmp_path / "p.png")
        encoded.append({"bytes": (tmp_path / "p.png").read_bytes(), "path": None})
    encoded[3] = {"bytes": b"\x89PNG broken", "path": None}
    data = datasets.Dataset.from_dict({"picture": encoded, "kind": ["cat", "dog", "cat", "dog", "dog"]})
    data = data.cast_column("picture", datasets.Image()).cast_column("kind", datasets.ClassLabel(names=["cat", "dog"]))
    data.to_parquet(tmp_path / "pets.parquet")
    return tmp_path / "pets.parquet"


def test_parquet_dataset_labels(tmp_path, tiny):
    source = open_split(_parquet(tmp_path), cache_dir=tmp_path / "cache")
    assert isinstance(source, HFDatasetSource) and source.image_column == "picture" and source.label_column == "kind"
    summary = _extract(source, tmp_path / "out", tiny)
    assert (summary.num_extracted, summary.num_failed) == (4, 1)
    table = read_metadata(tmp_path / "out").to_pydict()
    assert table["image_path"] == ["pets/0", "pets/1", "pets/2", "pets/4"]
    assert table["label"] == [0, 1, 0, 1] and table["width"] == [24, 25, 26, 28]
    assert label_names(tmp_path / "out") == ["cat", "dog"]
    assert "pets/3" in (tmp_path / "out" / "failures.csv").read_text()
    with pytest.raises(KeyError, match="label column 'species' is not in the dataset"):
        open_split(tmp_path / "pets.parquet", label_column="species", cache_dir=tmp_path / "cache")


def test_cli_extracts_with_a_model_folder_and_exits_0_despite_failures(image_dir, tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    write_model_folder(tmp_path / "model", tiny, arch="resnet18_cifar", model_args=TINY_ARGS)
    args = ["extract", "--images", str(image_dir), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out"),
            "--workers", "0", "--batch-size", "4", "--normalize"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "8 of 13 images" in result.output and "5 images failed" in result.output
    paths, features = equimod_zoo.load_features(tmp_path / "out")
    assert len(paths) == 8 and features.shape == (8, 64)
    info = read_info(tmp_path / "out")
    assert info["weights_sha256"] == equimod_zoo.locate_weights(tmp_path / "model").sha256 and info["normalize"]

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "1 of 1 shards already done" in again.output


def test_cli_dataset_and_argument_errors(tmp_path, tiny, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    write_model_folder(tmp_path / "model", tiny, arch="resnet18_cifar", model_args=TINY_ARGS)
    parquet = _parquet(tmp_path)
    base = ["extract", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--workers", "0"]
    both = CliRunner().invoke(app, [*base, "--images", str(tmp_path), "--dataset", str(parquet)])
    assert both.exit_code == 2 and "exactly one of --images" in both.output
    missing = CliRunner().invoke(app, [*base, "--images", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope: no such folder" in missing.output
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(app, [*base, "--images", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "empty: no image files" in empty.output
    result = CliRunner().invoke(app, [*base, "--dataset", str(parquet), "--label-column", "kind"])
    assert result.exit_code == 0, result.output
    assert read_metadata(tmp_path / "out").column("label").to_pylist() == [0, 1, 0, 1]


def _default_entry_as(monkeypatch, **changes):
    from equimod_zoo import loading, registry, weights

    entry = dataclasses.replace(registry.catalogue().get(DEFAULT_MODEL), **changes)
    patched = registry.Catalogue(tuple(entry if e.name == DEFAULT_MODEL else e for e in registry.catalogue().entries))
    for module in (weights, loading):
        monkeypatch.setattr(module, "catalogue", lambda: patched)


def test_default_model_without_weights_exits_2(tmp_path, monkeypatch):
    _default_entry_as(monkeypatch, status="recipe-only", folder=None, sha256=None)
    (tmp_path / "imgs").mkdir()
    _photo((20, 20), 0).save(tmp_path / "imgs" / "a.jpg")
    result = CliRunner().invoke(app, ["extract", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"{DEFAULT_MODEL!r} is recipe-only" in result.output
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_readme_main_job_runs_on_the_bundled_default(tmp_path):
    """The README's first command: the shipped samples through the embedded default's bundled weights."""
    samples = Path(equimod_zoo.__file__).parent / "samples"
    result = CliRunner().invoke(app, ["extract", "--images", str(samples), "--out", str(tmp_path / "out"),
                                      "--workers", "0"])
    assert result.exit_code == 0, result.output
    paths, features = equimod_zoo.load_features(tmp_path / "out")
    assert len(paths) == len([p for p in samples.iterdir() if p.suffix != ".py"]) and features.shape[1] == 512
    assert np.isfinite(features).all()
    info = json.loads((tmp_path / "out" / "extraction.json").read_text())
    assert info["weights_sha256"] == equimod_zoo.get_entry(DEFAULT_MODEL).sha256


def test_default_model_with_weights_is_used(tmp_path, tiny, monkeypatch):
    folder = tmp_path / "bundled"
    config = write_model_folder(folder, tiny, arch="resnet18_cifar", model_args=TINY_ARGS)
    _default_entry_as(monkeypatch, status="available", folder=str(folder), sha256=config.equimod.weights_sha256)
    (tmp_path / "imgs").mkdir()
    _photo((20, 20), 0).save(tmp_path / "imgs" / "a.jpg")
    result = CliRunner().invoke(app, ["extract", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"),
                                      "--workers", "0"])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "out" / "extraction.json").read_text())
    assert info["model"] == DEFAULT_MODEL and info["weights_sha256"] == config.equimod.weights_sha256


def test_compiled_path_pads_batches_and_keeps_features(image_dir, tmp_path, tiny, monkeypatch):
    shapes = []

    def fake_compile(network, **options):  # the real compile is too slow for a unit test; its contract is shapes
        assert options == {"dynamic": False, "options": {"freezing": True}}

        def run(x):
            shapes.append(tuple(x.shape))
            return network(x)
        return run

    _extract(image_dir, tmp_path / "eager", tiny, precision="fp32")
    monkeypatch.setattr(torch, "compile", fake_compile)
    _extract(image_dir, tmp_path / "compiled", tiny, precision="fp32", compile=True)
    assert set(shapes) == {(3, 3, 32, 32)}  # partial and failure-thinned batches are padded to batch_size
    np.testing.assert_array_equal(load_features(tmp_path / "compiled")[1], load_features(tmp_path / "eager")[1])
