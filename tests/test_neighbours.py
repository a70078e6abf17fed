"""`equimod-zoo neighbours`: exact neighbours in feature stores, a faiss index clip-retrieval reads, the sheet."""
from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.data.sources import FileListSource
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.constants import DEFAULT_MODEL
from equimod_zoo.extraction.store import load_features, read_metadata
from equimod_zoo.model_folder import write_model_folder
from equimod_zoo.retrieval import find_neighbours

TINY_ARGS = {"channels": (8, 16, 32, 64), "stem_width": 8}
# A distinct colour in the middle of each image: a tile's centre pixel says which image it shows.
COLOURS = [(230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (230, 30, 230), (30, 230, 230),
           (120, 60, 10), (250, 150, 50), (90, 90, 90), (250, 250, 250), (10, 10, 10), (150, 100, 200)]


def _image(i: int) -> Image.Image:
    pixels = np.random.default_rng(i).integers(0, 256, (32, 32, 3), np.uint8)
    pixels[8:24, 8:24] = COLOURS[i]
    return Image.fromarray(pixels)


def _images(folder, indices):
    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        _image(i).save(folder / f"{i:02d}.png")
    return folder


def _model(folder, seed):
    import timm

    import equimod_zoo  # noqa: F401  registers resnet18_cifar

    torch.manual_seed(seed)
    network = timm.create_model("resnet18_cifar", num_classes=0, **TINY_ARGS).eval()
    write_model_folder(folder, network, arch="resnet18_cifar", model_args=TINY_ARGS)
    return folder


def _extract(source, out, model, **kwargs):
    options = dict(batch_size=4, shard_size=4, num_workers=0, progress=False, precision="fp32")
    extract_features(source, out=out, model=model, **{**options, **kwargs})
    return out


@pytest.fixture
def gallery(tmp_path):
    """Ten images, extracted by two tiny models (different weights): two stores of one gallery."""
    images = _images(tmp_path / "gallery", range(10))
    models = [_model(tmp_path / "model_a", 0), _model(tmp_path / "model_b", 1)]
    stores = [_extract(images, tmp_path / f"store_{n}", m) for n, m in zip("ab", models)]
    return images, models, stores


def _run(args):
    return CliRunner().invoke(app, ["neighbours", *map(str, args), "--precision", "fp32"])


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    # the error is the last line, whole; `datasets` may print its own progress lines before it
    errors = [line for line in result.output.strip().splitlines() if not line.startswith("Generating ")]
    assert len(errors) == 1 and errors[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def _brute_force(store, query_features, query_keys, k):
    """The k most cosine-similar gallery rows of each query, its own key left out: numpy, no faiss."""
    keys, features = load_features(store)
    gallery = features / np.linalg.norm(features, axis=1, keepdims=True)
    queries = query_features / np.linalg.norm(query_features, axis=1, keepdims=True)
    similarities = queries @ gallery.T
    found = []
    for q, own in enumerate(query_keys):
        order = [r for r in np.argsort(-similarities[q], kind="stable") if keys[r] != own]
        found.append([(int(r), float(similarities[q, r])) for r in order[:k]])
    return found


def test_neighbours_are_the_exact_ones_and_the_sheet_shows_them(tmp_path, gallery):
    images, models, stores = gallery
    # two queries that are in the gallery (their own row is left out), one that is not
    _images(tmp_path / "new", [11])
    paths = [images / "03.png", images / "07.png", tmp_path / "new" / "11.png"]
    queries = FileListSource(paths)
    k = 4
    result = find_neighbours(stores, queries, out=tmp_path / "out", k=k, models=models, precision="fp32",
                             progress=False)

    assert result.queries == [str(p) for p in paths]
    assert [m.model for m in result.models] == ["model_a", "model_b"]
    for model, store, found in zip(models, stores, result.models):
        query_store = _extract(queries, tmp_path / f"queries_{model.name}", model)
        _, query_features = load_features(query_store)
        expected = _brute_force(store, query_features, result.queries, k)
        assert [[n.row for n in row] for row in found.neighbours] == [[r for r, _ in row] for row in expected]
        np.testing.assert_allclose([[n.similarity for n in row] for row in found.neighbours],
                                   [[s for _, s in row] for row in expected], atol=1e-5)
        assert all(str(paths[q]) not in [n.image_path for n in row] for q, row in enumerate(found.neighbours[:2]))
    assert result.models[0].neighbours != result.models[1].neighbours  # two models, two answers

    # the sheet: per query one row per model, the query then its k neighbours, each tile the right image
    layout = result.layout
    assert (layout.rows, layout.columns) == (len(paths) * len(models), 1 + k)
    sheet = np.asarray(Image.open(result.sheet).convert("RGB")).astype(int)
    assert sheet.shape[1] >= layout.cell(0, k)[2] and sheet.shape[0] >= layout.cell(layout.rows - 1, 0)[3]
    for q in range(len(paths)):
        for m, found in enumerate(result.models):
            row = q * len(models) + m
            shown = [int(paths[q].stem)] + [int(n.image_path[-6:-4]) for n in found.neighbours[q]]
            for column, image in enumerate(shown):
                left, top, right, bottom = layout.cell(row, column)
                centre = sheet[(top + bottom) // 2, (left + right) // 2]
                assert np.abs(centre - COLOURS[image]).max() <= 3, (row, column, image)
    manifest = json.loads((tmp_path / "out" / "neighbours.json").read_text())
    assert manifest["written_by"] == "neighbours" and manifest["complete"] and manifest["k"] == k
    assert manifest["models"][1]["neighbours"][2][0]["row"] == result.models[1].neighbours[2][0].row


def test_a_query_in_the_gallery_is_its_own_nearest_when_kept(tmp_path, gallery):
    """Queries go through the store's own extraction: a gallery image finds itself at cosine 1."""
    images, models, stores = gallery
    queries = FileListSource([images / "05.png", images / "00.png"])
    result = find_neighbours(stores[:1], queries, out=tmp_path / "out", k=2, models=models[:1],
                             exclude_self=False, precision="fp32", progress=False)
    for q, row in enumerate(result.models[0].neighbours):
        assert row[0].image_path == result.queries[q] and row[0].similarity == pytest.approx(1.0, abs=1e-3)


def test_the_index_is_read_by_faiss_as_clip_retrieval_would(tmp_path, gallery):
    faiss = pytest.importorskip("faiss")
    images, models, stores = gallery
    queries = FileListSource([images / "02.png", images / "09.png"])
    result = find_neighbours(stores, queries, out=tmp_path / "out", k=3, models=models, exclude_self=False,
                             precision="fp32", progress=False)
    for model, store, found in zip(models, stores, result.models):
        folder = tmp_path / "out" / "indices" / store.name
        assert found.index == folder
        index = faiss.read_index(str(folder / "image.index"))  # clip back's `indice_folder + "/image.index"`
        keys, features = load_features(store)
        assert (index.ntotal, index.d) == features.shape
        infos = json.loads((folder / "image.json").read_text())
        assert infos["index_key"] == "Flat" and infos["nb vectors"] == len(keys)
        assert infos["vectors dimension"] == features.shape[1] and infos["weights_sha256"] == found.weights_sha256
        metadata = pq.read_table(folder / "metadata" / "metadata_0.parquet")  # index id i is metadata row i
        assert metadata.column("image_path").to_pylist() == keys

        _, query_features = load_features(_extract(queries, tmp_path / f"queries_{model.name}", model))
        query_features /= np.linalg.norm(query_features, axis=1, keepdims=True)
        similarities, rows = index.search(query_features, 3)
        assert rows.tolist() == [[n.row for n in row] for row in found.neighbours]
        np.testing.assert_allclose(similarities, [[n.similarity for n in row] for row in found.neighbours],
                                   atol=1e-6)


def test_cli_with_the_bundled_default_model_and_its_reruns(tmp_path):
    """The stores name the bundled default; the command finds it by that name, and reruns replace its output."""
    images = _images(tmp_path / "gallery", range(6))
    _extract(images, tmp_path / "store", DEFAULT_MODEL)
    out = tmp_path / "out"
    args = ["neighbours", tmp_path / "store", "--images", images / "01.png", "--images", images / "04.png",
            "-k", "3", "--palette", "16", "--out", out]
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    assert "3 neighbours of 2 queries under 1 models" in result.output
    manifest = json.loads((out / "neighbours.json").read_text())
    assert manifest["models"][0]["model"] == DEFAULT_MODEL and manifest["queries"][0].endswith("01.png")
    sheet = Image.open(out / "neighbours.png")
    assert sheet.size[0] > 4 * 64 and sheet.mode == "P" and len(sheet.getcolors()) <= 16

    again = CliRunner().invoke(app, list(map(str, [*args[:-2], "-k", "2", "--out", out])))  # an earlier output
    assert again.exit_code == 0, again.output
    assert json.loads((out / "neighbours.json").read_text())["k"] == 2


def test_errors_are_one_line(tmp_path, gallery, monkeypatch):
    images, models, stores = gallery
    base = ["--images", images / "01.png", "--model", models[0], "--out", tmp_path / "out"]

    _one_line_error(_run([tmp_path / "nowhere", *base]), "nowhere: no such feature store")
    incomplete = tmp_path / "incomplete"
    _extract(images, incomplete, models[0])
    (incomplete / "metadata" / "metadata_1.parquet").unlink()
    _one_line_error(_run([incomplete, *base]), "extraction is incomplete", "rerun the same extract command")

    # the gallery holds 10 images, one of them the query: 9 neighbours at most
    _one_line_error(_run([stores[0], *base, "-k", "10"]), "k=10", "holds 10 images (9 besides a query itself)",
                    "at most 9")
    _one_line_error(_run([stores[0], *base, "-k", "33"]), "k=33: give 1 to 32")

    # stores of different galleries: every row must search the same images
    fewer = _extract(_images(tmp_path / "fewer", range(9)), tmp_path / "store_fewer", models[1])
    _one_line_error(_run([stores[0], fewer, *base[:2], "--model", models[0], "--model", models[1], *base[4:]]),
                    "store_fewer: holds other gallery images than", "9 images, not 10")
    # a store searched with another model than the one that made it
    _one_line_error(_run([stores[0], *base[:2], "--model", models[1], *base[4:]]), "was extracted with weights")

    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    _one_line_error(_run([stores[0], *base[2:], "--images", tmp_path / "broken.png"]), "query ", "broken.png: could "
                    "not be read")
    _one_line_error(_run([stores[0], *base, "--split", "test"]), "--split")

    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss-cpu were not installed
    _one_line_error(_run([stores[0], *base]), "pip install faiss-cpu", "'.[index]'")
    monkeypatch.delitem(sys.modules, "faiss")
    assert not (tmp_path / "out").exists()  # nothing written by any of them


def test_an_output_folder_is_new_empty_or_an_earlier_output(tmp_path, gallery):
    images, models, stores = gallery
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own\n")
    args = [stores[0], "--images", images / "01.png", "--model", models[0], "-k", "2", "--out"]
    _one_line_error(_run([*args, mine]), "mine: not a previous neighbours output (it holds notes.txt)")
    _one_line_error(_run([*args, stores[1]]), "not a previous neighbours output")  # a feature store is not ours to replace
    assert (mine / "notes.txt").read_text() == "my own\n" and (stores[1] / "extraction.json").is_file()

    (tmp_path / "empty").mkdir()
    assert _run([*args, tmp_path / "empty"]).exit_code == 0
    (tmp_path / "empty" / "indices" / "notes.txt").write_text("added later\n")  # a file of the user's in an output
    _one_line_error(_run([*args, tmp_path / "empty"]), "holds indices/notes.txt, which neighbours does "
                    "not write")
    (tmp_path / "empty" / "indices" / "notes.txt").rename(tmp_path / "empty" / "notes.txt")
    _one_line_error(_run([*args, tmp_path / "empty"]), "holds notes.txt, which neighbours does not write")
    assert (tmp_path / "empty" / "notes.txt").read_text() == "added later\n"


def _parquet(path, indices):
    import datasets

    encoded = []
    for i in indices:
        _image(i).save(path.parent / "p.png")
        encoded.append({"bytes": (path.parent / "p.png").read_bytes(), "path": None})
    labels = [i % 2 for i in indices]
    data = datasets.Dataset.from_dict({"image": encoded, "label": labels})
    data = data.cast_column("image", datasets.Image()).cast_column("label", datasets.ClassLabel(names=["odd", "even"]))
    data.to_parquet(path)
    return path


def test_dataset_rows_are_shown_from_the_dataset_they_came_from(tmp_path, gallery, monkeypatch):
    import datasets

    from equimod_zoo.data.spec import open_split

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    _, models, _ = gallery
    (tmp_path / "data").mkdir()
    parquet = _parquet(tmp_path / "data" / "test.parquet", range(8))
    store = _extract(open_split(parquet, "test"), tmp_path / "rows", models[0])
    assert read_metadata(store).column("image_path").to_pylist()[:2] == ["test/0", "test/1"]

    out = tmp_path / "out"
    result = _run([store, "--dataset", parquet, "--split", "test", "--spread", "2", "--model", models[0], "-k", "3",
                   "--out", out])
    assert result.exit_code == 0, result.output
    assert "could not be opened" not in result.output  # every dataset row was read back for its tile
    manifest = json.loads((out / "neighbours.json").read_text())
    assert manifest["queries"] == ["test/0", "test/4"]
    assert all(n["image_path"].startswith("test/") and n["image_path"] != manifest["queries"][q]
               for q, row in enumerate(manifest["models"][0]["neighbours"]) for n in row)

    # the same store without its dataset, or with another one, cannot show its rows
    query = ["--images", tmp_path / "gallery" / "01.png", "--model", models[0], "--out", tmp_path / "out2"]
    _one_line_error(_run([store, *query]), "holds dataset rows (test/0, ...)", "give the --dataset")
    (tmp_path / "other").mkdir()
    other = _parquet(tmp_path / "other" / "test.parquet", range(5))
    _one_line_error(_run([store, *query, "--dataset", other]), "rows: was extracted from", "not from")
