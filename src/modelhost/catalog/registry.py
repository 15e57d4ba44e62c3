"""Registry of built-in backends: a name, the tasks it serves and where its class lives.

The API process uses this table only as data; the class is imported by the worker. A catalog entry may also
name any ``package.module:ClassName`` subclass of ``modelhost.backends.base.Backend`` (bring your own backend).
"""

from __future__ import annotations

from dataclasses import dataclass

TASKS = (
    "embeddings",
    "rerank",
    "ocr",
    "image-captioning",
    "text-generation",
    "speech-recognition",
    "voice-activity",
    "speaker-embedding",
    "speaker-diarization",
    "text-to-speech",
    "reference-voice-speech",
    "voice-conversion",
)


@dataclass(frozen=True)
class BackendInfo:
    name: str
    reference: str
    tasks: tuple[str, ...]
    extra: str
    description: str


BUILTIN_BACKENDS: dict[str, BackendInfo] = {
    info.name: info
    for info in (
        BackendInfo(
            "sentence-transformers",
            "modelhost.backends.text.embeddings_sentence_transformers:SentenceTransformersEmbeddings",
            ("embeddings",),
            "embeddings",
            "sentence-transformers models (torch): a local directory, a package or a hub id",
        ),
        BackendInfo(
            "onnx",
            "modelhost.backends.text.embeddings_onnx:OnnxEmbeddings",
            ("embeddings",),
            "onnx",
            "ONNX Runtime encoder with a tokenizer.json, mean pooling (no torch)",
        ),
        BackendInfo(
            "faster-whisper",
            "modelhost.backends.speech.recognition_whisper:FasterWhisperRecognizer",
            ("speech-recognition",),
            "speech",
            "Whisper speech recognition with faster-whisper (CTranslate2 model directory or hub id)",
        ),
        BackendInfo(
            "silero-vad",
            "modelhost.backends.speech.vad_silero:SileroVad",
            ("voice-activity",),
            "speech",
            "Silero voice activity detection (the ONNX model bundled in faster-whisper)",
        ),
        BackendInfo(
            "espeak-ng",
            "modelhost.backends.speech.tts_espeak:EspeakSpeech",
            ("text-to-speech",),
            "speech",
            "eSpeak NG formant text-to-speech (Debian espeak-ng, run as a command): 100+ languages, 22.05 kHz",
        ),
        BackendInfo(
            "hibari",
            "modelhost.backends.speech.tts_hibari:HibariSpeech",
            ("text-to-speech",),
            "speech",
            "hibari-tts text-to-speech (ONNX, 24 kHz); offers only the voices present on disk, never downloads",
        ),
        BackendInfo(
            "resemblyzer",
            "modelhost.backends.speech.speaker_resemblyzer:ResemblyzerSpeakerEmbedding",
            ("speaker-embedding",),
            "speech",
            "resemblyzer GE2E voice encoder (torch): 256-d voiceprints of the speech in a clip",
        ),
        BackendInfo(
            "builtin-diarizer",
            "modelhost.backends.speech.diarization_builtin:BuiltinDiarizer",
            ("speaker-diarization",),
            "speech",
            "Silero VAD → resemblyzer window voiceprints → agglomerative clustering (no extra weights)",
        ),
        BackendInfo(
            "pyannote",
            "modelhost.backends.speech.diarization_pyannote:PyannoteDiarizer",
            ("speaker-diarization",),
            "pyannote",
            "pyannote.audio diarization pipelines (local directory or hub id with a token); not installed by default",
        ),
        BackendInfo(
            "world",
            "modelhost.backends.voice_world:WorldVoiceConversion",
            ("voice-conversion",),
            "speech",
            "offline voice matching with the WORLD vocoder (pyworld): reference F0 statistics, formant warp and "
            "long-term spectrum; no weights",
        ),
        BackendInfo(
            "openvoice-v2",
            "modelhost.backends.voice_openvoice:OpenVoiceConversion",
            ("voice-conversion",),
            "speech",
            "OpenVoice V2 tone-colour converter (torch); source: its checkpoints_v2/converter folder "
            "(bring the weights)",
        ),
        BackendInfo(
            "rapidocr",
            "modelhost.backends.vision.ocr_rapidocr:RapidOcr",
            ("ocr",),
            "ocr",
            "RapidOCR on ONNX Runtime with the PP-OCR ONNX models bundled in the rapidocr wheel; images and PDFs",
        ),
        BackendInfo(
            "tesseract",
            "modelhost.backends.vision.ocr_tesseract:TesseractOcr",
            ("ocr",),
            "ocr",
            "Tesseract OCR (Debian tesseract-ocr + language packs) through pytesseract; source: languages, e.g. eng",
        ),
        BackendInfo(
            "bi-encoder",
            "modelhost.backends.text.rerank_biencoder:BiEncoderReranker",
            ("rerank",),
            "embeddings",
            "rerank by cosine similarity of sentence-transformers embeddings (any embedding model)",
        ),
        BackendInfo(
            "cross-encoder",
            "modelhost.backends.text.rerank_cross_encoder:CrossEncoderReranker",
            ("rerank",),
            "embeddings",
            "sentence-transformers CrossEncoder (one-output sequence classifier): a local directory or a hub id",
        ),
        BackendInfo(
            "llama-cpp",
            "modelhost.backends.text.textgen_llama_cpp:LlamaCppTextGenerator",
            ("text-generation",),
            "llm",
            "llama-cpp-python for GGUF models: a .gguf file or directory, a package, or a hub repo (option filename)",
        ),
        BackendInfo(
            "transformers-causal-lm",
            "modelhost.backends.text.textgen_transformers:TransformersTextGenerator",
            ("text-generation",),
            "llm",
            "transformers AutoModelForCausalLM (torch): a local directory or a hub id; the tokenizer's chat template",
        ),
        BackendInfo(
            "transformers-captioning",
            "modelhost.backends.vision.caption_transformers:TransformersCaptioner",
            ("image-captioning",),
            "vision",
            "transformers image-to-text (VisionEncoderDecoder, BLIP, ...), PIL image processor (no torchvision)",
        ),
    )
}


def backend_reference(name: str) -> str:
    """The ``module:Class`` a worker imports for a backend name (a built-in name or a reference itself)."""
    info = BUILTIN_BACKENDS.get(name)
    return info.reference if info else name


def check_backend(name: str, task: str) -> str | None:
    """An error message when ``name`` cannot serve ``task``; None when it can."""
    info = BUILTIN_BACKENDS.get(name)
    if info is None:
        module, sep, cls = name.partition(":")
        if sep and module and cls and all(p.isidentifier() for p in module.split(".")) and cls.isidentifier():
            return None
        known = ", ".join(sorted(BUILTIN_BACKENDS))
        return f"unknown backend {name!r}: use one of {known} or a 'package.module:ClassName' reference"
    if task not in info.tasks:
        return f"backend {name!r} serves {', '.join(info.tasks)}, not {task!r}"
    return None
