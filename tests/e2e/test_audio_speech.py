"""Text-to-speech through a real server and a real hibari worker, with the official openai client; the audio
is checked by decoding it with ffmpeg and by transcribing it back with whisper tiny.en."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, OpenAI

from tests.support.audio import SENTENCES, word_errors
from tests.support.server import ServerProcess

MODEL = "hibari"


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def probe(path: Path) -> dict[str, str]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,sample_rate,channels:format=duration",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)
    return {**data["streams"][0], "duration": data["format"].get("duration", "0")}


@pytest.mark.parametrize(
    ("fmt", "codec"), [("wav", "pcm_s16le"), ("mp3", "mp3"), ("flac", "flac"), ("opus", "opus"), ("aac", "aac")]
)
def test_every_format_decodes(client: OpenAI, tmp_path: Path, fmt: str, codec: str) -> None:
    target = tmp_path / f"speech.{fmt}"
    response = client.audio.speech.create(model=MODEL, input=SENTENCES[0], voice="heart", response_format=fmt)
    response.write_to_file(target)
    info = probe(target)
    assert info["codec_name"] == codec
    assert int(info["channels"]) == 1
    if fmt != "opus":  # opus is always decoded at 48 kHz
        assert int(info["sample_rate"]) == 24000
    # hibari speaks this 9-word sentence in about 2.5 s here; a broken stream would be near 0 or far longer
    assert 1.5 < float(info["duration"]) < 5.0


def test_pcm_is_raw_24khz_16bit(client: OpenAI) -> None:
    pcm = client.audio.speech.create(model=MODEL, input=SENTENCES[1], voice="heart", response_format="pcm").content
    assert len(pcm) % 2 == 0
    assert 1.5 < len(pcm) / 2 / 24000 < 5.0


def test_speed_changes_duration(client: OpenAI) -> None:
    normal = client.audio.speech.create(model=MODEL, input=SENTENCES[2], voice="heart", response_format="pcm")
    fast = client.audio.speech.create(model=MODEL, input=SENTENCES[2], voice="heart", response_format="pcm", speed=2.0)
    assert len(fast.content) < 0.7 * len(normal.content)


def test_round_trip_tts_to_asr_recovers_the_text(client: OpenAI, tmp_path: Path) -> None:
    errors = words = 0
    for i, sentence in enumerate(SENTENCES):
        path = tmp_path / f"{i}.wav"
        client.audio.speech.create(model=MODEL, input=sentence, voice="heart", response_format="wav").write_to_file(
            path
        )
        with path.open("rb") as f:
            text = client.audio.transcriptions.create(model="whisper-tiny.en", file=f).text
        e, n = word_errors(sentence, text)
        errors, words = errors + e, words + n
    # measured here: 0 errors in 36 words; MAX allows one error (a homophone) on another CPU
    assert errors <= 1, f"{errors}/{words}"


def test_audio_streams_in_chunks(server: ServerProcess) -> None:
    text = " ".join(SENTENCES)
    with (
        httpx.Client(base_url=server.url, timeout=120) as http,
        http.stream(
            "POST", "/v1/audio/speech", json={"model": MODEL, "input": text, "voice": "heart", "response_format": "pcm"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/pcm"
        sizes = [len(chunk) for chunk in response.iter_raw() if chunk]
    assert len(sizes) >= 2  # one chunk per sentence at least (transport may split further)
    assert sum(sizes) / 2 / 24000 > 6.0


def test_openai_names_resolve_without_a_second_worker(client: OpenAI, server: ServerProcess) -> None:
    # tts-1 / tts-1-hd / gpt-4o-mini-tts are aliases of the hibari entry and OpenAI's voices pick its default voice.
    for model in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", MODEL):
        audio = client.audio.speech.create(model=model, input="Hello there.", voice="alloy", response_format="wav")
        assert audio.content[:4] == b"RIFF"
    workers = [w["model"] for w in server.health()["workers"]]
    assert workers.count(MODEL) == 1
    assert "tts-1" not in workers


def test_unknown_voice_is_400_listing_voices(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as info:
        client.audio.speech.create(model=MODEL, input="hello", voice="robot")  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert "heart" in str(info.value)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == "voice" or body.get("error", {}).get("param") == "voice"


def test_blank_input_and_bad_speed_are_4xx(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        blank = http.post("/v1/audio/speech", json={"model": MODEL, "input": "   ", "voice": "heart"})
        assert blank.status_code == 400
        fast = http.post("/v1/audio/speech", json={"model": MODEL, "input": "hi", "voice": "heart", "speed": 9})
        assert fast.status_code == 400
        wrong_task = http.post("/v1/audio/speech", json={"model": "whisper-tiny.en", "input": "hi"})
        assert wrong_task.status_code in (400, 404)
        assert "error" in wrong_task.json()


def test_espeak_voices_round_trip_and_unknown_voice(client: OpenAI, tmp_path: Path) -> None:
    errors = words = 0
    for voice, sentence in zip(("en-us", "en-gb"), SENTENCES[:2], strict=True):
        path = tmp_path / f"{voice}.wav"
        client.audio.speech.create(model="espeak-ng", input=sentence, voice=voice, response_format="wav").write_to_file(
            path
        )
        info = probe(path)
        assert int(info["sample_rate"]) == 22050
        with path.open("rb") as f:
            text = client.audio.transcriptions.create(model="whisper-tiny.en", file=f).text
        e, n = word_errors(sentence, text)
        errors, words = errors + e, words + n
    # measured here: 2 errors in 17 words ("jump" for "jumps", "nog" for "dog" with en-us; en-gb exact). espeak's
    # formant voice is harder for whisper than hibari's neural one; the bound allows two more errors on another CPU
    assert errors <= 4, f"{errors}/{words}"
    with pytest.raises(BadRequestError) as info_error:
        client.audio.speech.create(model="espeak-ng", input="hello", voice="heart")
    assert "en-us" in str(info_error.value)
