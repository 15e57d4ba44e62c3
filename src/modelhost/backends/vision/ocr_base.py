"""Shared logic of OCR backends: upload decoding and validation (Pillow, ``pdftoppm``), reading order, result shape.

Files: ``file`` — PNG, JPEG, WebP, TIFF (every frame is a page), BMP or PDF (rendered page by page with poppler's
``pdftoppm``). Request: ``modelhost.schemas.ocr.OcrRequest`` (nothing but the model). Result (``OcrResult``)::

    {"text": "full text in reading order; pages separated by a blank line",
     "pages": [{"width", "height", "lines": [{"text", "box": [[x, y] * 4], "confidence": 0..1}]}]}

``box`` is the line's quadrilateral in pixels of the page image (clockwise from top-left); a PDF page's image is
rendered at ``dpi`` (option, default 200).

Options (model options): ``max_pages`` (50), ``max_image_pixels`` (64 000 000 per page), ``dpi`` (200).
Inputs that are not images are answered 415, corrupt ones 400, oversized ones (dimensions, page count) 413 —
never 500: dimensions are checked from the header before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelhost.backends.base import Backend, Files, require_file
from modelhost.media.images import DEFAULT_DPI, DEFAULT_MAX_PAGES, DEFAULT_MAX_PIXELS, load_pages
from modelhost.schemas.ocr import OcrPage, OcrRequest, OcrResult

if TYPE_CHECKING:
    from PIL import Image


Line = dict[str, Any]
Box = list[list[float]]


class OcrBackend(Backend[OcrRequest]):
    """Subclasses implement ``recognize(image)`` on an RGB Pillow image: rows of lines in reading order (the lines
    of one row are joined with a space in the text, rows with a newline)."""

    request_type = OcrRequest

    def recognize(self, image: Image.Image) -> list[list[Line]]:
        raise NotImplementedError

    def infer(self, request: OcrRequest, files: Files) -> OcrResult:
        data = require_file(files)
        pages: list[OcrPage] = []
        texts: list[str] = []
        for image in load_pages(
            data,
            max_pages=int(self.options.get("max_pages", DEFAULT_MAX_PAGES)),
            max_pixels=int(self.options.get("max_image_pixels", DEFAULT_MAX_PIXELS)),
            dpi=int(self.options.get("dpi", DEFAULT_DPI)),
        ):
            rows = self.recognize(image)
            lines = [line for row in rows for line in row]
            pages.append(OcrPage(width=image.width, height=image.height, lines=lines))
            texts.append("\n".join(" ".join(str(line["text"]) for line in row) for row in rows))
        return OcrResult(text="\n\n".join(texts).strip("\n"), pages=pages)


def quad(x0: float, y0: float, x1: float, y1: float) -> Box:
    """An axis-aligned box as the four corners, clockwise from top-left."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def reading_order(lines: list[Line]) -> list[list[Line]]:
    """Rows top to bottom, lines left to right within a row (vertical centres within half a line height)."""

    def bounds(line: Line) -> tuple[float, float, float]:
        ys = [p[1] for p in line["box"]]
        return min(ys), max(ys), min(p[0] for p in line["box"])

    rows: list[list[Line]] = []
    row_centre = row_height = 0.0
    for line in sorted(lines, key=lambda line: sum(bounds(line)[:2]) / 2):
        top, bottom, _ = bounds(line)
        centre, height = (top + bottom) / 2, bottom - top
        if rows and abs(centre - row_centre) <= max(min(height, row_height) / 2, 1.0):
            rows[-1].append(line)
        else:
            rows.append([line])
            row_centre, row_height = centre, height
    return [sorted(row, key=lambda line: bounds(line)[2]) for row in rows]
