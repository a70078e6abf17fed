"""Robust decoding and image scanning: unusual images load as upright RGB, bad ones raise."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from equimod_zoo.data.images import load_rgb
from equimod_zoo.errors import ImageTooLargeError
from equimod_zoo.data.sources import folder_source, imagefolder_source, scan_images


def _load(path, **kwargs):
    return load_rgb(lambda: Image.open(path), **kwargs)


def _pixel(decoded, xy=(0, 0)):
    assert decoded.image.mode == "RGB"
    return np.asarray(decoded.image)[xy[1], xy[0]].astype(int)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (24, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # pure red in CMYK
    decoded = _load(tmp_path / "cmyk.jpg")
    assert (decoded.width, decoded.height) == (24, 16)
    assert np.abs(_pixel(decoded) - [255, 0, 0]).max() < 8


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    row = np.asarray(_load(tmp_path / "deep.png").image)[0, :, 0]
    assert row.tolist() == [0, 4, 128, 255]  # Pillow's plain convert would clip 1000 to 255


def test_palette_transparency_and_alpha_composite_on_white(tmp_path):
    palette = Image.new("P", (4, 2), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "palette.png", transparency=0)
    decoded = _load(tmp_path / "palette.png")
    assert _pixel(decoded, (0, 0)).tolist() == [255, 255, 255]
    assert _pixel(decoded, (1, 0)).tolist() == [255, 0, 0]

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 255, 255)
    rgba[0, 1] = (0, 0, 0, 128)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    decoded = _load(tmp_path / "alpha.png")
    assert _pixel(decoded, (0, 0)).tolist() == [0, 0, 255]
    assert np.abs(_pixel(decoded, (1, 0)) - 127).max() <= 1
    assert _pixel(decoded, (1, 1)).tolist() == [255, 255, 255]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_its_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((200, 0, 0), (0, 0, 200), (0, 200, 0))]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    assert Image.open(path).n_frames == 3
    assert np.abs(_pixel(_load(path)) - [200, 0, 0]).max() < 8


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high with a red left half; orientation 6 means "rotate 90 degrees clockwise
    # to display", so the displayed image is 20 x 40 with the red half on top.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", quality=95, exif=exif.tobytes())
    decoded = _load(tmp_path / "rotated.jpg")
    assert (decoded.width, decoded.height) == (20, 40) == decoded.image.size
    assert np.abs(_pixel(decoded, (10, 5)) - [255, 0, 0]).max() < 16
    assert np.abs(_pixel(decoded, (10, 35)) - [0, 0, 255]).max() < 16


def test_jpeg_draft_decodes_smaller_but_reports_the_original_size(tmp_path):
    Image.new("RGB", (1600, 1200), (10, 200, 30)).save(tmp_path / "big.jpg")
    decoded = _load(tmp_path / "big.jpg", draft_size=256)
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert min(decoded.image.size) >= 256 and decoded.image.size[0] < 1600
    assert _load(tmp_path / "big.jpg").image.size == (1600, 1200)


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "dangling"])
def test_bad_files_raise(tmp_path, kind):
    path = tmp_path / "bad.jpg"
    if kind == "empty":
        path.touch()
    elif kind == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "x.jpg")
        path.write_bytes((tmp_path / "x.jpg").read_bytes()[:600])
    elif kind == "text":
        path.write_text("not an image at all\n")
    else:
        os.symlink(tmp_path / "missing.jpg", path)
    with pytest.raises((OSError, ValueError)):
        _load(path)


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageTooLargeError, match="100x100 pixels is over the limit of 5000"):
        _load(tmp_path / "bomb.png", max_pixels=5000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        _load(tmp_path / "bomb.png")  # the default limit is Pillow's; its warning counts as a refusal
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        _load(tmp_path / "bomb.png", max_pixels=0)  # Pillow's own error, with our check off


def test_scan_is_recursive_case_insensitive_sorted_and_follows_links(tmp_path):
    root = tmp_path / "root"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / ".hidden").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    for path in (root / "b" / "deep" / "z.PNG", root / "a" / "y.JpEg", root / "x.webp", root / ".hidden" / "h.jpg",
                 outside / "linked.jpg", root / "a" / "notes.txt"):
        path.write_bytes(b"")
    os.symlink(outside, root / "c")  # a linked folder
    os.symlink(root, root / "a" / "loop")  # a cycle must not hang the scan
    found = [p.relative_to(root).as_posix() for p in scan_images(root)]
    assert found == ["a/y.JpEg", "b/deep/z.PNG", "c/linked.jpg", "x.webp"]
    assert len(folder_source(root)) == 4
    with pytest.raises(FileNotFoundError, match="no such folder"):
        scan_images(tmp_path / "nope")


def test_imagefolder_labels_are_sorted_class_folders(tmp_path):
    for cls, name in (("tulip", "1.jpg"), ("daisy", "2.jpg"), ("daisy", "sub/3.png")):
        (tmp_path / cls / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / cls / name).write_bytes(b"")
    source = imagefolder_source(tmp_path)
    assert source.label_names == ["daisy", "tulip"]
    assert [(os.path.relpath(source.key(i), tmp_path), source.label(i)) for i in range(len(source))] == [
        ("daisy/2.jpg", 0), ("daisy/sub/3.png", 0), ("tulip/1.jpg", 1)]
    (tmp_path / "loose.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="loose.jpg"):
        imagefolder_source(tmp_path)
