"""The data layer: one spec grammar for every command, one decoder for training and extraction, one table."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import equimod_zoo
from equimod_zoo.data.images import load_rgb, pixels_at_base
from equimod_zoo.data.known import KNOWN_DATASETS, data_caveats, dataset_key, known_dataset
from equimod_zoo.data.resize import resize_to_base
from equimod_zoo.data.sources import folder_source
from equimod_zoo.data.spec import find_split, open_split, open_splits, resolve_spec
from equimod_zoo.errors import DatasetSpecError

SAMPLES = Path(equimod_zoo.__file__).parent / "samples"
# The kinds a bare convert("RGB") gets wrong: rotation, transparency, 16-bit depth, CMYK.
HARD_SAMPLES = ("exif_rotated.jpg", "shapes_alpha.png", "ramp_16bit.png", "gradient_cmyk.jpg")


def _tree(root: Path, splits=("train", "test")) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def _parquet(folder: Path, splits=("train", "test"), column: str = "image") -> Path:
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for split in splits:
        images = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)) for _ in range(4)]
        table = datasets.Dataset.from_dict(
            {column: images, "label": [0, 1, 0, 1]},
            features=datasets.Features({column: datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}))
        table.to_parquet(str(folder / f"{split}.parquet"))
    return folder


# --- the grammar ----------------------------------------------------------------------------------

def test_every_spelling_resolves_without_reading_images(tmp_path):
    assert resolve_spec("flowers102").location == "dpdl-benchmark/oxford_flowers102"
    assert resolve_spec("flowers102").known is KNOWN_DATASETS["flowers102"]
    assert resolve_spec("hf:someone/birds").layout == resolve_spec("someone/birds").layout == "hub"
    tree = _tree(tmp_path / "pets")
    assert resolve_spec(tree).layout == "imagefolder" and resolve_spec(f"imagefolder:{tree}").location == str(tree)
    parquet = _parquet(tmp_path / "pq")
    assert resolve_spec(parquet).layout == resolve_spec(parquet / "test.parquet").layout == "parquet"
    named = resolve_spec("cifar10", data_dir=parquet)  # a known name read from a local copy
    assert (named.layout, named.known.name, named.hub_id) == ("parquet", "cifar10", "uoft-cs/cifar10")
    assert resolve_spec("mine", data_dir=tree).name == "pets"
    assert resolve_spec("flowers102").describe() == "hub:dpdl-benchmark/oxford_flowers102"


def test_a_cub_release_is_found_in_or_above_its_folder(tmp_path):
    root = tmp_path / "birds" / "CUB_200_2011"
    (root / "images" / "001.A").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(root / "images" / "001.A" / "a.jpg")
    Image.new("RGB", (8, 8), (0, 200, 0)).save(root / "images" / "001.A" / "b.jpg")
    for name, text in (("images.txt", "1 001.A/a.jpg\n2 001.A/b.jpg\n"), ("image_class_labels.txt", "1 1\n2 1\n"),
                       ("train_test_split.txt", "1 1\n2 0\n"), ("classes.txt", "1 001.A\n")):
        (root / name).write_text(text)
    assert resolve_spec(tmp_path / "birds").location == resolve_spec(root).location == str(root)
    test = open_split(tmp_path / "birds", "test")
    assert len(test) == 1 and test.key(0).endswith("b.jpg") and test.label_names == ["001.A"]


def test_empty_and_unusable_specs_name_the_option(tmp_path):
    for empty in ("", "  "):
        with pytest.raises(DatasetSpecError, match="--data: empty"):
            resolve_spec(empty, option="--data")
    with pytest.raises(DatasetSpecError, match="--data-dir: empty"):
        resolve_spec("cifar10", data_dir="")
    with pytest.raises(KeyError, match="unknown dataset 'mnist'"):
        resolve_spec("mnist")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        resolve_spec(str(tmp_path / "nope"))
    with pytest.raises(DatasetSpecError, match="names its folder"):
        resolve_spec(f"imagefolder:{tmp_path}", data_dir=tmp_path)


def test_splits_by_name_and_validation_aliases(tmp_path):
    tree = _tree(tmp_path / "t", splits=("train", "val", "test"))
    opened = open_splits(resolve_spec(tree), ["train", "validation"])
    assert sorted(opened.sources) == ["train", "val"] and opened.available == ["test", "train", "val"]
    assert find_split(["train", "validation"], "val") == "validation" and find_split(["train"], "val") is None
    assert opened.label_names == ["cat", "dog"] and opened.sources["val"].label(3) == 1
    with pytest.raises(ValueError, match=r"has splits \['test', 'train', 'val'\]; choose one with --split"):
        open_split(tree)
    assert len(open_split(tree, prefer="train")) == 4
    flat = _tree(tmp_path / "flat", splits=("x",)) / "x"  # CLASS/IMAGE with no split folders: one split
    assert len(open_split(flat)) == 4
    parquet = _parquet(tmp_path / "pq", splits=("train", "validation", "test"), column="img")
    source = open_split(parquet, "val", cache_dir=tmp_path / "cache")
    assert len(source) == 4 and source.image_column == "img" and source.label_names == ["a", "b"]


def test_a_known_rows_columns_are_used_where_the_data_has_them(tmp_path):
    parquet = _parquet(tmp_path / "pq", column="img")
    assert open_split(resolve_spec("cifar10", data_dir=parquet), "test", cache_dir=tmp_path / "c").image_column == "img"
    other = _parquet(tmp_path / "other", column="picture")  # cifar10's "img" is absent: detected instead
    assert open_split(resolve_spec("cifar10", data_dir=other), "test", cache_dir=tmp_path / "c").image_column == "picture"


# --- one table ------------------------------------------------------------------------------------

def test_one_known_datasets_table_for_transfer_and_cards():
    from equimod_zoo.hub import card
    from equimod_zoo.transfer.datasets import DATASETS

    for name, row in DATASETS.items():  # transfer reads the table...
        known = KNOWN_DATASETS[name]
        assert (row.hub_id, row.metric, row.val_split, row.test_split) == (known.hub_id, known.metric,
                                                                            known.val_split, known.test_split)
    # ...and so do the cards: Flowers-102 has one Hub id everywhere
    assert card.dataset_info("flowers102").hub_id == DATASETS["flowers102"].hub_id == "dpdl-benchmark/oxford_flowers102"
    assert card.dataset_info("cifar10-jpeg").title == "CIFAR-10" and dataset_key("cifar10-jpeg") == "cifar10"
    assert known_dataset("imagenet-1k").test_split == "validation" and "imagenet-1k" not in DATASETS
    assert known_dataset("my-photos").title == "my-photos" and known_dataset("my-photos").hub_id is None
    assert data_caveats("cifar10-jpeg parquet") and not data_caveats("cifar10 parquet")


# --- one decoder ----------------------------------------------------------------------------------

def test_training_and_extraction_decode_the_same_pixels(tmp_path):
    """Training's images are extraction's decode, resized: rotation, white alpha, 16-bit, CMYK."""
    from equimod_zoo.extraction.extract import _DecodingDataset
    from equimod_zoo.training.data import load_train_data

    folder = tmp_path / "samples" / "all"
    folder.mkdir(parents=True)
    for name in HARD_SAMPLES:
        shutil.copy(SAMPLES / name, folder / name)
    size = 48
    training = load_train_data(tmp_path / "samples", base_size=size, cache_dir=tmp_path / "cache", progress=False)
    source = folder_source(folder)
    extraction = _DecodingDataset(source, lambda image: resize_to_base(torch.from_numpy(
        np.asarray(image).copy()).permute(2, 0, 1), size), draft_size=None, max_pixels=None)
    assert len(training) == len(source) == len(HARD_SAMPLES)
    by_name = {}
    for i in range(len(source)):
        index, pixels, width, height, error = extraction[i]
        assert error is None
        assert torch.equal(training.images[i], pixels), Path(source.key(i)).name
        by_name[Path(source.key(i)).name] = (pixels, width, height)
    rotated, width, height = by_name["exif_rotated.jpg"]
    assert (width, height) == (300, 200)  # stored 200x300 and turned upright by its EXIF orientation
    alpha = by_name["shapes_alpha.png"][0]
    assert alpha[:, 0, 0].tolist() == [255, 255, 255]  # transparent corner: white, not black
    ramp = by_name["ramp_16bit.png"][0].float()
    assert ramp.max() > 200 and ramp[0, 0, 0] < ramp[0, 0, -1]  # scaled, not clipped to 255
    cmyk = by_name["gradient_cmyk.jpg"][0].float()
    assert 40 < cmyk.mean() < 215  # CMYK converted, not inverted or blank


def test_decoded_cache_version_was_bumped_for_the_new_decoder(tmp_path):
    import equimod_zoo.training.data as data_module

    assert data_module._CACHE_VERSION >= 2
    (tmp_path / "d" / "c").mkdir(parents=True)
    Image.new("RGBA", (8, 8), (10, 0, 0, 0)).save(tmp_path / "d" / "c" / "clear.png")
    data = data_module.load_train_data(tmp_path / "d", base_size=8, cache_dir=tmp_path / "cache", progress=False)
    assert data.images.unique().tolist() == [255]  # a bare convert("RGB") gives (10, 0, 0)
    assert [p.name for p in (tmp_path / "cache" / "decoded").glob("*.npy")][0].endswith(
        f"-v{data_module._CACHE_VERSION}.npy")


def test_pixels_at_base_is_load_rgb_then_resize(tmp_path):
    path = SAMPLES / "wide_banner.jpg"
    expected = resize_to_base(torch.from_numpy(np.asarray(load_rgb(lambda: Image.open(path)).image).copy())
                              .permute(2, 0, 1), 40)
    assert torch.equal(pixels_at_base(lambda: Image.open(path), 40), expected)
