"""Built-in speaker diarization: Silero VAD → resemblyzer embeddings of sliding windows → agglomerative clustering.

Source: the resemblyzer encoder weights (``package:resemblyzer/pretrained.pt``). Speech regions come from the
Silero VAD bundled in faster-whisper; each region is cut into ``window`` second windows every ``step`` seconds
(a shorter region is one window); every window gets a voiceprint; the voiceprints are clustered bottom-up with
average linkage on cosine distance (windows unlike a neighbour, which straddle a change of speaker, are left out
and join the nearest cluster afterwards) — into ``num_speakers`` clusters when it is given, otherwise cut at
``threshold`` (cosine distance) and held within ``min_speakers``..``max_speakers``. Each window then speaks for the
stretch of its region nearest to its centre; neighbouring stretches of one speaker are merged into turns.

Long audio: the file is read in 10-minute windows (option ``audio_window_seconds``, ``media.audio.audio_windows``);
VAD, gain and the mel spectrogram are per window, and only the voiceprints are kept, so peak memory no longer grows
with the length of the recording (see ``bench/bench_audio_memory.py``). The clustering is global (one speaker, one
label across the windows); above ``MAX_CLUSTERED`` voiceprints an even sample is clustered and the rest join the
nearest cluster.

Request: ``modelhost.schemas.diarization.DiarizationRequest``. Options (defaults): ``num_speakers``,
``min_speakers``, ``max_speakers``, ``threshold`` (0.3), ``window`` (2.0), ``step`` (0.5), ``vad_threshold`` (0.5),
``min_silence_ms`` (300), ``audio_window_seconds`` (600). Files: ``file``.
Result: ``segments`` of ``{start, end, speaker}`` (labels ``SPEAKER_00``… in order of first appearance),
``speakers`` of ``{speaker, duration, embedding}`` (the L2-normalised mean voiceprint, bytes of 256 little-endian
float32 — what a pipeline matches against enrolled speakers), ``num_speakers`` and ``duration``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from modelhost.backends.base import Backend, Files, require_file, resolve_source
from modelhost.backends.speech.speaker_resemblyzer import (
    MEL_HOP,
    VoiceEncoder,
    gain_for_power,
    mean_square,
    speech_spans,
    to_float32_bytes,
    window_seconds,
)
from modelhost.errors import BackendFault
from modelhost.media.audio import SAMPLE_RATE, audio_windows
from modelhost.schemas.diarization import DiarizationRequest

if TYPE_CHECKING:
    import numpy as np

DEFAULTS: dict[str, float] = {
    "threshold": 0.3,
    "window": 2.0,
    "step": 0.5,
    "vad_threshold": 0.5,
    "min_silence_ms": 300,
}
# Regions shorter than this carry too little voice for a voiceprint of their own; they take their neighbour's.
MIN_REGION_SECONDS = 0.4
# Below this cosine to a neighbouring window of its region, a window is taken to straddle a change of speaker
# (on flite talks with 0.3 s pauses this lowered DER from 9–45 % to 10–23 %; with 0.5 s pauses no window is dropped).
STABLE_SIMILARITY = 0.8
# Average-linkage clustering holds n²/2 distances: above this many voiceprints (~33 min of speech at the default
# 0.5 s step) an evenly spread sample of them is clustered and every voiceprint joins its nearest cluster.
MAX_CLUSTERED = 4000
# A recording of only snippets (no region long enough for a window) keeps at most this many, one per region.
MAX_SNIPPETS = 4000


def speaker_counts(request: DiarizationRequest, options: dict[str, Any]) -> tuple[int | None, int, int]:
    """(exact number or None, lowest, highest): the request's counts, else the model options' defaults."""
    names = ("num_speakers", "min_speakers", "max_speakers")
    if all(getattr(request, name) is None for name in names) and any(options.get(name) is not None for name in names):
        try:
            request = DiarizationRequest.model_validate({name: options.get(name) for name in names})
        except ValidationError as exc:
            raise BackendFault(
                f"the model options' speaker counts are invalid: {exc}", code="invalid_model_options"
            ) from None
    return request.speaker_range


def cluster(embeddings: np.ndarray, num: int | None, low: int, high: int, threshold: float) -> np.ndarray:
    """Cluster labels (0-based) of L2-normalised ``embeddings`` by average-linkage on cosine distance."""
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(embeddings)
    if n == 1:
        return np.zeros(1, dtype=int)
    if n > MAX_CLUSTERED:  # bounded memory: cluster an even sample, then every voiceprint joins its nearest cluster
        picked = np.unique(np.linspace(0, n - 1, MAX_CLUSTERED).round().astype(int))
        core = cluster(embeddings[picked], num, low, high, threshold)
        centroids = np.stack([embeddings[picked][core == k].mean(axis=0) for k in range(core.max() + 1)])
        nearest = (embeddings @ centroids.T).argmax(axis=1)
        return np.unique(nearest, return_inverse=True)[1].reshape(-1)
    tree = linkage(embeddings.astype(np.float64), method="average", metric="cosine")
    if num is None:
        labels = fcluster(tree, t=threshold, criterion="distance")
        found = len(set(labels.tolist()))
        if low <= found <= high:
            return labels - 1  # type: ignore[no-any-return]
        num = min(max(found, low), high)
    return fcluster(tree, t=min(num, n), criterion="maxclust") - 1  # type: ignore[no-any-return]


class BuiltinDiarizer(Backend[DiarizationRequest]):
    requires = ("torch", "faster_whisper", "numpy", "scipy")
    extra = "speech"
    request_type = DiarizationRequest

    def load(self) -> None:
        import torch

        torch.set_num_threads(self.spec.threads)
        device = "cuda" if self.spec.device.startswith("cuda") else "cpu"
        self.encoder = VoiceEncoder(resolve_source(self.spec.source), device=device)
        from faster_whisper.vad import get_vad_model

        get_vad_model()

    def settings(self, request: DiarizationRequest) -> dict[str, float]:
        """The clustering settings: the model options (checked here: they are configuration, not a request) and the
        request's ``threshold`` (checked by its schema)."""
        settings = {**DEFAULTS}
        for key in DEFAULTS:
            if key in self.options:
                try:
                    settings[key] = float(self.options[key])
                except (TypeError, ValueError):
                    raise BackendFault(f"model option {key} must be a number", code="invalid_model_options") from None
        if request.threshold is not None:
            settings["threshold"] = request.threshold
        problems = {
            "threshold": 0.0 < settings["threshold"] < 2.0,
            "window": 0.5 <= settings["window"] <= 10.0,
            "step": 0.1 <= settings["step"] <= settings["window"],
            "vad_threshold": 0.0 < settings["vad_threshold"] < 1.0,
            "min_silence_ms": 0 <= settings["min_silence_ms"] <= 10_000,
        }
        for key, ok in problems.items():
            if not ok:
                raise BackendFault(f"model option {key} is out of range", code="invalid_model_options")
        return settings

    def infer(self, request: DiarizationRequest, files: Files) -> dict[str, Any]:
        import numpy as np

        num, low, high = speaker_counts(request, self.options)
        settings = self.settings(request)
        window = int(round(settings["window"] * SAMPLE_RATE / MEL_HOP))
        step = int(round(settings["step"] * SAMPLE_RATE / MEL_HOP))
        min_region = int(MIN_REGION_SECONDS * SAMPLE_RATE / MEL_HOP)

        # The audio is read in 10-minute windows (``audio_windows``): each one gets its speech regions, one gain
        # (from its speech), one mel spectrogram and the voiceprints of its sliding windows; only those (1 KiB per
        # half second of speech) are kept, so memory does not grow with the audio. Clustering then runs over the
        # voiceprints of the whole recording, so a speaker keeps one label across the 10-minute windows.
        spans: list[tuple[int, int]] = []  # speech regions, samples from the start of the recording
        windows: list[tuple[int, int, int]] = []  # (region index, first frame, last frame) of every voiceprint
        embedded: list[np.ndarray] = []
        snippets: list[tuple[int, int, int]] = []  # regions too short to embed, for a recording of only those
        snippet_prints: list[np.ndarray] = []
        duration = 0.0
        chunks = audio_windows(
            require_file(files), window_seconds=window_seconds(self.options), max_seconds=self.spec.max_audio_seconds
        )
        for offset, audio in chunks:
            duration = offset + len(audio) / SAMPLE_RATE
            first_sample = int(round(offset * SAMPLE_RATE))
            first_frame = first_sample // MEL_HOP  # windows start on 20 ms frames (``quiet_cut``): whole hops
            local = speech_spans(audio, settings["vad_threshold"], int(settings["min_silence_ms"]))
            if not local:
                continue
            speech_power = sum(mean_square(audio[a:b]) * (b - a) for a, b in local) / sum(b - a for a, b in local)
            audio *= gain_for_power(speech_power)
            mel = self.encoder.mel(audio)
            del audio
            mine: list[tuple[int, int, int]] = []
            for a, b in local:
                r = len(spans)
                spans.append((first_sample + a, first_sample + b))
                first, last = a // MEL_HOP, min(len(mel), -(-b // MEL_HOP))
                if last - first < min_region:
                    if not windows and not mine and len(snippets) < MAX_SNIPPETS:
                        snippets.append((r, first + first_frame, last + first_frame))
                        snippet_prints.append(self.encoder.embed_mels(mel[None, first:last])[0])
                    continue
                if last - first <= window:
                    mine.append((r, first, last))
                    continue
                starts = list(range(first, last - window + 1, step))
                if starts[-1] + window < last:
                    starts.append(last - window)
                mine += [(r, s, s + window) for s in starts]
            if mine:
                embedded.append(self.embed(mel, mine, window))
                windows += [(r, s + first_frame, e + first_frame) for r, s, e in mine]
        result: dict[str, Any] = {"segments": [], "speakers": [], "num_speakers": 0, "duration": duration}
        if not spans:
            return result
        if windows:
            embeddings = np.concatenate(embedded)
        else:  # only snippets: one short stretch of voice is one speaker
            windows, embeddings = snippets, np.stack(snippet_prints)
        del embedded, snippet_prints

        labels = self.cluster_stable(embeddings, windows, num, low, high, settings["threshold"])

        # Each window speaks for the part of its region nearest to its centre.
        pieces: list[tuple[float, float, int]] = []
        by_region: dict[int, list[int]] = {}
        for i, (r, _, _) in enumerate(windows):
            by_region.setdefault(r, []).append(i)
        centres = [(s + e) / 2 * MEL_HOP / SAMPLE_RATE for _, s, e in windows]
        weights = np.zeros(len(windows))
        for r, (a, b) in enumerate(spans):
            start, end = a / SAMPLE_RATE, b / SAMPLE_RATE
            members = by_region.get(r)
            if not members:  # a snippet: the speaker of the nearest window
                nearest = min(range(len(windows)), key=lambda i: abs(centres[i] - (start + end) / 2))
                pieces.append((start, end, int(labels[nearest])))
                continue
            for j, i in enumerate(members):
                lo = start if j == 0 else (centres[members[j - 1]] + centres[i]) / 2
                hi = end if j == len(members) - 1 else (centres[i] + centres[members[j + 1]]) / 2
                pieces.append((lo, hi, int(labels[i])))
                weights[i] = hi - lo

        turns: list[list[Any]] = []
        for start, end, label in sorted(pieces):
            if turns and turns[-1][2] == label and start - turns[-1][1] <= 1e-6:
                turns[-1][1] = max(turns[-1][1], end)
            else:
                turns.append([start, end, label])
        order: dict[int, int] = {}
        for _, _, label in turns:
            order.setdefault(label, len(order))
        names = {label: f"SPEAKER_{index:02d}" for label, index in order.items()}
        result["segments"] = [
            {"start": round(start, 3), "end": round(end, 3), "speaker": names[label]} for start, end, label in turns
        ]
        speakers = []
        for label, name in sorted(names.items(), key=lambda item: item[1]):
            members = labels == label
            centroid = (embeddings[members] * np.maximum(weights[members], 1e-3)[:, None]).sum(axis=0)
            centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
            talk = sum(end - start for start, end, lab in turns if lab == label)
            speakers.append({"speaker": name, "duration": round(talk, 3), "embedding": to_float32_bytes(centroid)})
        result["speakers"] = speakers
        result["num_speakers"] = len(speakers)
        return result

    @staticmethod
    def cluster_stable(
        embeddings: np.ndarray,
        windows: list[tuple[int, int, int]],
        num: int | None,
        low: int,
        high: int,
        threshold: float,
    ) -> np.ndarray:
        """Cluster the windows that agree with their neighbours; a window straddling a change of speaker (unlike a
        neighbour in its region) joins the nearest cluster afterwards, so mixed voiceprints cannot form a speaker."""
        import numpy as np

        stable = np.ones(len(windows), dtype=bool)
        for i in range(len(windows)):
            for j in (i - 1, i + 1):
                same_region = 0 <= j < len(windows) and windows[j][0] == windows[i][0]
                if same_region and float(embeddings[i] @ embeddings[j]) < STABLE_SIMILARITY:
                    stable[i] = False
        if stable.sum() < max(2, len(windows) // 2):
            return cluster(embeddings, num, low, high, threshold)
        core = cluster(embeddings[stable], num, low, high, threshold)
        centroids = np.stack([embeddings[stable][core == k].mean(axis=0) for k in range(core.max() + 1)])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        labels = np.empty(len(windows), dtype=int)
        labels[stable] = core
        labels[~stable] = (embeddings[~stable] @ centroids.T).argmax(axis=1)
        return labels

    def embed(self, mel: np.ndarray, windows: list[tuple[int, int, int]], window: int) -> np.ndarray:
        """Voiceprints of the windows: full-length ones in batches, shorter ones one by one (no zero padding)."""
        import numpy as np

        out = np.zeros((len(windows), 256), dtype=np.float32)
        full = [i for i, (_, s, e) in enumerate(windows) if e - s == window]
        for chunk in range(0, len(full), 64):
            batch = full[chunk : chunk + 64]
            out[batch] = self.encoder.embed_mels(np.stack([mel[windows[i][1] : windows[i][2]] for i in batch]))
        for i, (_, s, e) in enumerate(windows):
            if e - s != window:
                out[i] = self.encoder.embed_mels(mel[None, s:e])[0]
        return out

    def info(self) -> dict[str, Any]:
        return {"packages": ["resemblyzer", "torch", "faster-whisper", "scipy"]}
