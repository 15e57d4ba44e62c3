"""Narrated slide video: silence, text chunks for TTS, subtitle cues and one ffmpeg pass. ML-free (stdlib only).

``assemble_video`` joins the slide WAVs into one narration track and encodes the slide images with the
concat demuxer, each image lasting exactly as long as its slide's audio, in a single ffmpeg run (H.264 + AAC,
``+faststart``): the slide changes land on the nearest frame, so picture and sound stay within one frame.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelhost.media.slides import DeckError, run_command

NARRATION_SAMPLE_RATE = 24_000
DEFAULT_FPS = 25
MAX_CHUNK_CHARS = 400
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"'”’)\]])\s+")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str

    def as_segment(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "text": self.text}


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after ``. ! ? …`` followed by white space); whitespace collapsed."""
    flat = " ".join(text.split())
    return [part.strip() for part in _SENTENCE_END.split(flat) if part.strip()] if flat else []


def _split_long(sentence: str, max_chars: int) -> list[str]:
    """A sentence longer than ``max_chars``: split after commas/semicolons, then between words."""
    pieces: list[str] = []
    current = ""
    for token in re.split(r"(?<=[,;:])\s+|\s+", sentence):
        candidate = f"{current} {token}".strip()
        if current and len(candidate) > max_chars:
            pieces.append(current)
            current = token
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def chunk_text(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Whole sentences packed into chunks of at most ``max_chars`` (one TTS request each)."""
    chunks: list[str] = []
    current = ""
    for sentence in split_sentences(text):
        for piece in _split_long(sentence, max_chars) if len(sentence) > max_chars else [sentence]:
            candidate = f"{current} {piece}".strip()
            if current and len(candidate) > max_chars:
                chunks.append(current)
                current = piece
            else:
                current = candidate
    if current:
        chunks.append(current)
    return chunks


def pcm16_silence(seconds: float, sample_rate: int = NARRATION_SAMPLE_RATE) -> bytes:
    return b"\x00\x00" * max(0, round(seconds * sample_rate))


def wav_bytes(pcm: bytes, sample_rate: int = NARRATION_SAMPLE_RATE) -> bytes:
    """16-bit mono PCM → a WAV file's bytes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def read_wav(data: bytes) -> tuple[bytes, int]:
    """A 16-bit mono WAV's PCM and sample rate; ``ValueError`` for anything else."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise ValueError("narration audio must be 16-bit mono WAV")
            return wav.readframes(wav.getnframes()), wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file: {exc}") from exc


async def to_narration_wav(data: bytes, sample_rate: int = NARRATION_SAMPLE_RATE, timeout: float = 60.0) -> bytes:
    """Any audio → 16-bit mono WAV at ``sample_rate`` (returned as is when it already is one; ffmpeg otherwise)."""
    try:
        pcm, rate = read_wav(data)
    except ValueError:
        pass
    else:
        if rate == sample_rate:
            return wav_bytes(pcm, rate)  # a clean header (streamed WAVs may carry a maximal size)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise DeckError("ffmpeg is not installed on the server (Debian package ffmpeg)", code="tool_missing")
    args = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-vn", "-ac", "1"]
    args += ["-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]
    pcm = await run_command(args, timeout, "ffmpeg (audio to 24 kHz WAV)", stdin=data)
    return wav_bytes(pcm, sample_rate)


def wav_duration(data: bytes) -> float:
    pcm, rate = read_wav(data)
    return len(pcm) / 2 / rate


def slide_cues(chunks: Sequence[tuple[str, float]], offset: float) -> list[Cue]:
    """Cues for one slide from its TTS chunks (text, seconds): one cue per sentence, the chunk's measured
    duration shared among its sentences by their length in characters."""
    cues: list[Cue] = []
    start = offset
    for text, seconds in chunks:
        sentences = split_sentences(text) or [text]
        total_chars = sum(len(s) for s in sentences) or 1
        for sentence in sentences:
            share = seconds * len(sentence) / total_chars
            cues.append(Cue(round(start, 3), round(start + share, 3), sentence))
            start += share
    return cues


async def assemble_video(
    images: Sequence[Path],
    narrations: Sequence[bytes],
    output: Path,
    size: tuple[int, int],
    *,
    fps: int = DEFAULT_FPS,
    timeout: float = 600.0,
    threads: int = 0,
    preset: str = "ultrafast",
) -> list[float]:
    """Encode ``images[i]`` for exactly the length of ``narrations[i]`` (16-bit mono WAVs at one rate) into ``output``.

    Returns each slide's duration in seconds. One ffmpeg process: concat demuxer for the stills, one WAV track.
    x264 ``ultrafast`` by default: 2.5× faster than ``veryfast`` on slides (54 s of video: 3.1 s vs 8.0 s here) for
    files 2.8× larger (still ≈ 0.3 MB per minute of plain slides).
    """
    if len(images) != len(narrations) or not images:
        raise DeckError(
            f"{len(images)} slide images but {len(narrations)} narrations: they must match", code="slide_count_mismatch"
        )
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise DeckError("ffmpeg is not installed on the server (Debian package ffmpeg)", code="tool_missing")
    pcms: list[bytes] = []
    rate = 0
    for index, data in enumerate(narrations, start=1):
        pcm, slide_rate = read_wav(data)
        if rate and slide_rate != rate:
            raise DeckError(f"slide {index}'s audio is {slide_rate} Hz, the others {rate} Hz", code="audio_mismatch")
        rate = slide_rate
        pcms.append(pcm)
    durations = [len(pcm) / 2 / rate for pcm in pcms]
    if any(d <= 0 for d in durations):
        raise DeckError("every slide needs some audio (silence counts)", code="audio_mismatch")
    width, height = size
    work = Path(tempfile.mkdtemp(prefix="modelhost-video-"))
    try:
        narration = work / "narration.wav"
        narration.write_bytes(wav_bytes(b"".join(pcms), rate))
        lines = ["ffconcat version 1.0"]
        for image, seconds in zip(images, durations, strict=True):
            # a 1/1000 s image time base, so each slide starts on the millisecond the audio says (not on 1/25 s)
            lines += [f"file '{_concat_path(image)}'", "option framerate 1000", f"duration {seconds:.6f}"]
        lines += [
            f"file '{_concat_path(images[-1])}'",
            "option framerate 1000",
        ]  # the demuxer drops the last entry's duration otherwise
        listing = work / "slides.ffconcat"
        listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
        scale = (
            f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
            f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black,fps={fps},format=yuv420p"
        )
        partial = output.with_name(output.name + ".part.mp4")
        args = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        args += ["-f", "concat", "-safe", "0", "-i", str(listing), "-i", str(narration)]
        args += ["-map", "0:v:0", "-map", "1:a:0", "-vf", scale]
        args += ["-c:v", "libx264", "-preset", preset, "-tune", "stillimage", "-crf", "23", "-r", str(fps)]
        args += ["-c:a", "aac", "-b:a", "96k", "-t", f"{sum(durations):.6f}", "-movflags", "+faststart"]
        if threads:
            args += ["-threads", str(threads)]
        args.append(str(partial))
        try:
            await run_command(args, timeout, "ffmpeg (video assembly)")
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
        return durations
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _concat_path(path: Path) -> str:
    return str(path.resolve()).replace("'", "'\\''")
