"""Every backend the registry names resolves to a Backend class of its task, and a missing optional library is
answered with the extra to install."""

from __future__ import annotations

import pytest

from modelhost.backends.base import Backend, Files, load_backend_class
from modelhost.catalog.builtin import BUILTIN_MODELS
from modelhost.catalog.registry import BUILTIN_BACKENDS, TASKS, check_backend
from modelhost.errors import BackendFault
from modelhost.schemas.diarization import DiarizationRequest
from modelhost.schemas.embeddings import EmbeddingRequest
from modelhost.schemas.image_captioning import CaptionRequest
from modelhost.schemas.ocr import OcrRequest
from modelhost.schemas.rerank import RerankRequest
from modelhost.schemas.speaker_embedding import SpeakerEmbeddingRequest
from modelhost.schemas.speech_recognition import TranscriptionRequest
from modelhost.schemas.text_generation import GenerationRequest
from modelhost.schemas.text_to_speech import SpeechRequest
from modelhost.schemas.voice_activity import VadRequest
from modelhost.schemas.voice_conversion import VoiceConversionRequest
from modelhost.worker.protocol import WorkerSpec

REQUEST_OF_TASK: dict[str, object] = {
    "embeddings": EmbeddingRequest,
    "rerank": RerankRequest,
    "ocr": OcrRequest,
    "image-captioning": CaptionRequest,
    "text-generation": GenerationRequest,
    "speech-recognition": TranscriptionRequest,
    "voice-activity": VadRequest,
    "speaker-embedding": SpeakerEmbeddingRequest,
    "speaker-diarization": DiarizationRequest,
    "text-to-speech": SpeechRequest,
    "voice-conversion": VoiceConversionRequest,
}


@pytest.mark.parametrize("name", sorted(BUILTIN_BACKENDS))
def test_every_registry_entry_resolves_to_a_backend_of_its_task(name: str) -> None:
    info = BUILTIN_BACKENDS[name]
    cls = load_backend_class(info.reference)
    assert issubclass(cls, Backend)
    assert not cls.__name__.endswith("Base")
    assert cls.extra == info.extra, f"{name}: the registry and the class name different extras"
    assert cls.requires, f"{name} names no library: a missing one would be a raw ImportError"
    for task in info.tasks:
        assert task in TASKS
        assert cls.request_type == REQUEST_OF_TASK[task], f"{name} does not parse {task} requests"


def test_every_builtin_model_names_a_registry_backend() -> None:
    for model in BUILTIN_MODELS:
        assert check_backend(model.backend, model.task) is None, model.id


def test_a_missing_library_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = load_backend_class(BUILTIN_BACKENDS["faster-whisper"].reference)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *_: None if name == "faster_whisper" else object())
    spec = WorkerSpec(model_id="w", task="speech-recognition", backend="faster-whisper", source="s", socket_path="")
    with pytest.raises(BackendFault) as info:
        cls(spec)
    assert info.value.status == 503
    assert info.value.code == "missing_package"
    assert "faster_whisper" in info.value.message
    assert "install modelhost[speech]" in info.value.message


def test_a_custom_backend_without_a_task_receives_the_payload_as_a_dict() -> None:
    class Echo(Backend[dict[str, object]]):
        def load(self) -> None:
            pass

        def infer(self, request: dict[str, object], files: Files) -> dict[str, object]:  # noqa: ARG002
            return {"got": request}

    echo = Echo(WorkerSpec(model_id="e", task="embeddings", backend="x:Echo", source="s", socket_path=""))
    assert echo.run({"a": 1}, {}) == {"got": {"a": 1}}
