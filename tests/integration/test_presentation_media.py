"""Slides and video with the real tools: LibreOffice headless, pdftoppm and ffmpeg (speech from flite)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from modelhost.media.slides import DeckError, read_deck, render_slides
from modelhost.media.video import assemble_video, pcm16_silence, read_wav, wav_bytes
from tests.support.audio import convert, flite_wav
from tests.support.decks import (
    STANDARD_DECK,
    audio_peak,
    build_corrupt_deck,
    build_deck,
    build_empty_deck,
    mean_abs_difference,
    probe,
    small_rgb,
    video_frames,
)

pytestmark = pytest.mark.skipif(
    not (shutil.which("soffice") and shutil.which("pdftoppm") and shutil.which("ffmpeg")),
    reason="needs LibreOffice, poppler-utils and ffmpeg: run scripts/system-deps.sh",
)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files of the code under test go here, so the test can check that none are left behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_notes_hidden_and_silent_slides(tmp_path: Path) -> None:
    deck = read_deck(build_deck(tmp_path / "deck.pptx"))
    assert [slide.number for slide in deck.slides] == [1, 2, 4, 5]
    assert deck.hidden == [3]
    assert [slide.silent for slide in deck.slides] == [False, True, True, False]
    assert deck.slides[0].notes == STANDARD_DECK[0].notes
    assert deck.slides[0].title == "Welcome"
    assert deck.frame_size() == (1280, 720)


def test_deck_renders_one_png_per_visible_slide(tmp_path: Path, private_tmp: Path) -> None:
    pptx = build_deck(tmp_path / "deck.pptx")
    deck = read_deck(pptx)
    pngs = asyncio.run(render_slides(pptx, deck, tmp_path / "slides", (640, 360)))
    assert [png.name for png in pngs] == ["01.png", "02.png", "03.png", "04.png"]
    visible = [spec for spec in STANDARD_DECK if not spec.hidden]
    for png, spec in zip(pngs, visible, strict=True):
        corner = small_rgb(png, size=(8, 8))[:3]  # the top-left pixel shows the slide's background colour
        assert all(abs(a - b) < 30 for a, b in zip(corner, spec.color, strict=True)), (png, corner, spec.color)
    assert list(private_tmp.iterdir()) == []  # LibreOffice profile and PDF folder removed


def test_bad_decks_fail_clearly(tmp_path: Path, private_tmp: Path) -> None:
    with pytest.raises(DeckError) as empty:
        read_deck(build_empty_deck(tmp_path / "empty.pptx"))
    assert empty.value.code == "empty_presentation"

    with pytest.raises(DeckError) as too_many:
        read_deck(build_deck(tmp_path / "deck.pptx"), max_slides=3)
    assert too_many.value.code == "too_many_slides"

    not_a_deck = tmp_path / "notes.pptx"
    not_a_deck.write_text("just text")
    with pytest.raises(DeckError, match="not a .pptx"):
        read_deck(not_a_deck)

    corrupt = build_corrupt_deck(tmp_path / "corrupt.pptx", tmp_path / "deck.pptx")
    with pytest.raises(DeckError) as bad:
        read_deck(corrupt)
    assert bad.value.code == "invalid_presentation"

    # A deck python-pptx reads but LibreOffice cannot render: soffice exits 0 and writes nothing.
    fake = tmp_path / "fake.pptx"
    fake.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    deck = read_deck(build_deck(tmp_path / "deck2.pptx"))
    with pytest.raises(DeckError) as no_pdf:
        asyncio.run(render_slides(fake, deck, tmp_path / "out", (320, 180)))
    assert no_pdf.value.code == "invalid_presentation"
    assert list(private_tmp.iterdir()) == []


def test_page_count_must_match_the_slides(tmp_path: Path, private_tmp: Path) -> None:
    pptx = build_deck(tmp_path / "deck.pptx")
    deck = read_deck(pptx)
    wrong = type(deck)(slides=deck.slides[:3], hidden=deck.hidden)
    with pytest.raises(DeckError) as mismatch:
        asyncio.run(render_slides(pptx, wrong, tmp_path / "out", (320, 180)))
    assert mismatch.value.code == "slide_count_mismatch"
    assert "4 pages" in mismatch.value.message
    assert "3 visible slides" in mismatch.value.message
    assert list(private_tmp.iterdir()) == []


def test_video_spans_match_images_and_audio(tmp_path: Path, private_tmp: Path) -> None:
    pptx = build_deck(tmp_path / "deck.pptx")
    deck = read_deck(pptx)
    pngs = asyncio.run(render_slides(pptx, deck, tmp_path / "slides", (640, 360)))
    narrations = []
    for index, slide in enumerate(deck.slides):
        if slide.silent:
            narrations.append(wav_bytes(pcm16_silence(1.0)))
            continue
        raw = flite_wav(slide.notes, "slt", tmp_path / f"raw{index}.wav")
        narrations.append(convert(raw, tmp_path / f"n{index}.wav", "-ar", "24000", "-ac", "1").read_bytes())
    video = tmp_path / "video.mp4"
    durations = asyncio.run(assemble_video(pngs, narrations, video, (640, 360)))
    expected = [len(read_wav(data)[0]) / 2 / 24_000 for data in narrations]
    assert durations == pytest.approx(expected)

    info = probe(video)
    streams = {s["codec_type"]: s for s in info["streams"]}  # type: ignore[attr-defined]
    assert streams["video"]["codec_name"] == "h264"
    assert streams["audio"]["codec_name"] == "aac"
    assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
    assert float(info["format"]["duration"]) == pytest.approx(sum(expected), abs=0.1)  # type: ignore[index]
    # +faststart: the moov atom precedes the media data
    head = video.read_bytes()[:4096]
    assert head.find(b"moov") != -1
    assert head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat")

    fps = 25
    frames = video_frames(video)
    images = [small_rgb(png) for png in pngs]

    def shown(frame: bytes) -> int:
        differences = [mean_abs_difference(frame, image) for image in images]
        best = min(range(len(images)), key=differences.__getitem__)
        assert differences[best] < 8, differences
        return best

    start = 0.0
    for index, (seconds, slide) in enumerate(zip(expected, deck.slides, strict=True)):
        assert shown(frames[int((start + seconds / 2) * fps)]) == index  # mid-span frame shows this slide
        first = next(i for i, frame in enumerate(frames) if shown(frame) == index)
        assert abs(first / fps - start) <= 1 / fps, (slide.number, first / fps, start)  # within one frame
        peak = audio_peak(video, start + 0.1, start + seconds - 0.1)
        assert (peak < 0.01) if slide.silent else (peak > 0.05), (slide.number, peak)
        start += seconds
    assert list(private_tmp.iterdir()) == []


def test_pipeline_steps_resume_where_they_stopped(tmp_path: Path, private_tmp: Path) -> None:
    """The three steps over one job folder; a rerun after losing one slide's audio redoes only that slide."""
    from modelhost.media.presentation import (
        VideoOptions,
        artifact_names,
        assembling_video,
        processing_slides,
        synthesizing_audio,
    )

    pptx = build_deck(tmp_path / "deck.pptx")
    workdir = tmp_path / "job"
    options = VideoOptions(silence_seconds=0.5, width=320, max_chunk_chars=42)
    spoken: list[str] = []

    async def synthesize(text: str) -> bytes:
        spoken.append(text)
        path = flite_wav(text, "slt", tmp_path / f"tts{len(spoken)}.wav")
        return path.read_bytes()  # 16 kHz: the step resamples to 24 kHz

    async def run() -> dict[str, object]:
        await processing_slides(pptx, workdir, options)
        await synthesizing_audio(workdir, synthesize, options)
        return await assembling_video(workdir, options)

    summary = asyncio.run(run())
    assert summary["slides"] == 4
    assert summary["hidden_slides"] == [3]
    assert (summary["width"], summary["height"]) == (320, 180)
    # notes longer than 42 characters went out as one request per sentence (requests run concurrently)
    assert sorted(spoken) == [
        "Hello and welcome to the quarterly review.",
        "See you next time.",
        "Thank you for listening.",
    ]
    durations = summary["slide_durations"]
    assert durations[1:3] == [0.5, 0.5]  # type: ignore[index]
    assert float(probe(workdir / "video.mp4")["format"]["duration"]) == pytest.approx(  # type: ignore[index]
        summary["duration"], abs=0.1
    )
    srt = (workdir / "subtitles.srt").read_text()
    assert "Thank you for listening." in srt
    assert "hidden" not in srt
    names = [name for name, _ in artifact_names(workdir)]
    assert names[:4] == ["video.mp4", "subtitles.srt", "subtitles.vtt", "notes.json"]
    assert "slides/04.png" in names
    assert "audio/04.wav" in names

    (workdir / "audio" / "04.wav").unlink()
    (workdir / "video.mp4").unlink()
    spoken.clear()
    again = asyncio.run(run())
    assert sorted(spoken) == ["See you next time.", "Thank you for listening."]
    assert again["duration"] == pytest.approx(summary["duration"], abs=0.01)
    assert list(private_tmp.iterdir()) == []


def test_notes_that_produce_no_speech_become_silence() -> None:
    from modelhost.media.presentation import VideoOptions, narrate_slide
    from modelhost.media.slides import Slide

    async def mute(_text: str) -> bytes:
        return wav_bytes(b"")  # what a TTS model may answer for notes like "…"

    data, timing = asyncio.run(narrate_slide(Slide(1, "t", "…", False), mute, VideoOptions(silence_seconds=0.7)))
    assert timing["duration"] == pytest.approx(0.7)
    assert timing["chunks"] == []
    assert len(read_wav(data)[0]) == 2 * round(0.7 * 24_000)
