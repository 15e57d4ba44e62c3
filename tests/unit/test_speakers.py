"""The speaker directory over a real database and a real embedded Qdrant: unique ids, averaging, search by model,
delete, failed enrollments."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine

from modelhost.config import Settings
from modelhost.errors import Conflict, NotFound
from modelhost.speakers.directory import SpeakerDirectory, normalized_mean, pack, unpack
from modelhost.speakers.vectors import VoiceprintIndex
from modelhost.storage.db import build_sessionmaker, migrate


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


@pytest.fixture
def directory(engine: Engine, tmp_path: Path) -> Iterator[SpeakerDirectory]:
    migrate(engine)
    index = VoiceprintIndex(Settings(data_dir=tmp_path))
    yield SpeakerDirectory(build_sessionmaker(engine), index)
    index.close()


def test_enrolled_speakers_are_found_by_their_voiceprint_and_only_within_their_model(
    directory: SpeakerDirectory,
) -> None:
    directory.reserve("ada", "Ada", {"external_id": "ada", "name": "Ada", "team": "x"}, "enc-a")
    with pytest.raises(Conflict):
        directory.reserve("ada", "Other", {}, "enc-a")
    assert directory.get_or_raise("ada").status == "pending"
    assert not directory.has_voiceprints("enc-a")
    ready = directory.add_voiceprints("ada", [unit(1, 0, 0, 0), unit(1, 0.2, 0, 0)])
    assert (ready.status, ready.samples) == ("ready", 2)
    assert directory.has_voiceprints("enc-a")
    assert not directory.has_voiceprints("enc-b")
    directory.reserve("bob", "Bob", {"external_id": "bob"}, "enc-a")
    directory.add_voiceprints("bob", [unit(0, 1, 0, 0)])
    directory.reserve("cy", "Cy", {"external_id": "cy"}, "enc-b")  # another model, same dimension
    directory.add_voiceprints("cy", [unit(1, 0, 0, 0)])

    matches = directory.search("enc-a", unit(1, 0.1, 0, 0))
    assert [m.external_id for m in matches] == ["ada", "bob"]
    assert matches[0].name == "Ada"
    assert matches[0].score == pytest.approx(1.0, abs=1e-3)
    assert [m.external_id for m in directory.search("enc-b", unit(1, 0, 0, 0))] == ["cy"]

    # More samples re-average all of them; a rename reaches the vector store's payload.
    directory.add_voiceprints("ada", [unit(0, 0, 1, 0)])
    assert directory.get_or_raise("ada").samples == 3
    directory.update("ada", "Ada L.", {"room": "4"})
    top = directory.search("enc-a", unit(1, 0.1, 0.5, 0))[0]
    assert (top.external_id, top.name) == ("ada", "Ada L.")
    assert directory.get_or_raise("ada").metadata == {"external_id": "ada", "name": "Ada L.", "team": "x", "room": "4"}

    directory.delete("ada")
    assert [m.external_id for m in directory.search("enc-a", unit(1, 0, 0, 0))] == ["bob"]
    with pytest.raises(NotFound):
        directory.get_or_raise("ada")
    assert directory.page(limit=10, offset=0).total == 2


def test_a_failed_enrollment_frees_its_id(directory: SpeakerDirectory) -> None:
    directory.reserve("dee", "Dee", {}, "enc-a")
    directory.fail("dee", {"message": "too short", "type": "invalid_request_error", "param": None, "code": "x"})
    failed = directory.get_or_raise("dee")
    assert failed.status == "failed"
    assert failed.error is not None
    assert directory.reserve("dee", "Dee", {}, "enc-a").status == "pending"


def test_vector_helpers() -> None:
    vector = [0.5, -0.25, 0.125]
    assert unpack(pack(vector)) == vector
    mean = normalized_mean([[1.0, 0.0], [0.0, 1.0]])
    assert mean == pytest.approx([math.sqrt(0.5), math.sqrt(0.5)])


def test_concurrent_sample_additions_for_one_speaker_lose_none(directory: SpeakerDirectory) -> None:
    """Eight threads add one sample each to one speaker at once (as eight ``POST …/samples`` jobs finishing
    together do): every sample is kept and the stored voiceprint is the mean of all of them."""
    directory.reserve("eve", "Eve", {"external_id": "eve"}, "enc-a")
    first = unit(1, 0, 0, 0)
    directory.add_voiceprints("eve", [first])
    added = [unit(1, 0.1 * i, 0.05 * i, 0.02) for i in range(1, 9)]
    barrier = threading.Barrier(len(added))

    def add(vector: list[float]) -> None:
        barrier.wait()
        directory.add_voiceprints("eve", [vector])

    with ThreadPoolExecutor(len(added)) as pool:
        for future in [pool.submit(add, v) for v in added]:
            future.result()

    speaker = directory.get_or_raise("eve")
    assert speaker.samples == 1 + len(added)
    row = directory.row_or_raise("eve")
    assert sorted(map(tuple, map(unpack, row.sample_embeddings))) == sorted(
        tuple(unpack(pack(v))) for v in [first, *added]
    )
    expected = normalized_mean([unpack(pack(v)) for v in [first, *added]])
    top = directory.search("enc-a", expected)[0]
    assert top.external_id == "eve"
    assert top.score == pytest.approx(1.0, abs=1e-4)


def test_a_job_whose_samples_are_stored_adds_nothing_when_its_store_step_runs_again(
    directory: SpeakerDirectory,
) -> None:
    """A restart between the ``store`` step's commit and its record runs the step again on resume: the same job's
    samples must not be counted twice, while another job's samples still add."""
    directory.reserve("fay", "Fay", {"external_id": "fay"}, "enc-a")
    first = directory.add_voiceprints("fay", [unit(1, 0, 0, 0), unit(1, 0.1, 0, 0)], "job-1")
    again = directory.add_voiceprints("fay", [unit(1, 0, 0, 0), unit(1, 0.1, 0, 0)], "job-1")
    assert first.samples == again.samples == 2
    assert len(directory.row_or_raise("fay").sample_embeddings) == 2
    more = directory.add_voiceprints("fay", [unit(0, 1, 0, 0)], "job-2")
    assert more.samples == 3
    assert directory.add_voiceprints("fay", [unit(0, 1, 0, 0)], "job-2").samples == 3
    expected = normalized_mean([unpack(pack(v)) for v in [unit(1, 0, 0, 0), unit(1, 0.1, 0, 0), unit(0, 1, 0, 0)]])
    top = directory.search("enc-a", expected)[0]
    assert (top.external_id, top.score) == ("fay", pytest.approx(1.0, abs=1e-4))
