"""Decode any audio ffmpeg understands into 16 kHz mono float32 samples. Used by backends in workers only.

Audio is always decoded from a FILE, never from a pipe: containers such as mp4/m4a written without "faststart"
keep their index (the moov atom) at the end, which ffmpeg can only reach by seeking. Input that is not empty but
decodes to no samples is a 415 (``no_audio``), never an empty result. Long audio can be read in windows
(``audio_windows``) so that memory stays flat; ``max_seconds`` refuses audio longer than a limit with a 413,
before decoding when the container states its duration.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from modelhost.errors import BackendFault, BadInput, StorageFull, tool_reason, tool_reports_disk_full
from modelhost.media.cuts import quietest_centre

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16_000
#: Window length used by backends that process long audio piece by piece (whisper, VAD).
WINDOW_SECONDS = 600.0


def _ffmpeg() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise BackendFault("ffmpeg is not installed on the worker host", code="ffmpeg_missing")
    return ffmpeg


@contextlib.contextmanager
def _as_file(source: Path | bytes) -> Iterator[Path]:
    """A path to read ``source`` from: the path itself, or a private temporary file holding the bytes."""
    if isinstance(source, Path):
        yield source
        return
    with tempfile.NamedTemporaryFile(prefix="modelhost-audio-") as handle:
        handle.write(source)
        handle.flush()
        yield Path(handle.name)


def probe_duration(path: Path, timeout: float = 30.0) -> float | None:
    """The duration the container declares, or None when it declares none (or cannot be opened, or neither PyAV
    nor ffprobe is installed). Read in-process with PyAV (the libavformat ffprobe uses) when it is installed — a
    few ms, where an ffprobe process costs 0.05-0.1 s per request; otherwise by ffprobe."""
    try:
        import av
    except ImportError:
        return _ffprobe_duration(path, timeout)
    try:
        with av.open(str(path)) as container:
            duration = container.duration  # in av.time_base units (microseconds), as ffprobe's format=duration
    except (av.FFmpegError, OSError, ValueError):
        return None
    return None if duration is None or duration < 0 else duration / av.time_base


def _ffprobe_duration(path: Path, timeout: float) -> float | None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    command = [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)]
    try:
        proc = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        value = json.loads(proc.stdout or b"{}").get("format", {}).get("duration")
        return float(value) if value not in (None, "N/A") else None
    except (ValueError, TypeError, subprocess.TimeoutExpired):
        return None


def _too_long(seconds: float, max_seconds: float) -> BadInput:
    return BadInput(
        f"the audio is {seconds:.0f} s long; this server accepts at most {max_seconds:g} s (max_audio_seconds)",
        param="file",
        status=413,
        code="audio_too_long",
    )


def _undecodable(stderr: bytes, returncode: int, path: Path) -> BadInput:
    reason = tool_reason(stderr.decode("utf-8", "replace"), f"ffmpeg exited with {returncode}", [path])
    return BadInput(
        f"the uploaded file could not be decoded as audio: {reason}", param="file", status=415, code="invalid_audio"
    )


def _no_audio(stderr: bytes, path: Path) -> BadInput:
    detail = tool_reason(stderr.decode("utf-8", "replace"), "", [path])
    reason = f" (ffmpeg: {detail})" if detail else ""
    return BadInput(
        "the uploaded file is not empty but holds no decodable audio: no audio stream, or a truncated or "
        f"unsupported container{reason}",
        param="file",
        status=415,
        code="no_audio",
    )


def audio_windows(
    source: Path | bytes,
    *,
    window_seconds: float = WINDOW_SECONDS,
    max_seconds: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(offset_seconds, samples)`` windows of mono float32 audio, decoded by one ffmpeg process reading a
    file; at most one window is held in memory. Empty input yields nothing; input that is not empty but decodes
    to no samples raises ``BadInput`` 415 ``no_audio``; undecodable input 415 ``invalid_audio``; audio longer
    than ``max_seconds`` 413 ``audio_too_long`` (before decoding when the container says so)."""
    with _as_file(source) as path:
        if path.stat().st_size == 0:
            return
        if max_seconds is not None:
            declared = probe_duration(path)
            if declared is not None and declared > max_seconds:
                raise _too_long(declared, max_seconds)
        command = [_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path), "-vn"]
        command += ["-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(sample_rate), "pipe:1"]
        window_bytes = max(1, int(window_seconds * sample_rate)) * 4
        limit = None if max_seconds is None else int(max_seconds * sample_rate) * 4
        with tempfile.TemporaryFile(prefix="modelhost-ffmpeg-") as errors:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
            try:
                total = yield from _read_windows(proc.stdout, window_bytes, limit, max_seconds, sample_rate)
                returncode = proc.wait()
                errors.seek(0)
                if returncode != 0:
                    raise _undecodable(errors.read(), returncode, path)
                if total == 0:  # e.g. mp4 whose index ffmpeg could not reach: it logs and exits 0
                    raise _no_audio(errors.read(), path)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()


#: A window of long audio ends at the quietest 200 ms within its last ``CUT_SEARCH_SECONDS`` (at most a quarter of
#: the window), not at a fixed sample: a word or speech region running across the edge is not cut in two.
CUT_SEARCH_SECONDS = 10.0
_CUT_FRAME_SECONDS = 0.02  # cuts fall on 20 ms frames from the window's start (whole multiples of a 10 ms hop)
_CUT_SPAN_FRAMES = 10


def quiet_cut(samples: np.ndarray, sample_rate: int) -> int:
    """Where to end a window of ``samples`` that more audio follows: the middle of the quietest 200 ms in its last
    ``CUT_SEARCH_SECONDS`` (a quarter of it for short windows), on a 20 ms frame boundary."""
    import numpy as np

    frame = max(1, int(round(sample_rate * _CUT_FRAME_SECONDS)))
    frames_total = len(samples) // frame
    search = min(int(CUT_SEARCH_SECONDS / _CUT_FRAME_SECONDS), frames_total // 4)
    if search < _CUT_SPAN_FRAMES:
        return len(samples)
    first = frames_total - search
    tail = samples[first * frame : frames_total * frame].astype(np.float64).reshape(search, frame)
    energy = np.einsum("ij,ij->i", tail, tail)
    centre = quietest_centre(energy.tolist(), frame, _CUT_SPAN_FRAMES)
    assert centre is not None  # search >= _CUT_SPAN_FRAMES
    return first * frame + centre


def _read_windows(
    stream: IO[bytes] | None,
    window_bytes: int,
    limit: int | None,
    max_seconds: float | None,
    sample_rate: int,
) -> Generator[tuple[float, np.ndarray], None, int]:
    import numpy as np

    assert stream is not None
    total = 0  # bytes decoded so far
    yielded = 0  # samples handed out so far
    carry = np.zeros(0, dtype=np.float32)  # the tail of the last window, after its cut
    while True:
        wanted = window_bytes - len(carry) * 4  # a full window with the carried tail
        block = _read_exactly(stream, wanted)
        usable = len(block) - len(block) % 4
        if limit is not None and total + usable > limit:
            raise _too_long((total + usable) / 4 / sample_rate, max_seconds or 0.0)
        total += usable
        window = np.frombuffer(block[:usable], dtype=np.float32)
        window = np.concatenate([carry, window]) if len(carry) else window.copy()
        final = len(block) < wanted
        cut = len(window) if final else quiet_cut(window, sample_rate)
        if cut:
            yield yielded / sample_rate, window[:cut]
            yielded += cut
        carry = window[cut:].copy()
        if final:
            return total


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def decode_audio(source: Path | bytes, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Return the whole file as mono float32 samples at ``sample_rate`` (see ``audio_windows`` for the errors);
    an empty file gives an empty array."""
    import numpy as np

    windows = [samples for _, samples in audio_windows(source, max_seconds=max_seconds, sample_rate=sample_rate)]
    if not windows:
        return np.zeros(0, dtype=np.float32)
    return windows[0] if len(windows) == 1 else np.concatenate(windows)


ENCODINGS: dict[str, list[str]] = {
    "mp3": ["-f", "mp3", "-c:a", "libmp3lame", "-b:a", "64k"],
    "flac": ["-f", "flac", "-c:a", "flac"],
    "opus": ["-f", "ogg", "-c:a", "libopus", "-b:a", "32k"],
    "aac": ["-f", "adts", "-c:a", "aac", "-b:a", "64k"],
}
MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "opus": "audio/ogg",
    "aac": "audio/aac",
}


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] → 16-bit little-endian PCM bytes."""
    import numpy as np

    return bytes((np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())


def wav_header(sample_rate: int, data_bytes: int = 0xFFFFFFFF - 36) -> bytes:
    """A 16-bit mono WAV header. Streams use the maximal size (as OpenAI's streamed WAV does): players read to EOF."""
    import struct

    riff_size = min(0xFFFFFFFF, data_bytes + 36)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", min(0xFFFFFFFF, data_bytes))
    )


def encode_pcm16(pcm: bytes, sample_rate: int, fmt: str, timeout: float = 120.0) -> bytes:
    """Encode mono 16-bit PCM as ``fmt`` (mp3, flac, opus, aac) with ffmpeg; wav and pcm need no ffmpeg."""
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return wav_header(sample_rate, len(pcm)) + pcm
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise BackendFault("ffmpeg is not installed on the worker host", code="ffmpeg_missing")
    # A seekable file, not a pipe: flac (and mp4-like) muxers write the header with the total length at the end.
    with tempfile.TemporaryDirectory(prefix="modelhost-encode-") as folder:
        target = Path(folder) / f"audio.{fmt}"
        command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(sample_rate)]
        command += ["-ac", "1", "-i", "pipe:0", *ENCODINGS[fmt], str(target)]
        proc = subprocess.run(command, input=pcm, capture_output=True, timeout=timeout, check=False)
        errors = proc.stderr.decode("utf-8", "replace")
        # ffmpeg 5 exits 0 when the disk fills under its output ("Error writing trailer of …: No space left on
        # device"), leaving an empty file: read its words, not only its exit status (never an empty 200).
        if tool_reports_disk_full(errors):
            reason = tool_reason(errors, "no space left", command[1:])
            raise StorageFull.in_folder(tempfile.gettempdir(), f"the {fmt} audio ffmpeg encodes", reason)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg could not encode {fmt}: {errors[-500:]}")
        return target.read_bytes()
