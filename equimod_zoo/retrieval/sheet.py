"""The contact sheet: one row per (query, model), the query then its neighbours, drawn with Pillow.

    label | query | n1 n2 ... nk        a header row names the columns; each tile has a caption under it;
    label | query | n1 n2 ... nk        rows come in groups (one group per query, one row per model),
                                        groups a little apart
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

_BACKGROUND = (255, 255, 255)
_TEXT = (30, 30, 30)
_MISSING = (200, 200, 200)
_FRAME = (0, 160, 60)
_MARGIN = 8
_SPACING = 2  # between neighbours
_QUERY_GAP = 10  # between the query and its first neighbour
_GROUP_GAP = 10  # between one query's rows and the next query's
_FONT_SIZE = 12
_CAPTION = _FONT_SIZE + 4  # height of the caption strip under each tile
_FRAME_WIDTH = 3


@dataclass
class Tile:
    """One cell: an image (None when it could not be read: drawn as a crossed grey square)."""

    image: Image.Image | None
    caption: str = ""
    framed: bool = False  # a green frame, e.g. a neighbour of the query's own class


@dataclass
class SheetRow:
    label: str  # the model, in the label column
    tiles: list[Tile]  # the query, then its neighbours


@dataclass
class SheetLayout:
    """Where each tile went: `cell(row, column)` is its (left, top, right, bottom) box."""

    thumbnail: int
    boxes: list[list[tuple[int, int, int, int]]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.boxes)

    @property
    def columns(self) -> int:
        return len(self.boxes[0]) if self.boxes else 0

    def cell(self, row: int, column: int) -> tuple[int, int, int, int]:
        return self.boxes[row][column]


def sheet_size(*, rows: int, columns: int, groups: int, thumbnail: int, label_width: int) -> tuple[int, int]:
    """(width, height) of a sheet, computed before anything is drawn (so its size can be checked first)."""
    width = 2 * _MARGIN + label_width + columns * thumbnail + _QUERY_GAP + max(columns - 2, 0) * _SPACING
    height = 2 * _MARGIN + _CAPTION + rows * (thumbnail + _CAPTION) + max(groups - 1, 0) * _GROUP_GAP
    return width, height


def label_width(labels: Sequence[str]) -> int:
    """The width of the label column for these labels."""
    font = _font()
    return max((int(font.getlength(label)) for label in labels), default=0) + 2 * _MARGIN


def draw_sheet(rows: Sequence[SheetRow], *, thumbnail: int, group_size: int = 1,
               header: Sequence[str] = ()) -> tuple[Image.Image, SheetLayout]:
    """Draw `rows` (each the same number of tiles of `thumbnail` px), `group_size` rows a group.

    `header` captions the columns (query first). Returns the sheet and where each tile went.
    """
    columns = len(rows[0].tiles) if rows else 0
    if any(len(row.tiles) != columns for row in rows):
        raise ValueError("every row of a sheet has the same number of tiles")
    groups = -(-len(rows) // group_size) if rows else 0
    labels = label_width([row.label for row in rows])
    size = sheet_size(rows=len(rows), columns=columns, groups=groups, thumbnail=thumbnail, label_width=labels)
    sheet = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    lefts = [_MARGIN + labels + c * thumbnail + (_QUERY_GAP + (c - 1) * _SPACING if c else 0) for c in range(columns)]
    for column, text in enumerate(header[:columns]):
        _caption(draw, font, text, lefts[column], _MARGIN, thumbnail)
    layout = SheetLayout(thumbnail)
    top = _MARGIN + _CAPTION
    for number, row in enumerate(rows):
        if number and number % group_size == 0:
            top += _GROUP_GAP
        draw.text((_MARGIN, top + thumbnail // 2), row.label, fill=_TEXT, font=font, anchor="lm")
        boxes = []
        for left, tile in zip(lefts, row.tiles):
            box = (left, top, left + thumbnail, top + thumbnail)
            _draw_tile(sheet, draw, tile, box)
            _caption(draw, font, tile.caption, left, top + thumbnail, thumbnail)
            boxes.append(box)
        layout.boxes.append(boxes)
        top += thumbnail + _CAPTION
    return sheet, layout


def _draw_tile(sheet: Image.Image, draw: ImageDraw.ImageDraw, tile: Tile, box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    if tile.image is None:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=_MISSING)
        draw.line((left, top, right - 1, bottom - 1), fill=_BACKGROUND, width=2)
        draw.line((left, bottom - 1, right - 1, top), fill=_BACKGROUND, width=2)
    else:
        if tile.image.size != (right - left, bottom - top):
            raise ValueError(f"a tile of {tile.image.size} in a sheet of {right - left} px thumbnails")
        sheet.paste(tile.image, (left, top))
    if tile.framed:
        draw.rectangle((left, top, right - 1, bottom - 1), outline=_FRAME, width=_FRAME_WIDTH)


def _caption(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, text: str, left: int, top: int,
             width: int) -> None:
    while text and font.getlength(text) > width:  # cut to the tile's width
        text = text[:-2] + "…" if len(text) > 1 else ""
    draw.text((left + width // 2, top + _CAPTION // 2), text, fill=_TEXT, font=font, anchor="mm")


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=_FONT_SIZE)
