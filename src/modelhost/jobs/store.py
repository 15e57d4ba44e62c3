"""Job rows, recorded steps and artifacts in the database; every change is published to the job's listeners.

Status moves only forward: ``pending → running → completed | failed | cancelled`` (``pending`` may also end
directly). Each transition is one conditional ``UPDATE … WHERE status IN (allowed predecessors)``, so a cancel
racing a completion has exactly one winner.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from modelhost.errors import NotFound
from modelhost.schemas.jobs import TERMINAL_STATUSES, ArtifactView, ErrorBody, JobEvent, JobPage, JobView
from modelhost.storage.orm import ArtifactRow, JobRow, JobStepRow, utcnow

#: status → the statuses it may be reached from
PREDECESSORS: dict[str, tuple[str, ...]] = {
    "running": ("pending",),
    "completed": ("running",),
    "failed": ("pending", "running"),
    "cancelled": ("pending", "running"),
}


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they are UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def artifact_url(job_id: str, name: str) -> str:
    return f"/v1/jobs/{job_id}/artifacts/{name}"


def _view(row: JobRow, artifacts: list[ArtifactRow]) -> JobView:
    return JobView(
        id=row.id,
        kind=row.kind,
        status=row.status,
        stage=row.stage,
        progress=row.progress,
        error=ErrorBody(**row.error) if row.error else None,
        result=row.result,
        attempts=row.attempts,
        artifacts=[
            ArtifactView(
                name=a.name, media_type=a.media_type, size=a.size, sha256=a.sha256, url=artifact_url(row.id, a.name)
            )
            for a in sorted(artifacts, key=lambda a: a.name)
        ],
        created_at=aware(row.created_at),
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
    )


def _event(row: JobRow) -> JobEvent:
    return JobEvent(
        id=row.id,
        kind=row.kind,
        status=row.status,
        stage=row.stage,
        progress=row.progress,
        error=ErrorBody(**row.error) if row.error else None,
    )


class JobEvents:
    """In-process fan-out of job changes to SSE listeners (``(event type, snapshot)`` pairs)."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Queue[tuple[str, JobEvent]]]] = {}

    def publish(self, kind: str, event: JobEvent) -> None:
        for queue in self._listeners.get(event.id, ()):
            queue.put_nowait((kind, event))

    def listening(self, job_id: str) -> bool:
        """Whether anybody in this process listens to the job (else a change needs no snapshot)."""
        return bool(self._listeners.get(job_id))

    @contextlib.contextmanager
    def listen(self, job_id: str) -> Any:
        queue: asyncio.Queue[tuple[str, JobEvent]] = asyncio.Queue()
        self._listeners.setdefault(job_id, set()).add(queue)
        try:
            yield queue
        finally:
            listeners = self._listeners.get(job_id)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[job_id]


