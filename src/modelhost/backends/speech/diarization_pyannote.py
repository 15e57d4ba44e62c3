"""Speaker diarization with a pyannote.audio pipeline, for users who have its weights.

Not installed by default (``pip install 'modelhost[pyannote]'``: pyannote.audio pulls torchaudio and more).
Untested in this project's suite: no pyannote weights install offline, and the tests never download.

Source: a local pipeline directory or ``config.yaml`` (as saved from the hub), or a hub id such as
``pyannote/speaker-diarization-3.1`` (downloaded by pyannote itself on the worker's first load).
Options: ``token`` (a hub access token for gated pipelines; ``use_auth_token`` for pyannote < 3.3 is tried too).
Payload: ``num_speakers``, ``min_speakers``, ``max_speakers``. Files: ``file``.
Result: as the built-in diarizer — ``segments`` of ``{start, end, speaker}``, ``speakers`` (with ``embedding``
when the pipeline returns speaker embeddings), ``num_speakers``, ``duration``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelhost.backends.base import Backend, Files, require_file, resolve_source
from modelhost.backends.speech.diarization_builtin import speaker_counts
from modelhost.backends.speech.speaker_resemblyzer import to_base64
from modelhost.media.audio import SAMPLE_RATE, decode_audio
from modelhost.schemas.diarization import DiarizationRequest


class PyannoteDiarizer(Backend[DiarizationRequest]):
    requires = ("torch", "pyannote.audio", "numpy")
    extra = "pyannote"
    request_type = DiarizationRequest

    def load(self) -> None:
        import torch
        from pyannote.audio import Pipeline

        torch.set_num_threads(self.spec.threads)
        source = resolve_source(self.spec.source)
        path = Path(source)
        if path.is_dir() and (path / "config.yaml").exists():
            source = str(path / "config.yaml")
        token = self.options.get("token")
        try:
            pipeline = Pipeline.from_pretrained(source, token=token) if token else Pipeline.from_pretrained(source)
        except TypeError:  # pyannote.audio < 3.3 names it use_auth_token
            pipeline = Pipeline.from_pretrained(source, use_auth_token=token)
        if pipeline is None:  # pyannote returns None (and logs) when a gated pipeline cannot be fetched
            raise RuntimeError(f"pyannote could not load the pipeline {self.spec.source!r} (gated? give a token)")
        if self.spec.device.startswith("cuda"):
            pipeline.to(torch.device(self.spec.device))
        self.pipeline = pipeline

    def infer(self, request: DiarizationRequest, files: Files) -> dict[str, Any]:
        import numpy as np
        import torch

        num, low, high = speaker_counts(request, self.options)
        audio = decode_audio(require_file(files))
        duration = len(audio) / SAMPLE_RATE
        result: dict[str, Any] = {"segments": [], "speakers": [], "num_speakers": 0, "duration": duration}
        if len(audio) == 0 or float(np.abs(audio).max()) < 1e-4:
            return result
        kwargs: dict[str, Any] = {}
        if num is not None:
            kwargs["num_speakers"] = num
        else:
            if request.min_speakers is not None:
                kwargs["min_speakers"] = low
            if request.max_speakers is not None:
                kwargs["max_speakers"] = high
        waveform = {"waveform": torch.from_numpy(audio)[None, :], "sample_rate": SAMPLE_RATE}
        output = self.pipeline(waveform, return_embeddings=True, **kwargs)
        annotation, embeddings = output if isinstance(output, tuple) else (output, None)
        # pyannote.audio 4 returns an object with .speaker_diarization (and .speaker_embeddings)
        if hasattr(annotation, "speaker_diarization"):
            embeddings = getattr(annotation, "speaker_embeddings", embeddings)
            annotation = annotation.speaker_diarization
        labels = list(annotation.labels())
        names: dict[str, str] = {}
        segments = []
        for turn, _, label in annotation.itertracks(yield_label=True):
            names.setdefault(label, f"SPEAKER_{len(names):02d}")
            segments.append({"start": round(turn.start, 3), "end": round(turn.end, 3), "speaker": names[label]})
        speakers = []
        for label, name in sorted(names.items(), key=lambda item: item[1]):
            entry: dict[str, Any] = {"speaker": name, "duration": round(annotation.label_duration(label), 3)}
            if embeddings is not None and labels.index(label) < len(embeddings):
                vector = np.asarray(embeddings[labels.index(label)], dtype=np.float32)
                norm = float(np.linalg.norm(vector))
                entry["embedding"] = to_base64(vector / norm) if norm > 0 else None
            speakers.append(entry)
        result.update(segments=segments, speakers=speakers, num_speakers=len(speakers))
        return result

    def info(self) -> dict[str, Any]:
        return {"packages": ["pyannote.audio", "torch"]}
