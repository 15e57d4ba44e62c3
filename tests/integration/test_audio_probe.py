"""``probe_duration`` (the 413 ``audio_too_long`` check before decoding) reads the container in-process with PyAV and
declares what ffprobe declares; bytes that are no audio give None."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.media.audio import _ffprobe_duration, probe_duration
from tests.support.audio import ffmpeg, flite_wav

pytest.importorskip("av")


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("long.ogg", ["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "900", "-c:a", "libopus", "-b:a", "8k"]),
        ("tone.mp3", ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", "7.5", "-b:a", "32k"]),
        ("tone.m4a", ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "4", "-c:a", "aac"]),
    ],
)
def test_probe_declares_what_ffprobe_declares(tmp_path: Path, name: str, args: list[str]) -> None:
    target = tmp_path / name
    ffmpeg(*args, str(target))
    declared = probe_duration(target)
    assert declared is not None
    # within 0.1 s: PyAV's libavformat and the system's may count an mp3's encoder padding differently
    assert declared == pytest.approx(_ffprobe_duration(target, 30.0), abs=0.1)


def test_probe_of_a_wav_and_of_bytes_that_are_no_audio(tmp_path: Path) -> None:
    wav = flite_wav("The quick brown fox jumps over the lazy dog.", "slt", tmp_path / "fox.wav")
    assert probe_duration(wav) == pytest.approx(_ffprobe_duration(wav, 30.0), abs=0.01)
    raw = tmp_path / "noise.bin"
    raw.write_bytes(bytes(range(256)) * 64)
    assert probe_duration(raw) is None
    assert _ffprobe_duration(raw, 30.0) is None
