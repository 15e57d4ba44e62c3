"""The jobs engine with a plain pipeline of our own: ordering, recorded outputs, resume after a stop, transient
retries, failures, cancellation, forward-only status, events in order, the blob store and Range parsing."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine

from modelhost.api.routes.jobs import parse_range
from modelhost.config import Settings
from modelhost.errors import InvalidRequest, RangeNotSatisfiable, WorkerCrashed
from modelhost.jobs import meeting
from modelhost.jobs.executor import LocalExecutor, error_fields
from modelhost.jobs.pipeline import JobDeps, Pipeline, PipelineRegistry, StepContext
from modelhost.jobs.service import JobInput, JobService
from modelhost.jobs.store import JobStore
from modelhost.media.audio import wav_header
from modelhost.runtime_settings import RuntimeSettingsStore
from modelhost.storage.blobs import LocalBlobStore
from modelhost.storage.db import build_sessionmaker, migrate
from tests.support import disks
from tests.support.blobs import check_read_range


class Harness:
    """A job service over a real database and blob store, with a pipeline whose steps the test controls."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        migrate(engine)
        self.sessions = build_sessionmaker(engine)
        self.runtime = RuntimeSettingsStore(self.sessions)
        self.runtime.update({"jobs_retry_backoff_seconds": 0.0, "jobs_max_attempts": 3})
        self.blobs = LocalBlobStore(data_dir / "blobs")
        self.settings = Settings(data_dir=data_dir)
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.failures: dict[str, list[BaseException]] = {}
        self.ended: list[str] = []
        self.pipeline = self._pipeline()

    def _pipeline(self) -> Pipeline:
        pipeline = Pipeline("test")

        @pipeline.step("first")
        async def first(ctx: StepContext) -> dict[str, Any]:
            self.calls.append("first")
            data = await ctx.read_input("file")
            await ctx.put_work("copy", data)
            return {"size": len(data)}

        @pipeline.step("second", weight=2)
        async def second(ctx: StepContext) -> dict[str, Any]:
            self.calls.append("second")
            pending = self.failures.get("second")
            if pending:
                raise pending.pop(0)
            parts = []
            for i in range(3):
                parts.append(await ctx.once(f"part-{i}", lambda i=i: self._part(i)))
                await ctx.progress((i + 1) / 3)
            await self.gate.wait()
            return {"parts": parts, "gathered": await ctx.gather(*(self._part(i) for i in range(4)), limit=2)}

        @pipeline.step("third")
        async def third(ctx: StepContext) -> dict[str, Any]:
            self.calls.append("third")
            data = await ctx.read_work("copy")
            await ctx.put_artifact("out.txt", data.upper(), "text/plain")
            return {"first": ctx.outputs["first"], "second": ctx.outputs["second"]["parts"]}

        @pipeline.on_end
        async def ended(ctx: StepContext, status: str, error: dict[str, Any] | None) -> None:
            assert ctx.job_id
            assert (error is None) == (status != "failed")
            self.ended.append(status)

        return pipeline

    async def _part(self, i: int) -> int:
        self.calls.append(f"part-{i}")
        return i * 10

    def service(self) -> JobService:
        store = JobStore(self.sessions)
        deps = JobDeps(
            self.settings, self.runtime, cast(Any, None), cast(Any, None), self.blobs, self.sessions, cast(Any, None)
        )
        registry = PipelineRegistry([self.pipeline])
        return JobService(store, registry, deps, LocalExecutor(store, registry, deps))


@pytest.fixture
def harness(engine: Engine, tmp_path: Path) -> Harness:
    return Harness(engine, tmp_path)


async def wait_status(service: JobService, job_id: str, statuses: tuple[str, ...], timeout: float = 10) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = service.get(job_id).status
        if status in statuses:
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job stayed {status}")
        await asyncio.sleep(0.01)


