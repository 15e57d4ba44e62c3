"""The speaker directory over a real database and a real embedded Qdrant: unique ids, averaging, search by model,
delete, failed enrollments."""

from __future__ import annotations

import math
from collections.abc import Iterator
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
