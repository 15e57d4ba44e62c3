"""Diarization error rate (DER) and RTTM parsing for tests; pure Python plus scipy's assignment solver."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.support.audio import ffmpeg, flite_wav, join_with_silence

Turn = tuple[float, float, str]  # (start, end, speaker)

RESOLUTION = 0.01  # seconds per frame


def _frames(turns: Sequence[Turn], n: int) -> list[set[str]]:
    frames: list[set[str]] = [set() for _ in range(n)]
    for start, end, speaker in turns:
        for f in range(max(0, round(start / RESOLUTION)), min(n, round(end / RESOLUTION))):
            frames[f].add(speaker)
    return frames


def diarization_error_rate(reference: Sequence[Turn], hypothesis: Sequence[Turn]) -> float:
    """(missed speech + false alarm + speaker confusion) / reference speech, on 10 ms frames, no collar.

    Hypothesis labels are mapped one-to-one onto reference labels so that the matched overlap is largest (the
    optimal mapping, by linear assignment); unmapped hypothesis speakers count as confusion where they speak
    over reference speech. Overlapping speech is counted per speaker, as in the NIST definition.
    """
    from scipy.optimize import linear_sum_assignment

    end = max([e for _, e, _ in [*reference, *hypothesis]], default=0.0)
    n = round(end / RESOLUTION) + 1
    ref, hyp = _frames(reference, n), _frames(hypothesis, n)
    ref_names = sorted({s for _, _, s in reference})
    hyp_names = sorted({s for _, _, s in hypothesis})
    overlap = [[0] * len(hyp_names) for _ in ref_names]
    for r, h in zip(ref, hyp, strict=True):
        for a in r:
            for b in h:
                overlap[ref_names.index(a)][hyp_names.index(b)] += 1
    mapping: dict[str, str] = {}
    if ref_names and hyp_names:
        rows, cols = linear_sum_assignment([[-v for v in row] for row in overlap])
        mapping = {hyp_names[c]: ref_names[r] for r, c in zip(rows, cols, strict=True)}
    total = errors = 0
    for r, h in zip(ref, hyp, strict=True):
        total += len(r)
        correct = len(r & {mapping[b] for b in h if b in mapping})
        # max(#ref, #hyp) − #correct: misses and false alarms where counts differ, confusion for the rest
        errors += max(len(r), len(h)) - correct
    return errors / total if total else 0.0


def parse_rttm(text: str) -> list[Turn]:
    """``SPEAKER <file> <channel> <onset> <duration> <NA> <NA> <speaker> <NA> <NA>`` lines → turns."""
    turns: list[Turn] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 10 or fields[0] != "SPEAKER":
            raise ValueError(f"not an RTTM SPEAKER line: {line!r}")
        onset, length = float(fields[3]), float(fields[4])
        if length <= 0:
            raise ValueError(f"non-positive duration in {line!r}")
        turns.append((onset, onset + length, fields[7]))
    return turns


def trim_silence(source: Path, target: Path) -> Path:
    """Cut the leading and trailing silence flite leaves around an utterance (so file spans are speech spans)."""
    edge = "silenceremove=start_periods=1:start_threshold=-50dB:start_silence=0.02"
    ffmpeg("-i", str(source), "-af", f"{edge},areverse,{edge},areverse", str(target))
    return target


def conversation(turns: Sequence[tuple[str, str]], gap: float, folder: Path, name: str) -> tuple[Path, list[Turn]]:
    """Speak ``(voice, text)`` turns with flite, trimmed and joined with ``gap`` seconds of silence; return the
    recording (16 kHz FLAC) and its reference turns labelled by voice."""
    parts = []
    for i, (voice, text) in enumerate(turns):
        raw = flite_wav(text, voice, folder / f"{name}-{i}-raw.wav")
        parts.append(trim_silence(raw, folder / f"{name}-{i}.wav"))
    target = folder / f"{name}.flac"
    spans = join_with_silence(parts, gap, target)
    return target, [(start, end, voice) for (start, end), (voice, _) in zip(spans, turns, strict=True)]
