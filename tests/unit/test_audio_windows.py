"""Long audio read in windows (``media.audio.audio_windows``) through real ffmpeg: the windows add up to exactly
the decoded file, and a window ends in a pause near its nominal edge, not inside a sound running across it."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from modelhost.errors import BadInput, tool_reason
from modelhost.media.audio import SAMPLE_RATE, audio_windows, decode_audio, quiet_cut


def write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return path


def tone(seconds: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_windows_end_in_the_pause_nearest_their_edge_and_add_up_to_the_whole_file(tmp_path: Path) -> None:
    # 20 s windows: sound from 0 to 17.3 s, a 0.5 s pause, then sound to 41 s; another pause at 35.0-35.6 s.
    parts = [
        tone(17.3),
        np.zeros(int(0.5 * SAMPLE_RATE), np.float32),
        tone(17.2),
        np.zeros(int(0.6 * SAMPLE_RATE), np.float32),
        tone(5.4),
    ]
    audio = np.concatenate(parts)
    path = write_wav(tmp_path / "long.wav", audio)

    windows = list(audio_windows(path, window_seconds=20.0))
    whole = decode_audio(path)
    assert len(whole) == len(audio)
    assert np.array_equal(np.concatenate([w for _, w in windows]), whole)  # nothing lost, nothing twice
    offsets = [offset for offset, _ in windows]
    starts = np.cumsum([0] + [len(w) for _, w in windows[:-1]]) / SAMPLE_RATE
    assert offsets == pytest.approx(list(starts))
    assert len(windows) == 3
    # Each cut lies inside a pause (17.3-17.8 s, then 35.0-35.6 s), not at 20 s / 40 s where sound runs on.
    assert 17.3 <= offsets[1] <= 17.8
    assert 35.0 <= offsets[2] <= 35.6
    for offset in offsets:  # on 20 ms frames: mel hops (10 ms) of consecutive windows line up
        assert round(offset * SAMPLE_RATE) % 320 == 0


def test_audio_that_fits_one_window_is_one_window_and_a_cut_needs_room(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "short.wav", tone(3.0))
    [(offset, samples)] = list(audio_windows(path, window_seconds=20.0))
    assert offset == 0.0
    assert len(samples) == 3 * SAMPLE_RATE
    steady = tone(1.0)
    assert quiet_cut(steady[:1000], SAMPLE_RATE) == 1000  # too short to search: the nominal edge


def test_max_seconds_still_refuses_audio_that_is_too_long(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "long.wav", tone(9.0))
    with pytest.raises(BadInput) as refused:
        list(audio_windows(path, window_seconds=4.0, max_seconds=6.0))
    assert refused.value.code == "audio_too_long"


def test_an_undecodable_file_is_invalid_audio_in_ffmpegs_words_without_the_servers_path(tmp_path: Path) -> None:
    """ffmpeg opens its error line with the path it was given (a temporary upload name on the server): the client
    reads its words, not the path."""
    garbage = tmp_path / "spool" / "upload-x1y2z3"
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x00\x01not audio" * 50)
    with pytest.raises(BadInput) as refused:
        list(audio_windows(garbage))
    assert refused.value.code == "invalid_audio"
    assert refused.value.message == (
        "the uploaded file could not be decoded as audio: Invalid data found when processing input"
    )


@pytest.mark.parametrize(
    ("stderr", "paths", "reason"),
    [
        ("/srv/d/tmp/uploads/1-ab/upload-x: Invalid data found", (), "Invalid data found"),
        ("[mov @ 0x55d0] moov atom not found\n/srv/My Data/x: Invalid data", ("/srv/My Data/x",), "Invalid data"),
        ("Couldn't open file '/srv/x/in.pdf': No such file", (), "Couldn't open file '<file>': No such file"),
        ("Output file #0 does not contain any stream\n\n", (), "Output file #0 does not contain any stream"),
        ("aspect 16/9, 1/2 speed", ("relative/arg",), "aspect 16/9, 1/2 speed"),
        ("", (), "fallback"),
    ],
)  # fmt: skip
def test_tool_reason_is_the_last_line_without_the_servers_paths(stderr: str, paths: tuple[str], reason: str) -> None:
    assert tool_reason(stderr, "fallback", paths) == reason
