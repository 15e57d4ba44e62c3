"""Voice activity detection through a real server and the real Silero ONNX model."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.audio import SENTENCES, duration_of, flite_wav, join_with_silence
from tests.support.server import ServerProcess


def vad(server: ServerProcess, path: Path, **fields: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=120) as http:
        return http.post(
            "/v1/audio/vad",
            data={"model": "silero-vad", **fields},
            files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
        )


def test_three_sentences_with_gaps_give_three_segments(server: ServerProcess, tmp_path: Path) -> None:
    parts = [flite_wav(s, v, tmp_path / f"{v}.wav") for s, v in zip(SENTENCES[:3], ("slt", "rms", "awb"), strict=True)]
    joined = tmp_path / "joined.flac"
    spans = join_with_silence(parts, 2.0, joined)
    response = vad(server, joined)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] == pytest.approx(duration_of(joined), abs=0.05)
    segments = body["segments"]
    assert len(segments) == 3, segments
    for segment, (start, end) in zip(segments, spans, strict=True):
        # each detected segment lies inside its sentence's file span (flite adds ~0.1–0.3 s of edge silence
        # which VAD rightly trims; 0.1 s slack covers the speech_pad)
        assert start - 0.1 <= segment["start"] < segment["end"] <= end + 0.1
        assert segment["end"] - segment["start"] > 0.6 * (end - start)


def test_silence_gives_no_segments_empty_is_400_and_garbage_is_415(server: ServerProcess, tmp_path: Path) -> None:
    silence = tmp_path / "silence.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "2", str(silence)],
        check=True,
    )
    quiet = vad(server, silence)
    assert quiet.status_code == 200
    assert quiet.json()["segments"] == []
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    refused = vad(server, empty)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "empty_file"
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(b"\x00\x01not audio" * 50)
    bad = vad(server, garbage)
    assert bad.status_code == 415
    assert bad.json()["error"]["code"] == "invalid_audio"
    assert vad(server, silence, threshold="2").status_code == 400
