"""Robust image decoding: any image Pillow reads, as an upright 8-bit RGB image, or a clear error.

Every kind ends the same way: CMYK, YCbCr and greyscale are converted; 16-bit and 32-bit
greyscale are scaled to 8 bits (Pillow's own conversion would clip them); transparency
(alpha, palette transparency, tRNS) is composited on white; animated files give their first
frame; EXIF orientation is applied. Files that are empty, truncated, not images, or larger
than the pixel limit (decompression bombs) raise, so the caller can record them and go on.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

_BACKGROUND = (255, 255, 255)
_DRAFT_FORMATS = ("JPEG", "MPO")
# EXIF orientations 5-8 turn the image a quarter, swapping width and height.
_SWAPS_AXES = {5, 6, 7, 8}


class ImageTooLargeError(ValueError):
    """More pixels than the limit: refused before decoding, like Pillow's DecompressionBombError."""


@dataclass
class DecodedImage:
    """An RGB image and the size of the original as displayed (after EXIF orientation, before any draft)."""

    image: Image.Image
    width: int
    height: int


def load_rgb(opener: Callable[[], Image.Image], *, draft_size: int | None = None,
             max_pixels: int | None = None) -> DecodedImage:
    """Open, check and decode one image as upright RGB.

    Args:
        opener: returns the raw image, e.g. `lambda: Image.open(path)` or `source.open(i)`.
        draft_size: decode JPEGs at a reduced scale whose both sides are still at least this
            many pixels (libjpeg's DCT scaling): much faster for photos larger than the model
            input. None decodes at full size.
        max_pixels: refuse images with more pixels (decompression bombs); None uses
            `PIL.Image.MAX_IMAGE_PIXELS`. Pillow's own bomb warning is an error here too.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            raw = opener()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise ImageTooLargeError(str(error)) from None
        with raw:
            if limit and raw.width * raw.height > limit:
                raise ImageTooLargeError(f"{raw.width}x{raw.height} pixels is over the limit of {limit} "
                                         f"(a possible decompression bomb)")
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
