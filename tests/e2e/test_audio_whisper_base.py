"""Whisper base (multilingual), assembled from two PyPI packages into the data dir on first load: language
detection and translation to English on espeak-ng speech in other languages, English accuracy on flite."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from openai import OpenAI

from tests.support.audio import SENTENCES, flite_wav, word_errors
from tests.support.server import ServerProcess

MODEL = "whisper-base"
SPANISH = "Buenos días. Me llamo Carlos y vivo en Madrid con mi familia."
FRENCH = "Bonjour. Je voudrais un café et un croissant, s'il vous plaît."


def espeak_wav(text: str, voice: str, path: Path) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=180)


def test_detects_language_and_transcribes_spanish(client: OpenAI, tmp_path: Path, server: ServerProcess) -> None:
    with espeak_wav(SPANISH, "es", tmp_path / "es.wav").open("rb") as f:
        result = client.audio.transcriptions.create(model=MODEL, file=f, response_format="verbose_json")
    assert result.language == "es"
    # measured here: the Spanish sentence came back word for word (punctuation aside)
    assert word_errors(SPANISH, result.text)[0] <= 2, result.text
    assembled = server.data_dir / "models" / MODEL / "model.bin"
    assert assembled.stat().st_size == 145_217_532  # the two packaged parts, concatenated once


def test_translates_spanish_and_french_into_english(client: OpenAI, tmp_path: Path) -> None:
    with espeak_wav(SPANISH, "es", tmp_path / "es.wav").open("rb") as f:
        spanish = client.audio.translations.create(model=MODEL, file=f).text.lower()
    with espeak_wav(FRENCH, "fr", tmp_path / "fr.wav").open("rb") as f:
        french = client.audio.translations.create(model=MODEL, file=f, response_format="verbose_json")
    # measured here: "Good morning, my name is Carlos and I live in Manlín with my family." and
    # "Good morning. I'll give you a coffee and a glass of silver." — robotic voices, a base-sized model. With the
    # espeak-ng build on later machines the greeting came out "Good evening": the check is that it is English.
    assert "good" in spanish
    assert "carlos" in spanish
    assert "family" in spanish
    assert french.task == "translate"
    assert "coffee" in french.text.lower()


def test_whisper_1_is_an_alias_served_by_the_same_worker(client: OpenAI, tmp_path: Path, server: ServerProcess) -> None:
    assert {"whisper-1", MODEL} <= {m.id for m in client.models.list()}
    wav = flite_wav(SENTENCES[0], "slt", tmp_path / "slt.wav")
    for alias in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"):
        with wav.open("rb") as f:
            text = client.audio.transcriptions.create(model=alias, file=f).text
        assert word_errors(SENTENCES[0], text)[0] <= 2, (alias, text)
    workers = [w["model"] for w in server.health()["workers"]]
    assert workers.count(MODEL) == 1
    assert "whisper-1" not in workers


def test_english_accuracy(client: OpenAI, tmp_path: Path) -> None:
    errors = words = 0
    for voice, sentence in zip(("slt", "rms", "awb", "kal16"), SENTENCES, strict=True):
        with flite_wav(sentence, voice, tmp_path / f"{voice}.wav").open("rb") as f:
            text = client.audio.transcriptions.create(model=MODEL, file=f, language="en").text
        e, n = word_errors(sentence, text)
        errors, words = errors + e, words + n
    # measured here: 0 errors in 36 words (4 flite voices); DESIGN.md measured base WER 9.3 % on a harder set, so
    # 10 % (three wrong words) still catches a broken assembly or decoding while allowing another CPU's int8 kernels
    assert errors / words <= 0.10, f"WER {errors / words:.3f}"
