"""Regenerate the bundled sample images: `python equimod_zoo/samples/make_samples.py`.

They are drawn here, not taken from any dataset, and cover the kinds of file a real folder
holds: JPEG, PNG, GIF, WebP, BMP and TIFF; RGB, greyscale, CMYK, 16-bit, palette with
transparency, alpha; an animated GIF and a JPEG with an EXIF orientation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).parent


def _gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    rgb = np.stack([x * np.ones_like(y), y * np.ones_like(x), (1 - x) * (1 - y)], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def _shapes(size: tuple[int, int], mode: str, background) -> Image.Image:
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.1, h * 0.1, w * 0.6, h * 0.6), fill=(220, 40, 40, 255)[: len(mode)])
    draw.rectangle((w * 0.4, h * 0.35, w * 0.9, h * 0.85), fill=(40, 90, 220, 160)[: len(mode)])
    draw.polygon([(w * 0.2, h * 0.9), (w * 0.5, h * 0.55), (w * 0.8, h * 0.95)], fill=(30, 180, 60, 220)[: len(mode)])
    return image


def main() -> None:
    rng = np.random.default_rng(0)
    _gradient(320, 240).save(HERE / "gradient.jpg", quality=85)
    _shapes((200, 200), "RGBA", (0, 0, 0, 0)).save(HERE / "shapes_alpha.png")
    _gradient(256, 192).convert("CMYK").save(HERE / "gradient_cmyk.jpg", quality=85)

    checker = (np.indices((160, 160)).sum(axis=0) // 20 % 2 * 200 + 30).astype(np.uint8)
    Image.fromarray(checker, "L").save(HERE / "checker_gray.png")

    ramp = (np.linspace(0, 65535, 128)[None, :] * np.ones((96, 1))).astype(np.uint16)
    Image.fromarray(ramp).save(HERE / "ramp_16bit.png")  # mode I;16

    frames = []
    for shift in range(3):
        frame = Image.new("P", (120, 120), 0)
        frame.putpalette([255, 255, 255, 250, 170, 20, 20, 120, 200] + [0] * (256 * 3 - 9))
        draw = ImageDraw.Draw(frame)
        draw.ellipse((10 + shift * 20, 30, 70 + shift * 20, 90), fill=1)
        draw.rectangle((20, 90 - shift * 10, 100, 110 - shift * 10), fill=2)
        frames.append(frame)
    frames[0].save(HERE / "animated_transparent.gif", save_all=True, append_images=frames[1:], duration=200,
                   loop=0, transparency=0)

    upright = _shapes((300, 200), "RGB", (245, 240, 225))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers rotate it 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(HERE / "exif_rotated.jpg", quality=85, exif=exif.tobytes())

    stripes = np.zeros((160, 240, 3), np.uint8)
    stripes[:, :, 0] = (np.sin(np.arange(240) / 8.0) * 120 + 128).astype(np.uint8)
    stripes[:, :, 2] = (np.cos(np.arange(160) / 11.0) * 120 + 128).astype(np.uint8)[:, None]
    Image.fromarray(stripes, "RGB").save(HERE / "stripes.webp", quality=80)

    _shapes((64, 48), "RGB", (10, 10, 40)).save(HERE / "small.bmp")
    _gradient(640, 160).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(HERE / "wide_banner.jpg", quality=80)
    noise = rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").resize((96, 96)).save(HERE / "noise.tif", compression="tiff_lzw")


if __name__ == "__main__":
    main()
