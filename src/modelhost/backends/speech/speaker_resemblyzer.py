"""Speaker embeddings (voiceprints) with resemblyzer's pretrained GE2E voice encoder.

Source: the encoder weights, ``package:resemblyzer/pretrained.pt`` for the ones bundled in the resemblyzer
package (a local ``.pt`` path works too). Only the weights file is used: the network (3-layer LSTM, 40 mel bands
→ 256-d) and its mel front end are rebuilt here with torch and numpy, because importing the ``resemblyzer`` package
pulls librosa/numba and webrtcvad, whose PyPI release imports ``pkg_resources`` (gone from setuptools ≥ 81).
Measured here: the embeddings agree with resemblyzer's own ``VoiceEncoder.embed_utterance`` (cosine > 0.9999).

Speech is found with the Silero VAD bundled in faster-whisper; silence between speech is dropped and the volume
raised to −30 dBFS (as resemblyzer's ``preprocess_wav`` does) before embedding.

Long audio is read in windows of ``audio_window_seconds`` (10 minutes): each window's speech gets its own gain and
its 1.6 s partials are embedded; the voiceprint is the normalised mean of the partials of all windows, so memory
does not grow with the length of the audio (audio within one window gives exactly resemblyzer's embedding).

Request: ``modelhost.schemas.speaker_embedding.SpeakerEmbeddingRequest``. Options (defaults): ``vad`` (true),
``vad_threshold`` (0.5), ``audio_window_seconds`` (600). Files: ``file`` — any audio ffmpeg decodes.
Result: ``embedding`` (bytes, a binary frame: 256 little-endian float32, L2-normalised; null when the clip holds
no speech), ``dimensions`` (256), ``duration`` and ``speech_duration`` in seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelhost.backends.base import Backend, Files, require_file, resolve_source
from modelhost.errors import BackendFault
from modelhost.media.audio import SAMPLE_RATE, WINDOW_SECONDS, audio_windows
from modelhost.schemas.speaker_embedding import SpeakerEmbeddingRequest, SpeakerEmbeddingResult

if TYPE_CHECKING:
    import numpy as np

# resemblyzer's hparams
MEL_WINDOW = 400  # 25 ms at 16 kHz
MEL_HOP = 160  # 10 ms
MEL_BANDS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
HIDDEN = 256
DIMENSIONS = 256
NORM_TARGET_DBFS = -30.0
INT16_MAX = 2**15 - 1
# Shorter than this (after VAD) is not enough voice to say anything about the speaker.
MIN_SPEECH_SECONDS = 0.3
MEL_BLOCK_FRAMES = 6000  # 60 s of spectrogram per FFT block
PARTIAL_BATCH = 64  # partials per LSTM call


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    import numpy as np

    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    mels = freq / f_sp
    log_part = freq >= min_log_hz
    mels[log_part] = min_log_hz / f_sp + np.log(freq[log_part] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    import numpy as np

    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    freqs = f_sp * mels
    log_part = mels >= min_log_mel
    freqs[log_part] = min_log_hz * np.exp(logstep * (mels[log_part] - min_log_mel))
    return freqs


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = MEL_WINDOW, n_mels: int = MEL_BANDS) -> np.ndarray:
    """``librosa.filters.mel(sr, n_fft, n_mels)`` with its defaults (Slaney scale and area normalisation)."""
    import numpy as np

    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_points = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sample_rate / 2]))[0], n_mels + 2)
    )
    fdiff = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, len(fft_freqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2 : n_mels + 2] - mel_points[:n_mels]))[:, None]
    return weights.astype(np.float32)


class VoiceEncoder:
    """resemblyzer's ``VoiceEncoder`` network and mel front end, loaded from its ``pretrained.pt``."""

    def __init__(self, weights: str, device: str = "cpu") -> None:
        import numpy as np
        import torch
        from torch import nn

        self.torch = torch
        self.device = torch.device(device)
        self.lstm = nn.LSTM(MEL_BANDS, HIDDEN, 3, batch_first=True)
        self.linear = nn.Linear(HIDDEN, DIMENSIONS)
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
        state = checkpoint["model_state"]
        self.lstm.load_state_dict({k.removeprefix("lstm."): v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.to(self.device).eval()
        self.linear.to(self.device).eval()
        self.filters = mel_filterbank()
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(MEL_WINDOW) / MEL_WINDOW)).astype(np.float32)

    def mel(self, wav: np.ndarray) -> np.ndarray:
        """Mel power spectrogram ``[frames, 40]`` as librosa's ``melspectrogram`` makes it (centred, zero-padded).

        Computed in blocks of ``MEL_BLOCK_FRAMES`` frames (the same values: each frame reads only its 400
        samples), so the FFT's intermediates stay a few MiB instead of ~30 bytes per sample of audio."""
        import numpy as np

        wav = wav.astype(np.float32, copy=False)
        half = MEL_WINDOW // 2
        n_frames = 1 + len(wav) // MEL_HOP
        out = np.empty((n_frames, MEL_BANDS), dtype=np.float32)
        for a in range(0, n_frames, MEL_BLOCK_FRAMES):
            b = min(n_frames, a + MEL_BLOCK_FRAMES)
            lo, hi = a * MEL_HOP - half, (b - 1) * MEL_HOP + half
            segment = np.pad(wav[max(lo, 0) : min(hi, len(wav))], (max(0, -lo), max(0, hi - len(wav))))
            index = np.arange(MEL_WINDOW)[None, :] + MEL_HOP * np.arange(b - a)[:, None]
            spectrum = np.abs(np.fft.rfft(segment[index] * self.window, axis=1)) ** 2
            out[a:b] = spectrum.astype(np.float32) @ self.filters.T
        return out

    def embed_mels(self, mels: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings ``[batch, 256]`` of mel windows ``[batch, frames, 40]``."""
        torch = self.torch
        with torch.inference_mode():
            _, (hidden, _) = self.lstm(torch.from_numpy(mels).to(self.device))
            raw = torch.relu(self.linear(hidden[-1]))
            embeds = raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-12)
        return embeds.cpu().numpy()  # type: ignore[no-any-return]

    def partial_sum(self, wav: np.ndarray, rate: float = 1.3, min_coverage: float = 0.75) -> tuple[np.ndarray, int]:
        """The sum and count of the normalised embeddings of 1.6 s partials taken ``rate`` times a second (as
        resemblyzer's ``embed_utterance`` takes them), embedded ``PARTIAL_BATCH`` at a time."""
        import numpy as np

        n_frames = int(np.ceil((len(wav) + 1) / MEL_HOP))
        frame_step = int(np.round((SAMPLE_RATE / rate) / MEL_HOP))
        starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step))
        coverage = (len(wav) - starts[-1] * MEL_HOP) / (PARTIAL_FRAMES * MEL_HOP)
        if coverage < min_coverage and len(starts) > 1:
            starts = starts[:-1]
        needed = (starts[-1] + PARTIAL_FRAMES) * MEL_HOP
        if needed >= len(wav):
            wav = np.pad(wav, (0, needed - len(wav)))
        mel = self.mel(wav)
        total = np.zeros(DIMENSIONS, dtype=np.float64)
        for i in range(0, len(starts), PARTIAL_BATCH):
            batch = np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts[i : i + PARTIAL_BATCH]])
            total += self.embed_mels(batch).sum(axis=0, dtype=np.float64)
        return total, len(starts)

    def embed_utterance(self, wav: np.ndarray, rate: float = 1.3, min_coverage: float = 0.75) -> np.ndarray:
        """resemblyzer's ``embed_utterance``: the normalised mean of 1.6 s partials taken ``rate`` times a second."""
        import numpy as np

        total, _ = self.partial_sum(wav, rate, min_coverage)
        return (total / max(float(np.linalg.norm(total)), 1e-12)).astype(np.float32)


