"""PDF pages as images, rendered with poppler's ``pdftoppm`` (Debian poppler-utils): the page count is checked
first, then pages are rendered one at a time (one in memory), each at ``dpi`` or lower where a large page would
exceed ``max_pixels``. Runs in workers only."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from modelhost.errors import (
    BackendFault,
    BadInput,
    StorageFull,
    tool_failed_for_space,
    tool_reason,
    tool_reports_disk_full,
)
from modelhost.media.images import too_many_pages

if TYPE_CHECKING:
    from PIL import Image

PDF_TIMEOUT_S = 300


def render_pdf(data: bytes, *, max_pages: int, max_pixels: int, dpi: int) -> Iterator[Image.Image]:
    """Check the page count, then render page by page with ``pdftoppm`` (poppler-utils), each at ``dpi`` or lower
    where the page is so large that it would exceed ``max_pixels``."""
    tmp = tempfile.TemporaryDirectory(prefix="modelhost-ocr-")
    try:
        pdf = Path(tmp.name) / "input.pdf"
        pdf.write_bytes(data)
        info = _run(["pdfinfo", str(pdf)], pdf.parent)
        match = re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE)
        count = int(match.group(1)) if match else 0
        if count < 1:
            raise BadInput("the PDF has no pages", param="file", code="invalid_pdf")
        if count > max_pages:
            raise too_many_pages(count, max_pages)
        # Page sizes in points (1/72 in): "Page    3 size: 612 x 792 pts (letter)".
        sizes = _run(["pdfinfo", "-f", "1", "-l", str(count), str(pdf)], pdf.parent)
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
                + [str(pdf), str(out)],
                out.parent,
            )
            png = out.with_suffix(".png")
            if not png.is_file():
                raise BadInput(f"page {number} of the PDF could not be rendered", param="file", code="invalid_pdf")
            with Image.open(png) as image:
                page = image.convert("RGB")
            png.unlink()
            yield page


def _run(command: list[str], folder: Path) -> str:
    """``command``'s output; a failure is the PDF's (400 ``invalid_pdf``) unless ``folder``, where it writes, ran
    out of space (507 ``storage_full``)."""
    try:
        done = subprocess.run(command, capture_output=True, timeout=PDF_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise BackendFault(
            f"{command[0]} (Debian poppler-utils) is not installed: PDF input is unavailable",
            param="file",
            code="pdf_support_missing",
        ) from None
    except subprocess.TimeoutExpired:
        raise BadInput(
            f"rendering the PDF took longer than {PDF_TIMEOUT_S} s", param="file", status=413, code="pdf_too_complex"
        ) from None
    errors = done.stderr.decode(errors="replace")
    if done.returncode != 0 or tool_reports_disk_full(errors):
        reason = tool_reason(errors, f"{command[0]} exited with {done.returncode}", command[1:])
        if tool_failed_for_space(errors, folder):
            raise StorageFull.in_folder(folder.parent, f"the pages {command[0]} renders", reason)
        raise BadInput(f"the PDF could not be read: {reason}", param="file", code="invalid_pdf")
    return done.stdout.decode(errors="replace")