def test_steps_run_in_order_and_the_last_output_is_the_result(harness: Harness) -> None:
    async def scenario() -> None:
        service = harness.service()
        await service.start()
        harness.gate.set()
        job = await service.create("test", {"x": 1}, inputs={"file": JobInput("a.txt", b"hello", "text/plain")})
        assert job.status == "pending"
        await wait_status(service, job.id, ("completed",))
        done = service.get(job.id)
        assert done.result == {"first": {"size": 5}, "second": [0, 10, 20]}
        assert done.progress == 1.0
        assert done.stage == "third"
        assert done.attempts == 1
        assert [a.name for a in done.artifacts] == ["out.txt"]
        assert done.artifacts[0].size == 5
        artifact = service.artifact(job.id, "out.txt")
        assert harness.blobs.get(artifact.blob_key) == b"HELLO"
        assert not harness.blobs.exists(f"jobs/{job.id}/work/copy")  # intermediate files go when the job ends
        assert harness.calls == ["first", "second", "part-0", "part-1", "part-2", "part-0", "part-1", "part-2",
                                 "part-3", "third"]  # fmt: skip
        assert harness.ended == ["completed"]
        await service.delete(job.id)
        assert not harness.blobs.exists(artifact.blob_key)
        await service.stop()

    asyncio.run(scenario())


def test_a_stopped_server_resumes_the_job_at_its_first_unfinished_step(harness: Harness) -> None:
    async def scenario() -> None:
        service = harness.service()
        await service.start()
        job = await service.create("test", {}, inputs={"file": JobInput("a.txt", b"abc")})
        while "second/part-2" not in service.store.step_outputs(job.id):
            await asyncio.sleep(0.01)
        await service.stop()  # like a restart: the task is gone, the job stays running
        assert service.get(job.id).status == "running"
        harness.calls.clear()
        harness.gate.set()
        restarted = harness.service()
        await restarted.start()
        await wait_status(restarted, job.id, ("completed",))
        # "first" and the recorded parts are not run again.
        assert harness.calls == ["second", "part-0", "part-1", "part-2", "part-3", "third"]
        assert restarted.get(job.id).attempts == 2
        await restarted.stop()

    asyncio.run(scenario())


def test_transient_failures_are_retried_then_fail_the_job(harness: Harness) -> None:
    async def scenario() -> None:
        service = harness.service()
        await service.start()
        harness.gate.set()
        harness.failures["second"] = [WorkerCrashed("gone"), WorkerCrashed("gone again")]
        job = await service.create("test", {}, inputs={"file": JobInput("a.txt", b"abc")})
        assert await wait_status(service, job.id, ("completed", "failed")) == "completed"
        assert harness.calls.count("second") == 3

        harness.failures["second"] = [WorkerCrashed("x"), WorkerCrashed("y"), WorkerCrashed("z")]
        job = await service.create("test", {}, inputs={"file": JobInput("a.txt", b"abc")})
        assert await wait_status(service, job.id, ("completed", "failed")) == "failed"
        failed = service.get(job.id)
        assert failed.error is not None
        assert failed.error.code == "worker_crashed"
        assert failed.artifacts == []
        await service.stop()

    asyncio.run(scenario())


def test_a_bad_input_fails_at_once_with_the_error_envelope(harness: Harness) -> None:
    async def scenario() -> None:
        service = harness.service()
        await service.start()
        harness.failures["second"] = [InvalidRequest("the file is odd", param="file", code="odd")]
        job = await service.create("test", {}, inputs={"file": JobInput("a.txt", b"abc")})
        await wait_status(service, job.id, ("failed",))
        failed = service.get(job.id)
        assert failed.error is not None
        assert failed.error.model_dump() == {
            "message": "the file is odd",
            "type": "invalid_request_error",
            "param": "file",
            "code": "odd",
        }
        assert harness.calls.count("second") == 1
        assert harness.ended == ["failed"]
        await service.stop()

    asyncio.run(scenario())


