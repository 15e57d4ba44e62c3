"""Decode any audio ffmpeg understands into 16 kHz mono float32 samples. Used by backends in workers only."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from modelhost.errors import BackendFault, BadInput

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16_000


def decode_audio(data: bytes, sample_rate: int = SAMPLE_RATE, timeout: float = 120.0) -> np.ndarray:
    """Return mono float32 samples at ``sample_rate``; empty input gives an empty array.

    Raises ``BadInput`` (415) when ffmpeg cannot decode the bytes as audio.
    """
    import numpy as np

    if not data:
        return np.zeros(0, dtype=np.float32)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise BackendFault("ffmpeg is not installed on the worker host", code="ffmpeg_missing")
    command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-vn"]
    command += ["-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(sample_rate), "pipe:1"]
    proc = subprocess.run(command, input=data, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = detail[-1] if detail else f"ffmpeg exited with {proc.returncode}"
        raise BadInput(
            f"the uploaded file could not be decoded as audio: {reason}",
            param="file",
            status=415,
            code="invalid_audio",
        )
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


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
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg could not encode {fmt}: {proc.stderr.decode('utf-8', 'replace')[-500:]}")
        return target.read_bytes()
