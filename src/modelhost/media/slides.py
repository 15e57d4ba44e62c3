"""A .pptx deck → speaker notes per slide and one PNG per slide. ML-free: the serve process may use it.

* ``read_deck`` reads the notes with python-pptx. ``[SILENCE]``, empty or missing notes make a silent slide.
  Hidden slides are skipped (LibreOffice leaves them out of the PDF as well) and listed in ``Deck.hidden``.
* ``render_slides`` converts the deck to PDF with LibreOffice headless — each call with its own throw-away
  profile (``-env:UserInstallation``), because concurrent conversions on one profile fail at random — under a
  time limit, checks that the PDF exists and has one page per visible slide (soffice exits 0 on files it cannot
  load, and turns a 0-slide deck into one blank page), then renders page ranges with pdftoppm in parallel.

Errors are ``DeckError`` with a stable ``code``; the caller turns them into a 4xx at submission or a failed job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from modelhost.errors import StorageFull, tool_failed_for_space, tool_reason, tool_reports_disk_full

SILENCE_MARKER = "[SILENCE]"
EMU_PER_INCH = 914_400
DEFAULT_WIDTH = 1280
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


class DeckError(Exception):
    """A deck that cannot be turned into slides; ``code`` is stable, ``message`` says what to do."""

    def __init__(self, message: str, code: str = "invalid_presentation") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Slide:
    number: int  # 1-based position in the deck, hidden slides counted
    title: str
    notes: str  # "" for a silent slide
    silent: bool


@dataclass(frozen=True)
class Deck:
    slides: list[Slide]  # visible slides, in order
    hidden: list[int] = field(default_factory=list)  # 1-based numbers of hidden slides (skipped)
    width_emu: int = 12_192_000
    height_emu: int = 6_858_000

    def frame_size(self, width: int | None = None, height: int | None = None) -> tuple[int, int]:
        """Video frame size: the given one, or the deck's aspect ratio at 1280 px wide; both even (H.264 4:2:0)."""
        if width and height:
            return _even(width), _even(height)
        if width:
            return _even(width), _even(round(width * self.height_emu / self.width_emu))
        if height:
            return _even(round(height * self.width_emu / self.height_emu)), _even(height)
        return DEFAULT_WIDTH, _even(round(DEFAULT_WIDTH * self.height_emu / self.width_emu))

    def to_json(self) -> dict[str, Any]:
        return {
            "slides": [asdict(slide) for slide in self.slides],
            "hidden_slides": self.hidden,
            "slide_width_emu": self.width_emu,
            "slide_height_emu": self.height_emu,
        }


