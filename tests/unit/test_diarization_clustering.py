"""The built-in diarizer's clustering and speaker counts, on synthetic voiceprints (no audio, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from modelhost.backends.speech.diarization_builtin import BuiltinDiarizer, cluster, speaker_counts
from modelhost.errors import BackendFault
from modelhost.schemas.diarization import MAX_SPEAKERS, DiarizationRequest


def voices(counts: list[int], spread: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around one random direction per speaker; and the true labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(counts), 32))
    rows, labels = [], []
    for speaker, count in enumerate(counts):
        rows.append(centres[speaker] + spread * np.linalg.norm(centres[speaker]) * rng.normal(size=(count, 32)))
        labels += [speaker] * count
    vectors = np.concatenate(rows)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.array(labels)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


def test_threshold_finds_the_speakers() -> None:
    embeddings, truth = voices([6, 4, 5])
    labels = cluster(embeddings, None, 1, MAX_SPEAKERS, threshold=0.3)
    assert len(set(labels.tolist())) == 3
    assert same_partition(labels, truth)
    assert labels.min() == 0


def test_num_speakers_forces_the_count_and_bounds_clamp_it() -> None:
    embeddings, _ = voices([5, 5, 5])
    assert len(set(cluster(embeddings, 2, 1, MAX_SPEAKERS, 0.3).tolist())) == 2
    assert len(set(cluster(embeddings, None, 4, MAX_SPEAKERS, 0.3).tolist())) == 4  # at least 4
    assert len(set(cluster(embeddings, None, 1, 2, 0.3).tolist())) == 2  # at most 2
    assert cluster(embeddings[:1], None, 1, MAX_SPEAKERS, 0.3).tolist() == [0]


def test_a_window_straddling_a_change_of_speaker_joins_a_cluster_without_forming_one() -> None:
    embeddings, truth = voices([6, 6], spread=0.02)
    mixed = embeddings[5] + embeddings[6]  # half one voice, half the other, between them in one region
    rows = np.insert(embeddings, 6, mixed / np.linalg.norm(mixed), axis=0)
    windows = [(0, i, i + 2) for i in range(len(rows))]  # one speech region
    labels = BuiltinDiarizer.cluster_stable(rows, windows, None, 1, MAX_SPEAKERS, 0.3)
    assert len(set(labels.tolist())) == 2
    assert same_partition(np.delete(labels, 6), truth)


def test_speaker_counts_come_from_the_request_else_the_options() -> None:
    assert speaker_counts(DiarizationRequest(), {}) == (None, 1, MAX_SPEAKERS)
    assert speaker_counts(DiarizationRequest(num_speakers=3), {"num_speakers": 2}) == (3, 1, MAX_SPEAKERS)
    assert speaker_counts(DiarizationRequest(), {"min_speakers": 2, "max_speakers": 4}) == (None, 2, 4)
    with pytest.raises(BackendFault):
        speaker_counts(DiarizationRequest(), {"min_speakers": 5, "max_speakers": 4})