def mean_square(wav: np.ndarray) -> float:
    """The mean of the squared samples, summed in float64 a million samples at a time (no float64 copy)."""
    import numpy as np

    if not len(wav):
        return 0.0
    block = 1 << 20
    parts = (wav[i : i + block].astype(np.float64) for i in range(0, len(wav), block))
    total = sum(float(np.dot(part, part)) for part in parts)
    return total / len(wav)


def gain_for_power(power: float, target_dbfs: float = NORM_TARGET_DBFS) -> float:
    """The factor that raises (never lowers) audio of this mean square to ``target_dbfs``, as resemblyzer's
    preprocessing does."""
    import math

    rms = math.sqrt(power) * INT16_MAX
    if rms <= 0:
        return 1.0
    change = target_dbfs - 20 * math.log10(rms / INT16_MAX)
    return 1.0 if change <= 0 else float(10 ** (change / 20))


def normalize_volume(wav: np.ndarray, target_dbfs: float = NORM_TARGET_DBFS) -> np.ndarray:
    """Raise (never lower) the volume to ``target_dbfs``, as resemblyzer's preprocessing does."""
    import numpy as np

    gain = gain_for_power(mean_square(wav), target_dbfs)
    return wav if gain == 1.0 else (wav * gain).astype(np.float32)


