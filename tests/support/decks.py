"""Presentation decks built with python-pptx for the slide/video tests, and frame comparisons with ffmpeg."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SlideSpec:
    title: str
    notes: str | None  # None: no notes page at all
    color: tuple[int, int, int]
    hidden: bool = False
    body: str = ""


# A small deck with every kind of slide: spoken notes, [SILENCE], a hidden slide, empty notes, missing notes.
STANDARD_DECK = (
    SlideSpec("Welcome", "Hello and welcome to the quarterly review.", (200, 40, 40), body="Agenda for today"),
    SlideSpec("A pause", "[SILENCE]", (40, 160, 40)),
    SlideSpec("Secret", "This hidden slide must never be spoken.", (128, 128, 128), hidden=True),
    SlideSpec("No words", "", (40, 40, 200)),
    SlideSpec("Goodbye", "Thank you for listening. See you next time.", (220, 200, 40), body="Questions?"),
)


def build_deck(path: Path, slides: tuple[SlideSpec, ...] = STANDARD_DECK, widescreen: bool = True) -> Path:
    from pptx import Presentation
    from pptx.dml.color import RGBColor
    from pptx.util import Inches

    presentation = Presentation()
    if widescreen:
        presentation.slide_width, presentation.slide_height = Inches(13.333), Inches(7.5)
    for spec in slides:
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = spec.title
        if spec.body:
            slide.placeholders[1].text = spec.body
        fill = slide.background.fill
        fill.solid()
        fill.fore_color.rgb = RGBColor(*spec.color)
        if spec.notes is not None:
            slide.notes_slide.notes_text_frame.text = spec.notes
        if spec.hidden:
            slide._element.set("show", "0")
    presentation.save(str(path))
    return path


def build_empty_deck(path: Path) -> Path:
    from pptx import Presentation

    Presentation().save(str(path))
    return path


def build_corrupt_deck(path: Path, source: Path) -> Path:
    """A zip that starts like a deck but whose slide XML is truncated (LibreOffice writes no PDF for it)."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def small_rgb(image_or_video: Path, at: float | None = None, size: tuple[int, int] = (32, 18)) -> bytes:
    """Raw RGB bytes of an image, or of a video's frame at ``at`` seconds, scaled down to ``size``."""
    args = ["ffmpeg", "-nostdin", "-loglevel", "error"]
    if at is not None:
        args += ["-ss", f"{at:.3f}"]
    args += ["-i", str(image_or_video), "-frames:v", "1", "-vf", f"scale={size[0]}:{size[1]}"]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    return subprocess.run(args, check=True, capture_output=True).stdout


def video_frames(video: Path, size: tuple[int, int] = (32, 18)) -> list[bytes]:
    """Every decoded frame of a video as raw RGB bytes scaled down to ``size`` (frame i is shown from i / fps)."""
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(video), "-vf", f"scale={size[0]}:{size[1]}"]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    raw = subprocess.run(args, check=True, capture_output=True).stdout
    step = size[0] * size[1] * 3
    return [raw[i : i + step] for i in range(0, len(raw), step)]


def mean_abs_difference(a: bytes, b: bytes) -> float:
    assert len(a) == len(b)
    assert a
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def audio_peak(video: Path, start: float, end: float) -> float:
    """Peak absolute sample (0..1) of the video's audio between ``start`` and ``end`` seconds."""
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-ss", f"{start:.3f}", "-to", f"{end:.3f}", "-i", str(video)]
    args += ["-vn", "-ac", "1", "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]
    pcm = subprocess.run(args, check=True, capture_output=True).stdout
    samples = memoryview(pcm).cast("h")
    return max((abs(s) for s in samples), default=0) / 32768


def probe(video: Path) -> dict[str, object]:
    import json

    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(video)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result
