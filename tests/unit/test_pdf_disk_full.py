"""A PDF rendered onto a full disk: 507 storage_full, not 400 invalid_pdf (pdftoppm does not say "No space left on
device": libpng reports a write error and pdftoppm crashes). Real poppler, a real tmpfs."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from modelhost.errors import BadInput, StorageFull
from modelhost.media.pdf import render_pdf
from tests.support.disks import fill, small_disk

pytestmark = pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils is not installed")


def noisy_pdf() -> bytes:
    """One letter-sized page of lines and text: a few kB as PDF, megabytes as a 300 dpi PNG."""
    page = Image.new("RGB", (612, 792), "white")
    draw = ImageDraw.Draw(page)
    for y in range(0, 792, 6):
        draw.line([(0, y), (612, (y * 7) % 792)], fill=((y * 3) % 256, (y * 5) % 256, (y * 11) % 256), width=2)
        draw.text((10, y), f"line {y} of a page that renders large", fill="black")
    out = io.BytesIO()
    page.save(out, "PDF", resolution=72)
    return out.getvalue()


def render(data: bytes) -> list[Image.Image]:
    return list(render_pdf(data, max_pages=4, max_pixels=40_000_000, dpi=300))


def test_a_page_that_does_not_fit_on_the_disk_is_storage_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = noisy_pdf()
    with small_disk(tmp_path / "disk", "4m") as disk:
        monkeypatch.setattr(tempfile, "tempdir", str(disk))
        pages = render(data)  # with room: the real page (the test's PDF renders)
        assert len(pages) == 1
        assert pages[0].size == (2550, 3300)

        reserve = disk / "reserve"
        reserve.write_bytes(b"r" * (len(data) + 256 * 1024))  # room for the PDF, not for its rendered page
        fill(disk)
        reserve.unlink()
        with pytest.raises(StorageFull) as raised:
            render(data)
        assert raised.value.status_code == 507
        assert raised.value.code == "storage_full"
        assert str(disk) in raised.value.message
        assert "free some space there" in raised.value.message
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # its scratch folder is gone


def test_a_broken_pdf_with_room_on_the_disk_is_still_invalid_pdf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with small_disk(tmp_path / "disk", "4m") as disk:
        monkeypatch.setattr(tempfile, "tempdir", str(disk))
        with pytest.raises(BadInput) as raised:
            render(b"%PDF-1.4\nthis is no pdf\n")
        assert raised.value.code == "invalid_pdf"
        assert str(disk) not in raised.value.message, raised.value.message  # pdftoppm names the file it was given
