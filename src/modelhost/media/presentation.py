"""The presentation-video pipeline's three steps over one job folder, independent of how jobs are run.

``processing_slides`` → ``notes.json`` + ``slides/NN.png``; ``synthesizing_audio`` → ``audio/NN.wav`` (+ the
measured duration of each TTS chunk in ``audio/NN.json``); ``assembling_video`` → ``video.mp4``,
``subtitles.srt`` and ``subtitles.vtt``. Every step skips what an earlier (interrupted) run already finished —
files are written under a temporary name and renamed — so a restarted job resumes where it stopped.

Speech comes through callables (``Synthesize``: text → WAV bytes; ``Convert``: WAV → WAV in the reference
voice), so the steps run the same under the local executor, Celery, or a test. ML-free: the serve process runs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelhost.media.slides import Deck, Slide, read_deck, render_slides
from modelhost.media.subtitles import to_srt, to_vtt
from modelhost.media.video import (
    DEFAULT_FPS,
    MAX_CHUNK_CHARS,
    NARRATION_SAMPLE_RATE,
    assemble_video,
    chunk_text,
    pcm16_silence,
    read_wav,
    slide_cues,
    to_narration_wav,
    wav_bytes,
)

log = logging.getLogger(__name__)

STAGES = ("processing_slides", "synthesizing_audio", "assembling_video")

Synthesize = Callable[[str], Awaitable[bytes]]
Convert = Callable[[bytes], Awaitable[bytes]]
Progress = Callable[[float], Awaitable[None] | None]


@dataclass(frozen=True)
class VideoOptions:
    silence_seconds: float = 1.0
    width: int | None = None
    height: int | None = None
    max_slides: int = 200
    max_chunk_chars: int = MAX_CHUNK_CHARS
    fps: int = DEFAULT_FPS
    tts_concurrency: int = 4
    conversion_timeout: float = 180.0
    render_parallel: int = 2


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)  # (a full disk: no half-written file left beside the others)
        raise


def slide_file_name(index: int, count: int, suffix: str) -> str:
    """``01.png`` … for 0-based ``index`` (at least two digits, more for decks of 100+ slides)."""
    return _name(index, count, suffix)


def _name(index: int, count: int, suffix: str) -> str:
    return f"{index + 1:0{max(2, len(str(count)))}d}{suffix}"


def load_deck(workdir: Path) -> tuple[Deck, tuple[int, int]]:
    notes = json.loads((workdir / "notes.json").read_text(encoding="utf-8"))
    deck = Deck(
        slides=[Slide(**slide) for slide in notes["slides"]],
        hidden=list(notes["hidden_slides"]),
        width_emu=int(notes["slide_width_emu"]),
        height_emu=int(notes["slide_height_emu"]),
    )
    return deck, (int(notes["width"]), int(notes["height"]))


async def processing_slides(pptx: Path, workdir: Path, options: VideoOptions) -> Deck:
    """Notes per slide and one PNG per visible slide (``slides/NN.png``); ``notes.json`` is written last."""
    if (workdir / "notes.json").is_file():
        deck, _ = load_deck(workdir)
        names = [_name(i, len(deck.slides), ".png") for i in range(len(deck.slides))]
        if all((workdir / "slides" / name).is_file() for name in names):
            return deck
    started = time.perf_counter()
    deck = await asyncio.to_thread(read_deck, pptx, options.max_slides)
    size = deck.frame_size(options.width, options.height)
    await render_slides(
        pptx, deck, workdir / "slides", size, timeout=options.conversion_timeout, parallel=options.render_parallel
    )
    log.info("rendered %d slides at %dx%d in %.2f s", len(deck.slides), *size, time.perf_counter() - started)
    notes = {**deck.to_json(), "width": size[0], "height": size[1], "silence_seconds": options.silence_seconds}
    _write_atomic(workdir / "notes.json", json.dumps(notes, indent=2, ensure_ascii=False).encode("utf-8"))
    return deck


async def narrate_slide(
    slide: Slide,
    synthesize: Synthesize,
    options: VideoOptions,
    convert: Convert | None = None,
    limit: asyncio.Semaphore | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """One slide's narration (24 kHz mono WAV) and its timing ``{"slide", "duration", "silent", "chunks"}``:
    TTS chunk by chunk (whole sentences, in parallel as ``limit`` allows), optionally re-voiced; a silent slide
    gets ``silence_seconds`` of silence."""
    limit = limit or asyncio.Semaphore(max(1, options.tts_concurrency))

    async def speak(text: str) -> bytes:
        async with limit:
            return await to_narration_wav(await synthesize(text))

    chunks: list[tuple[str, float]] = []
    if slide.silent:
        data = wav_bytes(pcm16_silence(options.silence_seconds))
    else:
        texts = chunk_text(slide.notes, options.max_chunk_chars)
        pieces = [read_wav(wav)[0] for wav in await asyncio.gather(*(speak(text) for text in texts))]
        chunks = [(text, len(pcm) / 2 / NARRATION_SAMPLE_RATE) for text, pcm in zip(texts, pieces, strict=True)]
        data = wav_bytes(b"".join(pieces))
        if len(data) <= 44 + 2 * round(0.05 * NARRATION_SAMPLE_RATE):  # nothing speakable ("…", symbols only)
            data = wav_bytes(pcm16_silence(options.silence_seconds))
            chunks = []
        elif convert is not None:
            async with limit:
                converted = await to_narration_wav(await convert(data))
            data = _same_length(converted, len(read_wav(data)[0]))
    duration = len(read_wav(data)[0]) / 2 / NARRATION_SAMPLE_RATE
    return data, {"slide": slide.number, "duration": duration, "silent": slide.silent, "chunks": chunks}


async def synthesizing_audio(
    workdir: Path,
    synthesize: Synthesize,
    options: VideoOptions,
    convert: Convert | None = None,
    progress: Progress | None = None,
) -> list[float]:
    """``audio/NN.wav`` + ``audio/NN.json`` for every slide (see ``narrate_slide``), skipping slides an earlier
    run finished. Returns each slide's duration in seconds."""
    deck, _ = load_deck(workdir)
    count = len(deck.slides)
    audio_dir = workdir / "audio"
    limit = asyncio.Semaphore(max(1, options.tts_concurrency))
    done = 0

    async def slide_audio(index: int, slide: Slide) -> float:
        nonlocal done
        wav_path = audio_dir / _name(index, count, ".wav")
        timing_path = audio_dir / _name(index, count, ".json")
        if wav_path.is_file() and timing_path.is_file():
            duration = float(json.loads(timing_path.read_text(encoding="utf-8"))["duration"])
        else:
            data, timing = await narrate_slide(slide, synthesize, options, convert, limit)
            duration = float(timing["duration"])
            _write_atomic(wav_path, data)
            _write_atomic(timing_path, json.dumps(timing, ensure_ascii=False).encode("utf-8"))
        done += 1
        if progress is not None:
            maybe = progress(done / count)
            if maybe is not None:
                await maybe
        return duration

    return list(await asyncio.gather(*(slide_audio(i, slide) for i, slide in enumerate(deck.slides))))