def speech_spans(audio: np.ndarray, threshold: float = 0.5, min_silence_ms: int = 300) -> list[tuple[int, int]]:
    """(start, end) sample indices of speech found by the Silero VAD bundled in faster-whisper."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=threshold, min_silence_duration_ms=min_silence_ms, speech_pad_ms=30)
    stamps = get_speech_timestamps(audio, vad_options=options, sampling_rate=SAMPLE_RATE)
    return [(int(s["start"]), int(s["end"])) for s in stamps]


def to_float32_bytes(vector: np.ndarray) -> bytes:
    """A vector as little-endian float32 bytes: how voiceprints travel (as a binary frame, not base64)."""
    import numpy as np

    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def window_seconds(options: dict[str, Any]) -> float:
    """The model option ``audio_window_seconds``: how much audio is decoded and processed at a time (default 600;
    a whole number of 10 ms spectrogram hops, 5–3600 s)."""
    value = options.get("audio_window_seconds", WINDOW_SECONDS)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise BackendFault("model option audio_window_seconds must be a number", code="invalid_model_options") from None
    if not 5 <= seconds <= 3600 or abs(round(seconds * 100) - seconds * 100) > 1e-6:
        raise BackendFault(
            "model option audio_window_seconds must be 5–3600 s in steps of 0.01 s", code="invalid_model_options"
        )
    return seconds


def flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class ResemblyzerSpeakerEmbedding(Backend[SpeakerEmbeddingRequest]):
    requires = ("torch", "faster_whisper", "numpy")
    extra = "speech"
    request_type = SpeakerEmbeddingRequest

    def load(self) -> None:
        import torch

        torch.set_num_threads(self.spec.threads)
        device = "cuda" if self.spec.device.startswith("cuda") else "cpu"
        self.encoder = VoiceEncoder(resolve_source(self.spec.source), device=device)
        from faster_whisper.vad import get_vad_model

        get_vad_model()

    def infer(self, request: SpeakerEmbeddingRequest, files: Files) -> SpeakerEmbeddingResult:
        """The voiceprint of all the speech in the file, read in 10-minute windows (``audio_windows``): each
        window's speech is embedded (its own volume gain) and the partials' embeddings of all windows averaged, so
        memory does not grow with the length of the audio. Audio up to one window gives exactly the embedding of
        the whole file; speech too short for a partial is carried over to the next window."""
        import numpy as np

        use_vad = flag(self.options.get("vad", True)) if request.vad is None else request.vad
        threshold = request.vad_threshold or float(self.options.get("vad_threshold", 0.5))
        total, count, duration, speech_samples = np.zeros(DIMENSIONS, dtype=np.float64), 0, 0.0, 0
        carry = np.zeros(0, dtype=np.float32)
        windows = audio_windows(
            require_file(files), window_seconds=window_seconds(self.options), max_seconds=self.spec.max_audio_seconds
        )
        for offset, audio in windows:
            duration = offset + len(audio) / SAMPLE_RATE
            if use_vad:
                spans = speech_spans(audio, threshold)
                found = [audio[a:b] for a, b in spans]
            else:
                found = [audio] if float(np.abs(audio).max(initial=0.0)) > 1e-4 else []
            del audio
            speech_samples += sum(len(part) for part in found)
            speech = np.concatenate([carry, *found]) if found else carry
            del found
            if len(speech) < PARTIAL_FRAMES * MEL_HOP:  # too short for one partial: join the next window's speech
                carry = speech
                continue
            part_total, part_count = self.encoder.partial_sum(normalize_volume(speech))
            total, count, carry = total + part_total, count + part_count, np.zeros(0, dtype=np.float32)
        if len(carry) >= MIN_SPEECH_SECONDS * SAMPLE_RATE:
            part_total, part_count = self.encoder.partial_sum(normalize_volume(carry))
            total, count = total + part_total, count + part_count
        result = SpeakerEmbeddingResult(
            embedding=None,
            dimensions=DIMENSIONS,
            duration=duration,
            speech_duration=round(speech_samples / SAMPLE_RATE, 3),
        )
        if count and speech_samples >= MIN_SPEECH_SECONDS * SAMPLE_RATE:
            vector = total / max(float(np.linalg.norm(total)), 1e-12)
            result.embedding = to_float32_bytes(vector)
        return result

    def info(self) -> dict[str, Any]:
        return {"packages": ["resemblyzer", "torch", "faster-whisper"], "dimensions": DIMENSIONS}
