"""Decoding uploaded images for the vision backends (OCR, captioning): one set of rules for every route.

``load_pages`` turns an upload into RGB page images, one at a time: PNG, JPEG, WebP, TIFF (every frame is a page),
BMP, or a PDF (``modelhost.media.pdf``, rendered page by page). Inputs that are not images are 415, corrupt ones 400,
oversized ones (dimensions, page count) 413 — never 500: dimensions are checked from the header before any pixel is
decoded (decompression bombs). Runs in workers only (Pillow).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from modelhost.errors import BadInput

if TYPE_CHECKING:
    from PIL import Image

IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF", "BMP", "MPO"}  # MPO: JPEGs from cameras with extra frames
# The first bytes of the formats above (WebP: "RIFF....WEBP"; only "RIFF" is checked, enough to call it corrupt).
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"RIFF")
DEFAULT_MAX_PAGES = 50
DEFAULT_MAX_PIXELS = 64_000_000  # an A4 page at 600 dpi is 35 MP
DEFAULT_DPI = 200


def load_pages(data: bytes, *, max_pages: int, max_pixels: int, dpi: int) -> Iterator[Image.Image]:
    """Decode an upload into RGB page images, one at a time (one page in memory), refusing what is not an image,
    corrupt or too large. Format, page count and dimensions are checked before the first page is decoded."""
    if data[:5] == b"%PDF-":
        from modelhost.media.pdf import render_pdf

        return render_pdf(data, max_pages=max_pages, max_pixels=max_pixels, dpi=dpi)
    return decode_image(data, max_pages=max_pages, max_pixels=max_pixels)


def decode_image(data: bytes, *, max_pages: int, max_pixels: int) -> Iterator[Image.Image]:
    import io

    from PIL import Image, UnidentifiedImageError

    # Pillow refuses images over twice this on open (DecompressionBombError); the explicit check below gives the
    # clear message. Module-level, but a vision worker only ever decodes uploads with these rules.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # over twice the limit: refused before reading any pixel
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        raise too_large(None, int(declared.group(1)) if declared else None, max_pixels) from None
    except UnidentifiedImageError as exc:
        if data.startswith(SIGNATURES):  # it says it is an image we read, but it does not decode: corrupt, not 415
            raise corrupt(exc) from None
        raise BadInput(
            "the file is not an image or PDF this server reads (PNG, JPEG, WebP, TIFF, BMP or PDF)",
            param="file",
            status=415,
            code="unsupported_media_type",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise corrupt(exc) from None
    if image.format not in IMAGE_FORMATS:
        raise BadInput(
            f"{image.format} images are not accepted; send PNG, JPEG, WebP, TIFF, BMP or PDF",
            param="file",
            status=415,
            code="unsupported_media_type",
        )
    try:
        frames = int(getattr(image, "n_frames", 1)) if image.format == "TIFF" else 1
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise corrupt(exc) from None
    if frames > max_pages:
        raise too_many_pages(frames, max_pages)
    width, height = image.size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise too_large(width, height, max_pixels)
    return _frames(image, frames, max_pixels)


def _frames(image: Image.Image, frames: int, max_pixels: int) -> Iterator[Image.Image]:
    from PIL import Image, ImageOps

    for index in range(frames):
        try:
            if index:
                image.seek(index)
            width, height = image.size
            if width < 1 or height < 1 or width * height > max_pixels:
                raise too_large(width, height, max_pixels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
                page = ImageOps.exif_transpose(image).convert("RGB")
        except BadInput:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise corrupt(exc) from None
        yield page


def too_large(width: int | None, height_or_pixels: int | None, max_pixels: int) -> BadInput:
    if width is not None:
        size = f"{width}×{height_or_pixels} pixels"
    elif height_or_pixels is not None:
        size = f"{height_or_pixels:,} pixels"
    else:
        size = "too many pixels"
    return BadInput(
        f"the image is {size}; at most {max_pixels:,} pixels per page (option max_image_pixels)",
        param="file",
        status=413,
        code="image_too_large",
    )


def too_many_pages(count: int, max_pages: int) -> BadInput:
    return BadInput(
        f"the document has {count} pages; at most {max_pages} per request (option max_pages)",
        param="file",
        status=413,
        code="too_many_pages",
    )


def corrupt(exc: BaseException) -> BadInput:
    return BadInput(f"the image could not be decoded: {exc}", param="file", code="invalid_image")
