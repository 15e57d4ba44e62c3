"""SubRip (SRT) and WebVTT formatting of timed segments. Pure Python: the API process may use it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def format_timestamp(seconds: float, separator: str = ",") -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(segments: Iterable[Mapping[str, Any]]) -> str:
    blocks = []
    for index, segment in enumerate(segments, start=1):
        start, end = format_timestamp(segment["start"]), format_timestamp(segment["end"])
        blocks.append(f"{index}\n{start} --> {end}\n{str(segment['text']).strip()}\n")
    return "\n".join(blocks)


def to_vtt(segments: Iterable[Mapping[str, Any]]) -> str:
    blocks = ["WEBVTT\n"]
    for segment in segments:
        start, end = format_timestamp(segment["start"], "."), format_timestamp(segment["end"], ".")
        blocks.append(f"{start} --> {end}\n{str(segment['text']).strip()}\n")
    return "\n".join(blocks)
