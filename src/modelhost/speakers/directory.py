"""Enrolled speakers: one database row per ``external_id`` (unique, so a duplicate is a 409 even when two
enrollments race) and one averaged voiceprint per speaker in Qdrant (``VoiceprintIndex``).

The row keeps every sample's voiceprint, so adding samples re-averages all of them. Blocking: call from a thread.
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelhost.errors import Conflict, NotFound
from modelhost.jobs.store import aware
from modelhost.schemas.jobs import ErrorBody
from modelhost.schemas.speakers import SpeakerPage, SpeakerView
from modelhost.speakers.vectors import VoiceprintIndex, VoiceprintMatch
from modelhost.storage.orm import SpeakerRow, utcnow

#: How many enrollment job ids a speaker row remembers (a resumed job is among the latest few).
_APPLIED_JOBS_KEPT = 256


def pack(vector: list[float]) -> str:
    values = array("f", vector)
    if sys.byteorder != "little":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode()


def unpack(encoded: str) -> list[float]:
    values = array("f")
    values.frombytes(base64.b64decode(encoded))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


def normalized_mean(vectors: list[list[float]]) -> list[float]:
    """The mean of the vectors, scaled to unit length (pure Python: 256-d, a handful of samples)."""
    total = [math.fsum(column) for column in zip(*vectors, strict=True)]
    norm = math.sqrt(math.fsum(x * x for x in total)) or 1.0
    return [x / norm for x in total]


def _view(row: SpeakerRow) -> SpeakerView:
    return SpeakerView(
        external_id=row.external_id,
        name=row.name,
        metadata=row.metadata_ or {},
        status=row.status,
        samples=row.samples,
        model=row.model,
        job_id=row.job_id,
        error=ErrorBody(**row.error) if row.error else None,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
    )


class SpeakerDirectory:
    def __init__(self, sessions: sessionmaker[Session], index: VoiceprintIndex) -> None:
        self.sessions = sessions
        self.index = index

    def reserve(self, external_id: str, name: str | None, metadata: dict[str, Any], model: str) -> SpeakerView:
        """Insert the speaker as ``pending``; 409 when the id is taken (a failed enrollment is replaced)."""
        now = utcnow()
        row = SpeakerRow(
            external_id=external_id,
            name=name,
            metadata_=metadata,
            status="pending",
            model=model,
            samples=0,
            sample_embeddings=[],
            created_at=now,
            updated_at=now,
        )
        try:
            with self.sessions.begin() as session:
                session.execute(
                    delete(SpeakerRow).where(SpeakerRow.external_id == external_id, SpeakerRow.status == "failed")
                )
                session.add(row)
        except IntegrityError:
            raise Conflict(
                f"a speaker with external_id {external_id!r} is already enrolled",
                param="metadata.external_id",
                code="speaker_exists",
            ) from None
        return _view(row)

    def row_or_raise(self, external_id: str) -> SpeakerRow:
        with self.sessions() as session:
            row = session.get(SpeakerRow, external_id)
        if row is None:
            raise NotFound(f"speaker {external_id!r} not found", param="external_id", code="speaker_not_found")
        return row

    def get_or_raise(self, external_id: str) -> SpeakerView:
        return _view(self.row_or_raise(external_id))

    def page(self, limit: int, offset: int) -> SpeakerPage:
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(SpeakerRow)) or 0
            rows = session.scalars(
                select(SpeakerRow).order_by(SpeakerRow.created_at, SpeakerRow.external_id).limit(limit).offset(offset)
            )
            data = [_view(r) for r in rows]
        return SpeakerPage(data=data, total=total, limit=limit, offset=offset)

    def set_job(self, external_id: str, job_id: str, *, adding: bool = False) -> SpeakerView:
        with self.sessions.begin() as session:
            row = session.get(SpeakerRow, external_id)
            if row is None:
                raise NotFound(f"speaker {external_id!r} not found", param="external_id", code="speaker_not_found")
            if adding and row.status == "pending":
                raise Conflict(f"speaker {external_id!r} is still being enrolled", code="speaker_pending")
            row.job_id = job_id
            row.updated_at = utcnow()
        return _view(row)

    def update(self, external_id: str, name: str | None, fields: dict[str, Any]) -> SpeakerView:
        with self.sessions.begin() as session:
            row = session.get(SpeakerRow, external_id)
            if row is None:
                raise NotFound(f"speaker {external_id!r} not found", param="external_id", code="speaker_not_found")
            metadata = {**(row.metadata_ or {}), **fields}
            if name is not None:
                row.name = name
                metadata["name"] = name
            metadata["external_id"] = external_id
            row.metadata_ = metadata
            row.updated_at = utcnow()
            model, ready = row.model, row.status == "ready"
        if ready:
            self.index.set_payload(model, external_id, {"name": row.name, "metadata": row.metadata_})
        return _view(row)

    def add_voiceprints(self, external_id: str, vectors: list[list[float]], job_id: str | None = None) -> SpeakerView:
        """Average these samples with the ones already enrolled, store the voiceprint, mark the speaker ready.

        ``job_id``: the enrollment job adding them. A job whose samples are already in the row adds nothing (its
        ``store`` step ran again after a restart that came between this commit and the step's own record).

        Two additions for one speaker (two ``POST …/samples`` jobs, on one server or two nodes) are serialized: the
        transaction writes the row before reading it, which takes PostgreSQL's row lock and SQLite's write lock, so
        the second waits, then reads the first one's samples; the Qdrant upsert happens under that lock too, so the
        stored voiceprint is always the mean of the samples in the row.
        """
        with self.sessions.begin() as session:
            touched = session.execute(
                update(SpeakerRow).where(SpeakerRow.external_id == external_id).values(updated_at=utcnow())
            )
            row = session.get(SpeakerRow, external_id, with_for_update=True, populate_existing=True)
            if not touched.rowcount or row is None:  # type: ignore[attr-defined]
                raise NotFound(f"speaker {external_id!r} was deleted", param="external_id", code="speaker_not_found")
            applied = list(row.applied_jobs or [])
            if job_id is not None and job_id in applied:
                return _view(row)
            samples = [*row.sample_embeddings, *(pack(v) for v in vectors)]
            voiceprint = normalized_mean([unpack(s) for s in samples])
            self.index.upsert(row.model, external_id, voiceprint, {"name": row.name, "metadata": row.metadata_})
            row.sample_embeddings = samples
            row.samples = len(samples)
            if job_id is not None:
                row.applied_jobs = [*applied, job_id][-_APPLIED_JOBS_KEPT:]
            row.status = "ready"
            row.error = None
            row.updated_at = utcnow()
        return _view(row)

    def fail(self, external_id: str, error: dict[str, Any]) -> None:
        """An enrollment failed: a new speaker becomes ``failed``; one already ready keeps its voiceprint."""
        with self.sessions.begin() as session:
            row = session.get(SpeakerRow, external_id)
            if row is None:
                return
            row.error = error
            if row.samples == 0:
                row.status = "failed"
            else:
                row.status = "ready"
            row.updated_at = utcnow()

    def delete(self, external_id: str) -> None:
        row = self.row_or_raise(external_id)
        self.index.delete(row.model, external_id)
        with self.sessions.begin() as session:
            session.execute(delete(SpeakerRow).where(SpeakerRow.external_id == external_id))

    def has_voiceprints(self, model: str) -> bool:
        """Whether any speaker of this embedding model is enrolled (ready)."""
        with self.sessions() as session:
            query = select(SpeakerRow.external_id).where(SpeakerRow.model == model, SpeakerRow.samples > 0)
            return session.scalar(query.limit(1)) is not None

    def search(self, model: str, vector: list[float], limit: int = 5) -> list[VoiceprintMatch]:
        return self.index.search(model, vector, limit)
