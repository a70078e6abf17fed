"""One rule for every output folder: new, empty, or an earlier output of the same command; anything else refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from equimod_zoo.errors import OutputRefusedError
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.output_folder import OutputLayout, check_output_folder

LAYOUT = OutputLayout("demo", frozenset({"result.txt", "marker.json"}), lambda folder: (folder / "marker.json").is_file())


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_new_empty_and_earlier_outputs_pass(tmp_path):
    assert check_output_folder(tmp_path / "new", LAYOUT) == "new"
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty", LAYOUT) == "empty"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "marker.json").write_text("{}")
    (earlier / "result.txt").write_text("1")
    (earlier / ".result.txt.abc123.tmp").write_text("")  # an interrupted atomic write is ours too
    assert check_output_folder(earlier, LAYOUT) == "earlier"


@pytest.mark.parametrize("case", ["own files", "foreign beside ours", "file", "link", "source", "holds the source"])
def test_anything_else_is_refused_in_one_line_and_left_untouched(tmp_path, case):
    out = tmp_path / "out"
    sources = []
    if case == "own files":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
        expected = "not a previous demo output"
    elif case == "foreign beside ours":
        out.mkdir()
        (out / "marker.json").write_text("{}")
        (out / "notes.txt").write_text("mine")
        expected = "holds notes.txt, which demo does not write"
    elif case == "file":
        out.write_text("data")
        expected = "not a folder this command wrote"
    elif case == "link":
        (tmp_path / "target").mkdir()
        out.symlink_to(tmp_path / "target")
        expected = "not a folder this command wrote"
    else:
        (out / "data").mkdir(parents=True)
        sources = [out] if case == "source" else [out / "data"]
        expected = "is \\(or holds\\) the source"
    before = _tree(tmp_path)
    with pytest.raises(OutputRefusedError, match=expected) as error:
        check_output_folder(out, LAYOUT, sources=sources)
    assert "\n" not in str(error.value) and "--out" in str(error.value)
    assert _tree(tmp_path) == before


def test_extract_refuses_a_folder_of_the_users_files_and_the_images_folder(tmp_path, tiny_resnet18_cifar):
    from PIL import Image

    images = tmp_path / "photos"
    images.mkdir()
    Image.new("RGB", (8, 8), "red").save(images / "a.png")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(OutputRefusedError, match="not a previous extract output"):
        extract_features(images, out=mine, model=tiny_resnet18_cifar, progress=False)
    with pytest.raises(OutputRefusedError, match="is \\(or holds\\) the source"):
        extract_features(images, out=images, model=tiny_resnet18_cifar, progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in images.iterdir()) == ["a.png"]
