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


def test_more_voiceprints_than_the_clustering_bound_are_sampled_then_assigned() -> None:
    """Above MAX_CLUSTERED (hours of speech) an even sample is clustered and every voiceprint joins its nearest
    cluster: the same speakers, labels 0..k-1, in bounded memory."""
    from modelhost.backends.speech import diarization_builtin

    embeddings, truth = voices([2500, 1800, 900], spread=0.05, seed=3)
    order = np.random.default_rng(1).permutation(len(truth))
    embeddings, truth = embeddings[order], truth[order]
    assert len(embeddings) > diarization_builtin.MAX_CLUSTERED
    labels = cluster(embeddings, None, 1, MAX_SPEAKERS, threshold=0.3)
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    for speaker in range(3):  # every voiceprint of one voice got one label, and different voices different ones
        assert len(set(labels[truth == speaker].tolist())) == 1
    assert len({int(labels[truth == s][0]) for s in range(3)}) == 3
    assert len(set(cluster(embeddings, 2, 1, MAX_SPEAKERS, 0.3).tolist())) == 2


def test_the_mel_front_end_in_blocks_equals_one_pass() -> None:
    """The spectrogram computed 6000 frames at a time is the one computed over the whole signal at once."""
    from modelhost.backends.speech import speaker_resemblyzer as sr

    encoder = object.__new__(sr.VoiceEncoder)  # the front end only: no weights needed
    encoder.filters = sr.mel_filterbank()
    encoder.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(sr.MEL_WINDOW) / sr.MEL_WINDOW)).astype(np.float32)
    wav = np.random.default_rng(0).normal(scale=0.1, size=sr.MEL_HOP * 13_000 + 77).astype(np.float32)
    padded = np.pad(wav, sr.MEL_WINDOW // 2)
    frames = 1 + (len(padded) - sr.MEL_WINDOW) // sr.MEL_HOP
    index = np.arange(sr.MEL_WINDOW)[None, :] + sr.MEL_HOP * np.arange(frames)[:, None]
    whole = (np.abs(np.fft.rfft(padded[index] * encoder.window, axis=1)) ** 2).astype(np.float32) @ encoder.filters.T
    blocks = encoder.mel(wav)
    assert blocks.shape == whole.shape == (frames, sr.MEL_BANDS)
    assert frames > 2 * sr.MEL_BLOCK_FRAMES
    np.testing.assert_allclose(blocks, whole, rtol=1e-5, atol=1e-6)
