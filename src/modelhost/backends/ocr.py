"""Shared logic of OCR backends: upload decoding and validation (Pillow, ``pdftoppm``), reading order, result shape.

Files: ``file`` — PNG, JPEG, WebP, TIFF (every frame is a page), BMP or PDF (rendered page by page with poppler's
``pdftoppm``). Payload: nothing required. Result::

    {"text": "full text in reading order; pages separated by a blank line",
     "pages": [{"width", "height", "lines": [{"text", "box": [[x, y] * 4], "confidence": 0..1}]}]}

``box`` is the line's quadrilateral in pixels of the page image (clockwise from top-left); a PDF page's image is
rendered at ``dpi`` (option, default 200).

Options (model options): ``max_pages`` (50), ``max_image_pixels`` (64 000 000 per page), ``dpi`` (200).
Inputs that are not images are answered 415, corrupt ones 400, oversized ones (dimensions, page count) 413 —
never 500: dimensions are checked from the header before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelhost.backends.base import Backend
from modelhost.worker.protocol import InvalidInput

if TYPE_CHECKING:
    from PIL import Image

IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF", "BMP", "MPO"}  # MPO: JPEGs from cameras with extra frames
DEFAULT_MAX_PAGES = 50
DEFAULT_MAX_PIXELS = 64_000_000  # an A4 page at 600 dpi is 35 MP
DEFAULT_DPI = 200
PDF_TIMEOUT_S = 300

Line = dict[str, Any]
Box = list[list[float]]


class OcrBackend(Backend):
    """Subclasses implement ``recognize(image)`` on an RGB Pillow image: rows of lines in reading order (the lines
    of one row are joined with a space in the text, rows with a newline)."""

    def recognize(self, image: Image.Image) -> list[list[Line]]:
        raise NotImplementedError

    def infer(self, payload: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
        path = files.get("file")
        if path is None:
            raise InvalidInput("no file in the request", param="file", code="missing_file")
        data = path.read_bytes()
        if not data:
            raise InvalidInput("the uploaded file is empty", param="file", code="empty_file")
        pages: list[dict[str, Any]] = []
        texts: list[str] = []
        for image in load_pages(
            data,
            max_pages=int(self.options.get("max_pages", DEFAULT_MAX_PAGES)),
            max_pixels=int(self.options.get("max_image_pixels", DEFAULT_MAX_PIXELS)),
            dpi=int(self.options.get("dpi", DEFAULT_DPI)),
        ):
            rows = self.recognize(image)
            lines = [line for row in rows for line in row]
            pages.append({"width": image.width, "height": image.height, "lines": lines})
            texts.append("\n".join(" ".join(str(line["text"]) for line in row) for row in rows))
        return {"text": "\n\n".join(texts).strip("\n"), "pages": pages}


def load_pages(data: bytes, *, max_pages: int, max_pixels: int, dpi: int) -> Iterator[Image.Image]:
    """Decode an upload into RGB page images, one at a time (one page in memory), refusing what is not an image,
    corrupt or too large. Format, page count and dimensions are checked before the first page is decoded."""
    if data[:5] == b"%PDF-":
        return render_pdf(data, max_pages=max_pages, max_pixels=max_pixels, dpi=dpi)
    return decode_image(data, max_pages=max_pages, max_pixels=max_pixels)


def decode_image(data: bytes, *, max_pages: int, max_pixels: int) -> Iterator[Image.Image]:
    import io

    from PIL import Image, UnidentifiedImageError

    # Pillow refuses images over twice this on open (DecompressionBombError); the explicit check below gives the
    # clear message. Module-level, but this worker process only ever decodes OCR uploads.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # over twice the limit: refused before reading any pixel
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(None, int(declared.group(1)) if declared else None, max_pixels) from None
    except UnidentifiedImageError:
        raise InvalidInput(
            "the file is not an image or PDF this server reads (PNG, JPEG, WebP, TIFF, BMP or PDF)",
            param="file",
            status=415,
            code="unsupported_media_type",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _corrupt(exc) from None
    if image.format not in IMAGE_FORMATS:
        raise InvalidInput(
            f"{image.format} images are not accepted; send PNG, JPEG, WebP, TIFF, BMP or PDF",
            param="file",
            status=415,
            code="unsupported_media_type",
        )
    try:
        frames = int(getattr(image, "n_frames", 1)) if image.format == "TIFF" else 1
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _corrupt(exc) from None
    if frames > max_pages:
        raise _too_many_pages(frames, max_pages)
    width, height = image.size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise _too_large(width, height, max_pixels)
    return _frames(image, frames, max_pixels)


def _frames(image: Image.Image, frames: int, max_pixels: int) -> Iterator[Image.Image]:
    from PIL import Image, ImageOps

    for index in range(frames):
        try:
            if index:
                image.seek(index)
            width, height = image.size
            if width < 1 or height < 1 or width * height > max_pixels:
                raise _too_large(width, height, max_pixels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
                page = ImageOps.exif_transpose(image).convert("RGB")
        except InvalidInput:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise _corrupt(exc) from None
        yield page


def render_pdf(data: bytes, *, max_pages: int, max_pixels: int, dpi: int) -> Iterator[Image.Image]:
    """Check the page count, then render page by page with ``pdftoppm`` (poppler-utils), each at ``dpi`` or lower
    where the page is so large that it would exceed ``max_pixels``."""
    tmp = tempfile.TemporaryDirectory(prefix="modelhost-ocr-")
    try:
        pdf = Path(tmp.name) / "input.pdf"
        pdf.write_bytes(data)
        info = _run(["pdfinfo", str(pdf)])
        match = re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE)
        count = int(match.group(1)) if match else 0
        if count < 1:
            raise InvalidInput("the PDF has no pages", param="file", code="invalid_pdf")
        if count > max_pages:
            raise _too_many_pages(count, max_pages)
        # Page sizes in points (1/72 in): "Page    3 size: 612 x 792 pts (letter)".
        sizes = _run(["pdfinfo", "-f", "1", "-l", str(count), str(pdf)])
        areas = {
            int(n): float(w) * float(h)
            for n, w, h in re.findall(r"^Page\s+(\d+) size:\s+([\d.]+) x ([\d.]+) pts", sizes, re.MULTILINE)
        }
    except BaseException:
        tmp.cleanup()
        raise
    return _pdf_pages(tmp, pdf, count, areas, max_pixels, dpi)


def _pdf_pages(
    tmp: tempfile.TemporaryDirectory[str], pdf: Path, count: int, areas: dict[int, float], max_pixels: int, dpi: int
) -> Iterator[Image.Image]:
    from PIL import Image

    with tmp:
        for number in range(1, count + 1):
            area = max(areas.get(number, 612.0 * 792.0), 1.0)
            page_dpi = max(1, min(dpi, int(72 * (max_pixels / area) ** 0.5)))
            out = Path(tmp.name) / "page"
            _run(
                ["pdftoppm", "-f", str(number), "-l", str(number), "-r", str(page_dpi), "-png", "-singlefile"]
                + [str(pdf), str(out)]
            )
            png = out.with_suffix(".png")
            if not png.is_file():
                raise InvalidInput(f"page {number} of the PDF could not be rendered", param="file", code="invalid_pdf")
            with Image.open(png) as image:
                page = image.convert("RGB")
            png.unlink()
            yield page


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, timeout=PDF_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise InvalidInput(
            f"{command[0]} (Debian poppler-utils) is not installed: PDF input is unavailable",
            param="file",
            status=503,
            code="pdf_support_missing",
        ) from None
    except subprocess.TimeoutExpired:
        raise InvalidInput(
            f"rendering the PDF took longer than {PDF_TIMEOUT_S} s", param="file", status=413, code="pdf_too_complex"
        ) from None
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"{command[0]} exited with {done.returncode}"
        raise InvalidInput(f"the PDF could not be read: {reason}", param="file", code="invalid_pdf")
    return done.stdout.decode(errors="replace")


def _too_large(width: int | None, height_or_pixels: int | None, max_pixels: int) -> InvalidInput:
    if width is not None:
        size = f"{width}×{height_or_pixels} pixels"
    elif height_or_pixels is not None:
        size = f"{height_or_pixels:,} pixels"
    else:
        size = "too many pixels"
    return InvalidInput(
        f"the image is {size}; at most {max_pixels:,} pixels per page (option max_image_pixels)",
        param="file",
        status=413,
        code="image_too_large",
    )


def _too_many_pages(count: int, max_pages: int) -> InvalidInput:
    return InvalidInput(
        f"the document has {count} pages; at most {max_pages} per request (option max_pages)",
        param="file",
        status=413,
        code="too_many_pages",
    )


def _corrupt(exc: BaseException) -> InvalidInput:
    return InvalidInput(f"the image could not be decoded: {exc}", param="file", code="invalid_image")


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
