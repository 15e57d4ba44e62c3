"""Pure functions of the meeting pipeline: joint speaker identification, word-to-turn alignment, segmentation and
the SRT / WebVTT / text renderings. No I/O, no numpy: the serve process runs them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from modelhost.media.subtitles import format_timestamp

Turn = tuple[float, float, str]  # (start, end, speaker label)
SENTENCE_END = (".", "?", "!", "…")
EXACT_ASSIGNMENT_LIMIT = 7  # speakers; above this the assignment is greedy (best pair first)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm else 0.0


def assign_speakers(
    candidates: dict[str, list[tuple[str, float]]], threshold: float
) -> dict[str, tuple[str, float] | None]:
    """Give each diarized speaker at most one enrolled person, no person to two speakers, maximising the total
    score over pairs at or above ``threshold``. ``candidates``: label → [(person, score)]. Exact search up to
    ``EXACT_ASSIGNMENT_LIMIT`` speakers, best-pair-first greedy above."""
    labels = sorted(candidates)
    options = {
        label: sorted(((p, s) for p, s in candidates[label] if s >= threshold), key=lambda ps: -ps[1])
        for label in labels
    }
    if len(labels) > EXACT_ASSIGNMENT_LIMIT:
        return _greedy(options)
    best: tuple[float, dict[str, tuple[str, float] | None]] = (-1.0, dict.fromkeys(labels))

    def search(index: int, used: frozenset[str], total: float, chosen: dict[str, tuple[str, float] | None]) -> None:
        nonlocal best
        if index == len(labels):
            if total > best[0] + 1e-12:
                best = (total, dict(chosen))
            return
        label = labels[index]
        for person, score in options[label]:
            if person not in used:
                chosen[label] = (person, score)
                search(index + 1, used | {person}, total + score, chosen)
        chosen[label] = None
        search(index + 1, used, total, chosen)

    search(0, frozenset(), 0.0, {})
    return best[1]


def _greedy(options: dict[str, list[tuple[str, float]]]) -> dict[str, tuple[str, float] | None]:
    pairs = sorted(((s, label, p) for label, opts in options.items() for p, s in opts), reverse=True)
    result: dict[str, tuple[str, float] | None] = dict.fromkeys(options)
    used: set[str] = set()
    for score, label, person in pairs:
        if result[label] is None and person not in used:
            result[label] = (person, score)
            used.add(person)
    return result


def weighted_mean(a: Sequence[float], wa: float, b: Sequence[float], wb: float) -> list[float]:
    total = wa + wb or 1.0
    return [(x * wa + y * wb) / total for x, y in zip(a, b, strict=True)]


def merge_closest(voices: Sequence[tuple[Sequence[float], float]], bound: int) -> list[int]:
    """Merge the two most similar voices (``(embedding, seconds)``) until at most ``bound`` remain; return, for
    each voice, the index of the voice it ended up in. Voices without an embedding merge last."""
    groups: dict[int, tuple[list[float], float]] = {i: (list(v), w) for i, (v, w) in enumerate(voices)}
    owner = list(range(len(voices)))
    while len(groups) > max(1, bound):
        score, keep, drop = max(
            (cosine(groups[i][0], groups[j][0]) if groups[i][0] and groups[j][0] else -2.0, i, j)
            for i, j in itertools.combinations(sorted(groups), 2)
        )
        (a, wa), (b, wb) = groups[keep], groups.pop(drop)
        groups[keep] = (weighted_mean(a, wa, b, wb) if a and b else a or b, wa + wb)
        owner = [keep if o == drop else o for o in owner]
    return owner


def speaker_of(start: float, end: float, turns: Sequence[Turn]) -> str | None:
    """The turn the span overlaps most; with no overlap the nearest turn; None without turns."""
    best, best_overlap = None, 0.0
    for t_start, t_end, label in turns:
        overlap = min(end, t_end) - max(start, t_start)
        if overlap > best_overlap:
            best, best_overlap = label, overlap
    if best is not None:
        return best
    middle = (start + end) / 2
    nearest = min(turns, key=lambda t: min(abs(middle - t[0]), abs(middle - t[1])), default=None)
    return None if nearest is None else nearest[2]


def build_segments(words: Sequence[dict[str, Any]], turns: Sequence[Turn], fallback: str) -> list[dict[str, Any]]:
    """Words → segments that break where the speaker changes and where a sentence ends."""
    segments: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for word in words:
        text = str(word["word"]).strip()
        if not text:
            continue
        speaker = speaker_of(float(word["start"]), float(word["end"]), turns) or fallback
        entry = {"word": text, "start": float(word["start"]), "end": float(word["end"])}
        if current is None or current["speaker"] != speaker:
            current = {"speaker": speaker, "words": []}
            segments.append(current)
        current["words"].append(entry)
        if text.endswith(SENTENCE_END):
            current = None
    for segment in segments:
        segment["start"] = segment["words"][0]["start"]
        segment["end"] = segment["words"][-1]["end"]
        segment["text"] = " ".join(w["word"] for w in segment["words"])
    return segments


def talk_times(turns: Sequence[Turn]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for start, end, label in turns:
        totals[label] = totals.get(label, 0.0) + max(0.0, end - start)
    return {label: round(total, 3) for label, total in totals.items()}


def display_name(segment: dict[str, Any]) -> str:
    return str(segment.get("name") or segment["speaker"])


def to_srt(segments: Sequence[dict[str, Any]]) -> str:
    blocks = []
    for index, segment in enumerate(segments, start=1):
        start, end = format_timestamp(segment["start"]), format_timestamp(segment["end"])
        blocks.append(f"{index}\n{start} --> {end}\n{display_name(segment)}: {segment['text']}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(segments: Sequence[dict[str, Any]]) -> str:
    """WebVTT with the speaker as each cue's voice (``<v Name>``)."""
    blocks = ["WEBVTT\n"]
    for segment in segments:
        start, end = format_timestamp(segment["start"], "."), format_timestamp(segment["end"], ".")
        blocks.append(f"{start} --> {end}\n<v {_vtt_escape(display_name(segment))}>{_vtt_escape(segment['text'])}\n")
    return "\n".join(blocks)


def to_text(segments: Sequence[dict[str, Any]]) -> str:
    """``Name: text`` lines; consecutive segments of one speaker share a line."""
    lines = []
    for name, group in itertools.groupby(segments, key=display_name):
        lines.append(f"{name}: {' '.join(s['text'] for s in group)}")
    return "\n".join(lines) + ("\n" if lines else "")
