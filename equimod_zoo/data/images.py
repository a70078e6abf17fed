"""The one image decoder: any image Pillow reads, as an upright 8-bit RGB image, or a clear error.

Training, extraction, transfer and the augmentation probes all decode through `load_rgb`, so an
image has the same pixels everywhere. Every kind ends the same way: CMYK, YCbCr and greyscale
are converted; 16-bit and 32-bit greyscale are scaled to 8 bits (Pillow's own conversion would
clip them); transparency (alpha, palette transparency, tRNS) is composited on white; animated
files give their first frame; EXIF orientation is applied. Files that are empty, truncated, not
images, or too large raise, so the caller can record them and go on.

"Too large" counts the work an image causes, not only its file's pixels: the decoded size must
stay under the pixel limit and, when the caller says what the short side is resized to, the
resized size under that limit or 64 squares of the output, whichever is more. A 400000x1 PNG of
a few hundred bytes decodes to 400000 pixels but would resize to 400000*S x S; it is refused
before any pixel is decoded.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from equimod_zoo.data.resize import resize_to_base
from equimod_zoo.errors import ImageTooLargeError

# Every extension an image file may have: what a folder scan picks up.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".avif",
})
_BACKGROUND = (255, 255, 255)
_DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's own default, read on import
RESIZE_ALLOWANCE = 64  # squares of the resized output an image may cost, whatever the pixel limit
_DRAFT_FORMATS = ("JPEG", "MPO")
# EXIF orientations 5-8 turn the image a quarter, swapping width and height.
_SWAPS_AXES = {5, 6, 7, 8}



@dataclass
class DecodedImage:
    """An RGB image and the size of the original as displayed (after EXIF orientation, before any draft)."""

    image: Image.Image
    width: int
    height: int


def load_rgb(opener: Callable[[], Image.Image], *, draft_size: int | None = None,
             max_pixels: int | None = None, resize_to: int | None = None) -> DecodedImage:
    """Open, check and decode one image as upright RGB.

    Args:
        opener: returns the raw image, e.g. `lambda: Image.open(path)` or `source.open(i)`.
        draft_size: decode JPEGs at a reduced scale whose both sides are still at least this
            many pixels (libjpeg's DCT scaling): much faster for photos larger than the model
            input. None decodes at full size.
        max_pixels: refuse images with more pixels (decompression bombs); None uses
            `PIL.Image.MAX_IMAGE_PIXELS`. Pillow's own bomb warning is an error here too.
        resize_to: the short side the caller resizes to next; an image whose resized size
            would exceed `max_pixels` (an extreme aspect ratio) is refused too.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            raw = opener()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise ImageTooLargeError(str(error)) from None
        with raw:
            check_work(raw.width, raw.height, limit=limit, resize_to=resize_to)
            width, height = raw.size
            orientation = _orientation(raw)
            if orientation in _SWAPS_AXES:
                width, height = height, width
            if draft_size and raw.format in _DRAFT_FORMATS and raw.mode in ("RGB", "L", "CMYK"):
                raw.draft(raw.mode, (draft_size, draft_size))
            raw.load()  # raises here for truncated or corrupt data
            upright = _exif_transpose(raw) if orientation != 1 else raw
            rgb = to_rgb(upright)
            if rgb is raw:  # the file closes with `raw`; keep an independent copy
                rgb = rgb.copy()
    return DecodedImage(rgb, width, height)


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after resizing the short side to `short_side`, keeping the aspect ratio."""
    if width <= height:
        return short_side, max(1, round(height * short_side / max(width, 1)))
    return max(1, round(width * short_side / max(height, 1))), short_side


def check_work(width: int, height: int, *, limit: int | None, resize_to: int | None = None) -> None:
    """Raise ImageTooLargeError when decoding or resizing a `width` x `height` image is too much work.

    Decoding may cost `limit` pixels (None or 0: no limit). Resizing the short side to
    `resize_to` may cost that too, or `RESIZE_ALLOWANCE` squares of the output, whichever is
    more: any aspect ratio up to 64:1 resizes, and only extreme strips are refused.
    """
    if limit and width * height > limit:
        raise ImageTooLargeError(f"{width}x{height} pixels is over the limit of {limit} "
                                 f"(a possible decompression bomb)")
    if resize_to:
        new_width, new_height = resized_size(width, height, resize_to)
        allowed = max(limit or _DEFAULT_MAX_PIXELS, RESIZE_ALLOWANCE * resize_to * resize_to)
        if new_width * new_height > allowed:
            raise ImageTooLargeError(f"{width}x{height} pixels would resize to {new_width}x{new_height}, over the "
                                     f"limit of {allowed} pixels (an extreme aspect ratio)")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency on white."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(image), mode="L").convert("RGB")
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(image: Image.Image) -> np.ndarray:
    """Greyscale of more than 8 bits to 0-255: 16-bit scales by 1/257, floats in [0, 1] by 255."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
    elif image.mode == "I" and values.size and values.max() <= 255:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0
    return np.clip(np.rint(np.nan_to_num(values * scale)), 0, 255).astype(np.uint8)


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # unreadable EXIF: treat as upright rather than losing the image
        return 1


def _exif_transpose(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # unreadable EXIF: the pixels are still good
        return image


def pixels_at_base(opener: Callable[[], Image.Image], base_size: int, *,
                   max_pixels: int | None = None) -> torch.Tensor:
    """One image decoded by `load_rgb` and stored at `base_size`: uint8 [3, base_size, base_size].

    Training and the augmentation probes keep images in this form. JPEGs decode at full scale,
    so the pixels are those of extraction without its optional JPEG draft.
    """
    decoded = load_rgb(opener, max_pixels=max_pixels, resize_to=base_size)
    pixels = torch.from_numpy(np.asarray(decoded.image).copy()).permute(2, 0, 1).contiguous()
    return resize_to_base(pixels, base_size)