def test_a_full_disk_fails_the_step_at_once_with_storage_full(engine: Engine, tmp_path: Path) -> None:
    """The blob store on a 1 MiB disk: the input (600 KiB) fits, the first step's work copy of it does not. The job
    fails at once (a full disk is not transient: no retry) with 507 ``storage_full`` naming the folder, and no
    partial file is left."""
    with disks.small_disk(tmp_path / "blobs", "1m") as blobs:
        harness = Harness(engine, tmp_path)

        async def scenario() -> None:
            service = harness.service()
            await service.start()
            job = await service.create("test", {}, inputs={"file": JobInput("a.bin", b"a" * 600 * 1024)})
            await wait_status(service, job.id, ("failed",))
            failed = service.get(job.id)
            assert failed.error is not None
            assert (failed.error.type, failed.error.code) == ("service_unavailable", "storage_full")
            assert str(blobs) in failed.error.message
            assert harness.calls == ["first"]
            assert harness.ended == ["failed"]
            assert not (blobs / "jobs" / job.id / "work").exists()
            await service.stop()

        asyncio.run(scenario())


def test_a_step_s_own_full_disk_is_storage_full_not_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's scratch file in a folder of the process's temporary folder (as the meeting and presentation steps
    write them), the disk full: ``storage_full`` naming the temporary folder, not ``job_failed``."""
    with disks.small_disk(tmp_path / "scratch", "1m") as scratch:
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        work = Path(tempfile.mkdtemp(prefix="modelhost-video-"))
        with pytest.raises(OSError, match="No space left") as caught:
            (work / "frames.raw").write_bytes(b"f" * 2 * 1024 * 1024)
        error = error_fields(caught.value)
    assert (error["type"], error["code"]) == ("service_unavailable", "storage_full")
    assert str(scratch) in error["message"]


@pytest.mark.parametrize("seconds", [60, 1])
def test_ffmpeg_on_a_full_disk_fails_the_meeting_with_storage_full_not_invalid_audio(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: int
) -> None:
    """The meeting's decode step: real ffmpeg writes the decoded audio into the process's temporary folder, here a
    1 MiB disk. The job fails at once with ``storage_full`` naming that disk, not with 415 ``invalid_audio`` (the
    upload is fine). 60 s (1.9 MB): ffmpeg fails mid-stream and exits 1. 1 s (32 kB) on a disk already full: only
    its last write fails, and ffmpeg exits 0 leaving an empty file (which read as "no audio"; a cut one, as a
    shorter recording)."""
    with disks.small_disk(tmp_path / "spool", "1m") as spool:
        monkeypatch.setattr(tempfile, "tempdir", str(spool))
        harness = Harness(engine, tmp_path)
        harness.pipeline = meeting.PIPELINE
        recording = wav_header(16_000, seconds * 16_000 * 2) + b"\x10\x00" * seconds * 16_000
        if seconds == 1:
            disks.fill(spool)

        async def scenario() -> None:
            service = harness.service()
            await service.start()
            job = await service.create(meeting.KIND, {}, inputs={"file": JobInput("meeting.wav", recording)})
            await wait_status(service, job.id, ("failed",))
            failed = service.get(job.id)
            assert failed.error is not None
            assert (failed.error.code, failed.stage) == ("storage_full", "decode")
            assert str(spool) in failed.error.message
            assert "No space left on device" in failed.error.message
            await service.stop()

        asyncio.run(scenario())
        assert [p.name for p in spool.iterdir()] == (["filler"] if seconds == 1 else [])  # the decode folder is gone


def test_cancel_stops_a_running_job_and_status_only_moves_forward(harness: Harness) -> None:
    async def scenario() -> None:
        service = harness.service()
        await service.start()
        job = await service.create("test", {}, inputs={"file": JobInput("a.txt", b"abc")})
        while "part-2" not in harness.calls:
            await asyncio.sleep(0.01)
        cancelled = await service.cancel(job.id)
        assert cancelled.status == "cancelled"
        assert harness.ended == ["cancelled"]
        assert "third" not in harness.calls
        from modelhost.errors import Conflict

        with pytest.raises(Conflict):
            await service.cancel(job.id)
        assert not service.store.transition(job.id, "running")
        assert not service.store.transition(job.id, "completed")
        assert service.get(job.id).status == "cancelled"
        await service.stop()

    asyncio.run(scenario())


def test_events_come_in_order_until_the_job_ends(harness: Harness) -> None:
    async def scenario() -> None:
        service = harness.service()
        await service.start()
        job = await service.create("test", {}, inputs={"file": JobInput("a.txt", b"abc")})
        events: list[tuple[str, Any]] = []

        async def collect() -> None:
            async for kind, event in service.events(job.id):
                events.append((kind, event))

        collector = asyncio.create_task(collect())
        while "part-2" not in harness.calls:
            await asyncio.sleep(0.01)
        harness.gate.set()
        await asyncio.wait_for(collector, 10)
        statuses = [e.status for k, e in events if k == "status"]
        assert statuses[-1] == "completed"
        assert statuses == sorted(statuses, key=["pending", "running", "completed"].index)
        stages = [e.stage for k, e in events if k == "stage"]
        assert stages == sorted(stages, key=["first", "second", "third"].index)
        assert "third" in stages
        progress = [e.progress for _, e in events]
        assert progress == sorted(progress)
        assert progress[-1] == 1.0
        await service.stop()

    asyncio.run(scenario())


def test_blob_store_round_trip(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    info = store.put("jobs/a/x.bin", b"0123456789")
    assert (info.size, len(info.sha256)) == (10, 64)
    assert store.get("jobs/a/x.bin") == b"0123456789"
    with store.open("jobs/a/x.bin") as stream:
        stream.seek(4)
        assert stream.read(3) == b"456"
    assert store.url("jobs/a/x.bin").startswith("file://")
    store.delete("jobs/a")
    assert not store.exists("jobs/a/x.bin")
    with pytest.raises(KeyError):
        store.get("jobs/a/x.bin")
    for bad in ("../x", "/etc/passwd", "a//b", ""):
        with pytest.raises(ValueError, match="invalid blob key"):
            store.put(bad, b"")


def test_blob_store_read_range(tmp_path: Path) -> None:
    check_read_range(LocalBlobStore(tmp_path), "jobs/r/work/audio.pcm")


def test_range_header_parsing() -> None:
    assert parse_range("bytes=0-3", 10) == (0, 3)
    assert parse_range("bytes=4-", 10) == (4, 9)
    assert parse_range("bytes=-2", 10) == (8, 9)
    assert parse_range("bytes=5-100", 10) == (5, 9)
    assert parse_range("items=1-2", 10) is None
    assert parse_range("bytes=0-1,4-5", 10) is None
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=10-", 10)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=5-2", 10)


def test_jobs_wait_for_a_free_slot_and_a_pending_job_can_be_cancelled(harness: Harness) -> None:
    async def scenario() -> None:
        harness.runtime.update({"jobs_max_concurrency": 1})
        service = harness.service()
        await service.start()
        first = await service.create("test", {}, inputs={"file": JobInput("a.txt", b"abc")})
        second = await service.create("test", {}, inputs={"file": JobInput("b.txt", b"abc")})
        while "part-2" not in harness.calls:
            await asyncio.sleep(0.01)
        assert service.get(first.id).status == "running"
        assert service.get(second.id).status == "pending"  # one slot, taken
        assert (await service.cancel(second.id)).status == "cancelled"
        assert harness.ended == ["cancelled"]  # end hooks ran although no step did
        harness.gate.set()
        await wait_status(service, first.id, ("completed",))
        assert service.page(status="cancelled").total == 1
        assert [j.id for j in service.page(kind="test", limit=1).data] == [second.id]  # newest first
        await service.stop()

    asyncio.run(scenario())


def test_a_quiet_job_sends_keepalives(harness: Harness) -> None:
    async def scenario() -> None:
        service = harness.service()
        await service.start()
        job = await service.create("test", {}, inputs={"file": JobInput("a.txt", b"abc")})
        while "part-2" not in harness.calls:
            await asyncio.sleep(0.01)
        kinds = []
        async for kind, _event in service.store.watch(job.id, poll_seconds=0.02, keepalive_seconds=0.1):
            kinds.append(kind)
            if kinds.count("keepalive") == 2:
                harness.gate.set()
        assert kinds[0] == "status"
        assert kinds.count("keepalive") >= 2
        assert kinds[-1] == "status"  # completed
        await service.stop()

    asyncio.run(scenario())
