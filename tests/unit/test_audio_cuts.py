"""The one rule for cutting long audio (``modelhost.media.cuts``), as the workers' windows and the meeting's chunks
use it: the centre of the quietest stretch of frames."""

from __future__ import annotations

import subprocess
import sys
from array import array

import numpy as np
import pytest

from modelhost.jobs.meeting import CUT_FRAME, _quietest
from modelhost.media.audio import SAMPLE_RATE, quiet_cut
from modelhost.media.cuts import pcm16_energies, quietest_centre


def test_the_centre_of_the_quietest_span_earliest_on_ties() -> None:
    assert quietest_centre([5, 3, 1, 4], frame=10) == 25  # the middle of frame 2
    assert quietest_centre([5, 3, 1, 4], frame=10, span=2) == 20  # frames 1-2 (4) beat 2-3 (5): their boundary
    assert quietest_centre([9, 0, 0, 9, 0, 0], frame=4, span=2) == 8  # frames 1-2 and 4-5 as quiet: the first
    assert quietest_centre([2.5], frame=7) == 3
    assert quietest_centre([1, 2], frame=10, span=3) is None  # fewer frames than the span
    assert quietest_centre([], frame=10) is None


def test_pcm16_energies_of_whole_frames() -> None:
    pcm = array("h", [1, -2, 3, 300, -300, 0, 7]).tobytes() + b"\x01"  # 7 samples and an odd byte
    if sys.byteorder == "big":  # the bytes are little-endian PCM, as ffmpeg writes s16le
        swapped = array("h", [1, -2, 3, 300, -300, 0, 7])
        swapped.byteswap()
        pcm = swapped.tobytes() + b"\x01"
    assert pcm16_energies(pcm, 3) == [1 + 4 + 9, 90_000 + 90_000 + 0]  # the partial frame [7] is left out
    assert pcm16_energies(b"", 3) == []


def test_worker_cuts_are_the_quietest_200_ms_as_before() -> None:
    """``quiet_cut`` picks what its numpy formulation picked (the smoothed energies' argmin), on noise with a
    quieter stretch at varied places."""
    rng = np.random.default_rng(7)
    frame = SAMPLE_RATE // 50
    for quiet_at in (41.0, 47.3, 49.9, 55.0):
        samples = rng.normal(0, 0.3, SAMPLE_RATE * 60).astype(np.float32)
        first = int(quiet_at * SAMPLE_RATE)
        samples[first : first + SAMPLE_RATE // 4] *= 0.01
        search = 500  # the last 10 s in 20 ms frames
        start = len(samples) // frame - search
        tail = samples[start * frame : (start + search) * frame].astype(np.float64).reshape(search, frame)
        smoothed = np.convolve(np.einsum("ij,ij->i", tail, tail), np.ones(10), mode="valid")
        expected = (start + int(np.argmin(smoothed)) + 5) * frame
        cut = quiet_cut(samples, SAMPLE_RATE)
        assert cut == expected
        if quiet_at >= 50.0:
            assert first <= cut <= first + SAMPLE_RATE // 4  # inside the quiet stretch


def test_meeting_cuts_are_the_centre_of_the_quietest_50_ms_frame() -> None:
    rng = np.random.default_rng(3)
    samples = rng.integers(-8000, 8000, SAMPLE_RATE * 5, dtype=np.int16)
    samples[37 * CUT_FRAME + 100 : 37 * CUT_FRAME + 700] //= 50  # most of frame 37 is quiet
    pcm = samples.astype("<i2").tobytes()
    energies = (samples.astype(np.int64).reshape(-1, CUT_FRAME) ** 2).sum(axis=1)
    assert int(np.argmin(energies)) == 37
    assert _quietest(pcm, 1000) == 1000 + 37 * CUT_FRAME + CUT_FRAME // 2
    assert _quietest(pcm[: CUT_FRAME * 2], 5) == 5 + CUT_FRAME // 2  # one frame
    assert _quietest(pcm[: (CUT_FRAME - 1) * 2], 5) == 5 + CUT_FRAME - 1  # no whole frame: its end


@pytest.mark.parametrize("module", ["modelhost.jobs.meeting", "modelhost.media.cuts"])
def test_the_meeting_job_path_imports_no_numpy(module: str) -> None:
    code = f"import sys, {module}; assert 'numpy' not in sys.modules, 'numpy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