def _same_length(wav: bytes, frames_bytes: int) -> bytes:
    """Pad or trim converted audio to the original's length: the subtitle times were measured on it."""
    pcm, rate = read_wav(wav)
    pcm = pcm[:frames_bytes] + b"\x00" * max(0, frames_bytes - len(pcm))
    return wav_bytes(pcm, rate)


async def assembling_video(workdir: Path, options: VideoOptions) -> dict[str, Any]:
    """``video.mp4`` (one ffmpeg pass) and ``subtitles.srt``/``.vtt`` from the slide audio; returns the summary."""
    deck, size = load_deck(workdir)
    count = len(deck.slides)
    timings = [
        json.loads((workdir / "audio" / _name(i, count, ".json")).read_text(encoding="utf-8")) for i in range(count)
    ]
    cues = []
    offset = 0.0
    for timing in timings:
        cues += slide_cues([(text, seconds) for text, seconds in timing["chunks"]], offset)
        offset += float(timing["duration"])
    segments = [cue.as_segment() for cue in cues]
    _write_atomic(workdir / "subtitles.srt", to_srt(segments).encode("utf-8"))
    _write_atomic(workdir / "subtitles.vtt", to_vtt(segments).encode("utf-8"))
    video = workdir / "video.mp4"
    if not video.is_file():
        images = [workdir / "slides" / _name(i, count, ".png") for i in range(count)]
        narrations = [(workdir / "audio" / _name(i, count, ".wav")).read_bytes() for i in range(count)]
        started = time.perf_counter()
        await assemble_video(images, narrations, video, size, fps=options.fps, timeout=max(600.0, 5.0 * offset))
        seconds = time.perf_counter() - started
        log.info("assembled %.1f s of video (%d slides) in %.2f s", offset, count, seconds)
    return {
        "slides": count,
        "hidden_slides": deck.hidden,
        "duration": round(offset, 3),
        "slide_durations": [round(float(t["duration"]), 3) for t in timings],
        "width": size[0],
        "height": size[1],
        "fps": options.fps,
    }


def artifact_names(workdir: Path) -> list[tuple[str, str]]:
    """(relative name, media type) of every artifact present in a job folder, in a stable order."""
    media = {".mp4": "video/mp4", ".srt": "application/x-subrip", ".vtt": "text/vtt", ".png": "image/png"}
    media |= {".wav": "audio/wav", ".json": "application/json"}
    names: list[tuple[str, str]] = []
    for name in ("video.mp4", "subtitles.srt", "subtitles.vtt", "notes.json"):
        if (workdir / name).is_file():
            names.append((name, media[Path(name).suffix]))
    for folder, suffix in (("slides", ".png"), ("audio", ".wav")):
        for path in sorted((workdir / folder).glob(f"*{suffix}")) if (workdir / folder).is_dir() else []:
            names.append((f"{folder}/{path.name}", media[suffix]))
    return names