class JobStore:
    def __init__(self, sessions: sessionmaker[Session], events: JobEvents | None = None) -> None:
        self.sessions = sessions
        self.events = events or JobEvents()

    # -- jobs ------------------------------------------------------------------------------------------------
    def create(self, kind: str, params: dict[str, Any], job_id: str | None = None) -> JobView:
        row = JobRow(
            id=job_id or str(uuid.uuid4()),
            kind=kind,
            status="pending",
            stage=None,
            progress=0.0,
            params=params,
            attempts=0,
            created_at=utcnow(),
        )
        with self.sessions.begin() as session:
            session.add(row)
        return _view(row, [])

    def row(self, job_id: str) -> JobRow | None:
        with self.sessions() as session:
            return session.get(JobRow, job_id)

    def get_or_raise(self, job_id: str) -> JobView:
        with self.sessions() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"job {job_id!r} not found", param="id", code="job_not_found")
            artifacts = list(session.scalars(select(ArtifactRow).where(ArtifactRow.job_id == job_id)))
        return _view(row, artifacts)

    def page(self, kind: str | None, status: str | None, limit: int, offset: int) -> JobPage:
        with self.sessions() as session:
            query = select(JobRow)
            count = select(func.count()).select_from(JobRow)
            if kind:
                query, count = query.where(JobRow.kind == kind), count.where(JobRow.kind == kind)
            if status:
                query, count = query.where(JobRow.status == status), count.where(JobRow.status == status)
            total = session.scalar(count) or 0
            rows = list(
                session.scalars(query.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset))
            )
            ids = [r.id for r in rows]
            artifacts: dict[str, list[ArtifactRow]] = {i: [] for i in ids}
            if ids:
                for a in session.scalars(select(ArtifactRow).where(ArtifactRow.job_id.in_(ids))):
                    artifacts[a.job_id].append(a)
        return JobPage(data=[_view(r, artifacts[r.id]) for r in rows], total=total, limit=limit, offset=offset)

    def unfinished(self) -> list[str]:
        """Jobs to (re)start: pending or running, oldest first."""
        with self.sessions() as session:
            query = select(JobRow.id).where(JobRow.status.in_(("pending", "running"))).order_by(JobRow.created_at)
            return list(session.scalars(query))

    def snapshot(self, job_id: str) -> JobEvent | None:
        row = self.row(job_id)
        return None if row is None else _event(row)

    # -- changes ---------------------------------------------------------------------------------------------
    def transition(self, job_id: str, status: str, *, result: Any = None, error: dict[str, Any] | None = None) -> bool:
        """Move the job to ``status`` if it may go there from where it is; False when it may not."""
        values: dict[str, Any] = {"status": status}
        now = utcnow()
        if status == "running":
            values |= {"started_at": now, "attempts": JobRow.attempts + 1}
        else:
            values["finished_at"] = now
        if status == "completed":
            values |= {"result": result, "progress": 1.0}
        if error is not None:
            values["error"] = error
        with self.sessions.begin() as session:
            changed = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(PREDECESSORS[status])).values(**values)
            ).rowcount  # type: ignore[attr-defined]  # CursorResult of an UPDATE has rowcount
        if changed:
            self._publish("status", job_id)
        return bool(changed)

    def resume(self, job_id: str) -> bool:
        """A job found ``running`` after a restart runs again: count the attempt, keep its stage."""
        with self.sessions.begin() as session:
            changed = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "running")
                .values(attempts=JobRow.attempts + 1)
            ).rowcount  # type: ignore[attr-defined]  # see transition
        return bool(changed)

    def set_stage(self, job_id: str, stage: str, progress: float) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "running")
                .values(stage=stage, progress=progress)
            )
        self._publish("stage", job_id)

    def set_progress(self, job_id: str, progress: float) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "running", JobRow.progress < progress)
                .values(progress=progress)
            )
        self._publish("progress", job_id)

    def _publish(self, kind: str, job_id: str) -> None:
        if not self.events.listening(job_id):
            return  # nobody here listens (always so on a node): no database read for a snapshot nobody gets
        event = self.snapshot(job_id)
        if event is not None:
            self.events.publish(kind, event)

    async def watch(
        self, job_id: str, poll_seconds: float = 1.0, keepalive_seconds: float = 15.0
    ) -> AsyncIterator[tuple[str, JobEvent]]:
        """Every change of the job until it ends, starting with its current state (``status``). Changes published
        in this process arrive at once; the database is polled too, for executors in other processes. After
        ``keepalive_seconds`` without a change comes a ``keepalive`` (the unchanged state), for proxies."""
        with self.events.listen(job_id) as queue:
            last = self.snapshot(job_id)
            if last is None:
                return
            yield "status", last
            quiet_since = asyncio.get_running_loop().time()
            while last.status not in TERMINAL_STATUSES:
                try:
                    kind, event = await asyncio.wait_for(queue.get(), timeout=poll_seconds)
                except TimeoutError:
                    polled = await asyncio.to_thread(self.snapshot, job_id)
                    if polled is None:
                        return
                    if polled == last:
                        if asyncio.get_running_loop().time() - quiet_since >= keepalive_seconds:
                            quiet_since = asyncio.get_running_loop().time()
                            yield "keepalive", last
                        continue
                    kind = (
                        "status"
                        if polled.status != last.status
                        else "stage"
                        if polled.stage != last.stage
                        else "progress"
                    )
                    event = polled
                if event == last and kind != "status":
                    continue
                last = event
                quiet_since = asyncio.get_running_loop().time()
                yield kind, event

    # -- steps -----------------------------------------------------------------------------------------------
    def step_outputs(self, job_id: str) -> dict[str, Any]:
        with self.sessions() as session:
            rows = session.scalars(select(JobStepRow).where(JobStepRow.job_id == job_id))
            return {r.name: r.output for r in rows}

    def recorded_count(self, job_id: str, names: list[str]) -> int:
        """How many of the steps ``names`` are recorded: their names only, not their outputs (a chord item counts its
        gather's recorded items this way, where reading every output would grow with the job)."""
        with self.sessions() as session:
            query = select(func.count()).where(JobStepRow.job_id == job_id, JobStepRow.name.in_(names))
            return int(session.scalar(query) or 0)

    def row_and_outputs(self, job_id: str) -> tuple[JobRow | None, dict[str, Any]]:
        """``row`` and ``step_outputs`` in one session (a cluster node reads both at the start of every task)."""
        with self.sessions() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                return None, {}
            steps = session.scalars(select(JobStepRow).where(JobStepRow.job_id == job_id))
            return row, {r.name: r.output for r in steps}

    def record_step(self, job_id: str, name: str, output: Any) -> None:
        with self.sessions.begin() as session:
            row = session.get(JobStepRow, (job_id, name))
            if row is None:
                session.add(JobStepRow(job_id=job_id, name=name, output=output, finished_at=utcnow()))
            else:
                row.output = output
                row.finished_at = utcnow()

    # -- artifacts -------------------------------------------------------------------------------------------
    def add_artifact(
        self, job_id: str, name: str, media_type: str, size: int, sha256: str, blob_key: str
    ) -> str | None:
        """Record (or replace) the artifact ``name``; the blob key of the version it replaced (None: there was none,
        or it had this key)."""
        with self.sessions.begin() as session:
            row = session.get(ArtifactRow, (job_id, name), with_for_update=True)
            if row is None:
                session.add(
                    ArtifactRow(
                        job_id=job_id,
                        name=name,
                        media_type=media_type,
                        size=size,
                        sha256=sha256,
                        blob_key=blob_key,
                        created_at=utcnow(),
                    )
                )
                return None
            replaced = row.blob_key
            row.media_type, row.size, row.sha256, row.blob_key = media_type, size, sha256, blob_key
            return replaced if replaced != blob_key else None

    def artifact_keys(self, job_id: str) -> dict[str, str]:
        """Name → blob key of each artifact of the job (the key changes with every version: ``put_artifact``)."""
        with self.sessions() as session:
            query = select(ArtifactRow.name, ArtifactRow.blob_key).where(ArtifactRow.job_id == job_id)
            return {row.name: row.blob_key for row in session.execute(query)}

    def artifact_or_raise(self, job_id: str, name: str) -> ArtifactRow:
        with self.sessions() as session:
            row = session.get(ArtifactRow, (job_id, name))
        if row is None:
            self.get_or_raise(job_id)  # 404 for the job first
            raise NotFound(f"job {job_id!r} has no artifact {name!r}", param="name", code="artifact_not_found")
        return row

    def delete_artifacts(self, job_id: str) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(ArtifactRow).where(ArtifactRow.job_id == job_id))

    def delete(self, job_id: str) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(ArtifactRow).where(ArtifactRow.job_id == job_id))
            session.execute(delete(JobStepRow).where(JobStepRow.job_id == job_id))
            session.execute(delete(JobRow).where(JobRow.id == job_id))
