"""Where to cut long audio: the centre of its quietest stretch, one rule for both places that cut.

* Workers end each window of a long recording (``modelhost.media.audio.quiet_cut``: the quietest 200 ms, as ten
  20 ms frames, of the window's last 10 s; frame energies computed with numpy).
* The serve process's meeting job ends each chunk (``modelhost.jobs.meeting``: the quietest 50 ms frame of the last
  5 s before the chunk's limit; energies of 16-bit PCM in pure Python, ``pcm16_energies``).

Pure Python, no numpy: the serve process never imports numpy for a meeting job.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence


def quietest_centre(energies: Sequence[float], frame: int, span: int = 1) -> int | None:
    """The quietest ``span`` consecutive frames of ``frame`` samples each, given each frame's energy (the sum of
    its squared samples): the sample offset of their centre from the first frame's start (a frame boundary when
    ``span`` is even). The earliest of equally quiet stretches; None when there are fewer than ``span`` frames."""
    if span < 1 or len(energies) < span:
        return None
    best_index, best = 0, math.inf
    for index in range(len(energies) - span + 1):
        total = sum(energies[index : index + span])
        if total < best:
            best_index, best = index, total
    return best_index * frame + span * frame // 2


def pcm16_energies(pcm: bytes, frame: int) -> list[int]:
    """The energy of each whole frame of ``frame`` samples of 16-bit little-endian mono PCM (a last partial frame,
    and a last odd byte, are left out)."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return [sum(x * x for x in samples[start : start + frame]) for start in range(0, len(samples) - frame + 1, frame)]
