"""SRT/WebVTT formatting of timed segments."""

from __future__ import annotations

from modelhost.media.subtitles import format_timestamp, to_srt, to_vtt

SEGMENTS = [{"start": 0.0, "end": 1.5, "text": " Hello there."}, {"start": 3661.25, "end": 3662.0, "text": "Bye."}]


def test_timestamps_round_to_milliseconds() -> None:
    assert format_timestamp(0) == "00:00:00,000"
    assert format_timestamp(3661.2506) == "01:01:01,251"
    assert format_timestamp(59.9999, ".") == "00:01:00.000"
    assert format_timestamp(-0.2) == "00:00:00,000"


def test_srt_and_vtt_layout() -> None:
    assert (
        to_srt(SEGMENTS) == "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n"
    )
    assert to_vtt(SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n01:01:01.250 --> 01:01:02.000\nBye.\n"
    )
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n"