def _even(value: int) -> int:
    return max(2, int(value) // 2 * 2)


def _notes_text(raw: str) -> tuple[str, bool]:
    text = " ".join(raw.split())
    if not text or text.upper() == SILENCE_MARKER:
        return "", True
    return text, False


def check_pptx_bytes(head: bytes) -> None:
    """Cheap checks on the first bytes of an upload: a zip (OOXML) and not an encrypted/legacy OLE file."""
    if head.startswith(OLE_MAGIC):
        raise DeckError(
            "the file is password-protected or a legacy .ppt (an OLE container, not a .pptx): "
            "remove the password or save it as .pptx",
            code="encrypted_or_legacy_presentation",
        )
    if not head.startswith(b"PK\x03\x04"):
        raise DeckError("the file is not a .pptx presentation (not a zip container)", code="invalid_presentation")


def read_deck(path: Path, max_slides: int | None = None) -> Deck:
    """Notes of every visible slide. Raises ``DeckError`` for anything that is not a readable, non-empty deck."""
    with path.open("rb") as handle:
        return read_deck_stream(handle, max_slides)


def read_deck_stream(stream: BinaryIO, max_slides: int | None = None) -> Deck:
    """``read_deck`` on an open binary file (an upload's spooled file, at its start)."""
    check_pptx_bytes(stream.read(8))
    stream.seek(0)
    try:
        from pptx import Presentation
        from pptx.exc import PackageNotFoundError

        try:
            presentation = Presentation(stream)
        except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise DeckError(f"the file is not a readable .pptx presentation: {exc}") from exc
    except ImportError as exc:  # pragma: no cover - python-pptx is a core dependency
        raise DeckError("python-pptx is not installed: pip install 'modelhost[video]'", code="missing_package") from exc
    except DeckError:
        raise
    except Exception as exc:  # noqa: BLE001 - lxml/zip errors of every kind on corrupt parts
        raise DeckError(f"the file is not a readable .pptx presentation: {exc}") from exc
    slides: list[Slide] = []
    hidden: list[int] = []
    for number, slide in enumerate(presentation.slides, start=1):
        if slide._element.get("show") in ("0", "false"):
            hidden.append(number)
            continue
        raw = ""
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            raw = slide.notes_slide.notes_text_frame.text or ""
        notes, silent = _notes_text(raw)
        title_shape = slide.shapes.title
        title = " ".join((title_shape.text_frame.text if title_shape is not None else "").split())
        slides.append(Slide(number=number, title=title, notes=notes, silent=silent))
    total = len(slides) + len(hidden)
    if total == 0:
        raise DeckError("the presentation has no slides", code="empty_presentation")
    if not slides:
        raise DeckError(f"all {total} slides of the presentation are hidden", code="empty_presentation")
    if max_slides is not None and total > max_slides:
        raise DeckError(f"the presentation has {total} slides; the limit is {max_slides}", code="too_many_slides")
    width = int(presentation.slide_width or 12_192_000)
    height = int(presentation.slide_height or 6_858_000)
    return Deck(slides=slides, hidden=hidden, width_emu=width, height_emu=height)


async def run_command(
    args: list[str], timeout: float, what: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> bytes:
    """Run a command in its own process group; kill the whole group on timeout or cancellation.

    Returns stdout; raises ``DeckError`` (code ``conversion_timeout`` / ``conversion_failed``) on failure.
    """
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise DeckError(
                f"{what} took longer than {timeout:g} s and was stopped", code="conversion_timeout"
            ) from exc
        raise
    finally:
        # soffice may leave helpers in its group after the main process exits
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    errors = stderr.decode("utf-8", "replace")
    # ffmpeg exits 0 when only its last write fails for want of space (a cut file): its words count, whatever the status
    if proc.returncode != 0 or tool_reports_disk_full(errors):
        reason = tool_reason(errors, f"exit status {proc.returncode}", args[1:])
        if tool_failed_for_space(errors, tempfile.gettempdir()):  # the server's trouble, not the deck's
            raise StorageFull.in_folder(tempfile.gettempdir(), f"the files {what} writes", reason)
        raise DeckError(f"{what} failed: {reason}", code="conversion_failed")
    return stdout


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        package = "libreoffice-impress" if name == "soffice" else "poppler-utils"
        raise DeckError(f"{name} is not installed on the server (Debian package {package})", code="tool_missing")
    return found


async def convert_to_pdf(pptx: Path, out_dir: Path, timeout: float = 120.0) -> Path:
    """LibreOffice headless → ``out_dir/<stem>.pdf`` with a private profile removed afterwards."""
    soffice = _tool("soffice")
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="modelhost-lo-"))
    env = {**os.environ, "HOME": str(profile)}  # some LibreOffice versions write to $HOME as well
    try:
        await run_command(
            [
                soffice,
                f"-env:UserInstallation={profile.as_uri()}",
                "--headless",
                "--invisible",
                "--norestore",
                "--nolockcheck",
                "--nodefault",
                "--convert-to",
                "pdf",
                "--outdir",
                str(out_dir),
                str(pptx),
            ],
            timeout,
            "LibreOffice (pptx → pdf)",
            env=env,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    pdf = out_dir / f"{pptx.stem}.pdf"
    if not pdf.is_file() or pdf.stat().st_size == 0:
        raise DeckError(
            "LibreOffice could not open the presentation (no PDF was written): the file is corrupt or not a deck",
            code="invalid_presentation",
        )
    return pdf


async def pdf_page_count(pdf: Path, timeout: float = 30.0) -> int:
    out = await run_command([_tool("pdfinfo"), str(pdf)], timeout, "pdfinfo")
    match = re.search(rb"^Pages:\s+(\d+)", out, re.MULTILINE)
    if match is None:
        raise DeckError("the PDF LibreOffice wrote has no page count", code="conversion_failed")
    return int(match.group(1))


async def render_pages(
    pdf: Path, out_dir: Path, pages: int, size: tuple[int, int], parallel: int = 2, timeout: float = 120.0
) -> list[Path]:
    """pdftoppm, ``parallel`` page ranges at once → ``out_dir/01.png`` … (exactly ``size`` pixels each)."""
    pdftoppm = _tool("pdftoppm")
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="ppm-", dir=out_dir))
    parallel = max(1, min(parallel, pages))
    per_range = -(-pages // parallel)
    ranges = [(first, min(pages, first + per_range - 1)) for first in range(1, pages + 1, per_range)]
    width, height = size

    async def render(first: int, last: int) -> None:
        args = [pdftoppm, "-png", "-f", str(first), "-l", str(last), "-scale-to-x", str(width)]
        args += ["-scale-to-y", str(height), str(pdf), str(scratch / f"r{first:05d}")]
        await run_command(args, timeout, f"pdftoppm (pages {first}-{last})")

    try:
        await asyncio.gather(*(render(first, last) for first, last in ranges))
        rendered: dict[int, Path] = {}
        for png in scratch.glob("r*-*.png"):
            rendered[int(png.stem.rsplit("-", 1)[1])] = png
        if sorted(rendered) != list(range(1, pages + 1)):
            raise DeckError(f"pdftoppm rendered {len(rendered)} of {pages} pages", code="slide_count_mismatch")
        digits = max(2, len(str(pages)))
        outputs = []
        for page in range(1, pages + 1):
            target = out_dir / f"{page:0{digits}d}.png"
            rendered[page].replace(target)
            outputs.append(target)
        return outputs
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def render_slides(
    pptx: Path,
    deck: Deck,
    out_dir: Path,
    size: tuple[int, int],
    *,
    timeout: float = 120.0,
    parallel: int = 2,
) -> list[Path]:
    """The deck's visible slides as PNGs in ``out_dir`` (``01.png`` …), one per ``deck.slides`` entry.

    Raises ``DeckError`` when LibreOffice writes no PDF or a PDF whose page count differs from the slide count.
    """
    work = Path(tempfile.mkdtemp(prefix="modelhost-pdf-"))
    try:
        pdf = await convert_to_pdf(pptx, work, timeout)
        pages = await pdf_page_count(pdf)
        if pages != len(deck.slides):
            hidden = f" ({len(deck.hidden)} hidden slides skipped)" if deck.hidden else ""
            raise DeckError(
                f"LibreOffice rendered {pages} pages but the deck has {len(deck.slides)} visible slides{hidden}; "
                "the slide images and the narration would not line up",
                code="slide_count_mismatch",
            )
        return await render_pages(pdf, out_dir, pages, size, parallel=parallel, timeout=timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
