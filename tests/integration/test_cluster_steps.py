"""``StepRunner`` (what a node runs for each job step) over a real database and real Redis: one step per task, a
recorded step's copy is dropped after requeueing what follows, a held lease defers a copy instead of running it
twice, cancellation reaches a running step."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from modelhost.cluster.steps import LEASE_PREFIX, Outcome, StepRunner
from modelhost.config import Settings
from modelhost.jobs.pipeline import JobDeps, Pipeline, PipelineRegistry, StepContext
from modelhost.jobs.store import JobStore
from modelhost.runtime_settings import RuntimeSettingsStore
from modelhost.storage.blobs import LocalBlobStore
from modelhost.storage.db import build_engine, build_sessionmaker, migrate
from tests.support.cluster import redis_url_or_skip


class Setup:
    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        engine = build_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        migrate(engine)
        sessions = build_sessionmaker(engine)
        runtime = RuntimeSettingsStore(sessions)
        runtime.update({"jobs_retry_backoff_seconds": 0.0})
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        pipeline = Pipeline("two")

        @pipeline.step("first")
        async def first(ctx: StepContext) -> dict[str, Any]:  # noqa: ARG001 - the step signature
            self.calls.append("first")
            return {"n": 1}

        @pipeline.step("second")
        async def second(ctx: StepContext) -> dict[str, Any]:
            self.calls.append("second")
            while not self.gate.is_set():
                ctx.check_cancelled()
                await asyncio.sleep(0.05)
            return {"n": ctx.outputs["first"]["n"] + 1}

        @pipeline.on_end
        async def ended(ctx: StepContext, status: str, error: dict[str, Any] | None) -> None:  # noqa: ARG001
            self.ended.append(status)

        self.ended: list[str] = []
        self.store = JobStore(sessions)
        deps = JobDeps(
            Settings(data_dir=tmp_path),
            runtime,
            cast(Any, None),
            cast(Any, None),
            LocalBlobStore(tmp_path / "blobs"),
            sessions,
            cast(Any, None),
        )
        self.runner = StepRunner(self.store, PipelineRegistry([pipeline]), deps, redis_url)

    def create(self) -> str:
        return self.store.create("two", {"inputs": {}}, None).id


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path, redis_url_or_skip())


def test_one_step_per_task_and_copies_of_recorded_steps_are_dropped(setup: Setup) -> None:
    async def scenario() -> None:
        job_id = setup.create()
        assert await setup.runner.run(job_id, -1) == Outcome(next_index=1)
        assert setup.calls == ["first"]
        # a redelivered copy of the recorded first step: nobody holds the lease, so it requeues the next step
        assert await setup.runner.run(job_id, 0) == Outcome(next_index=1)
        setup.gate.set()
        assert await setup.runner.run(job_id, 1) == Outcome(done=True)
        job = setup.store.get_or_raise(job_id)
        assert job.status == "completed"
        assert job.result == {"n": 2}
        assert await setup.runner.run(job_id, 1) == Outcome(done=True)  # the job ended: a late copy does nothing
        assert setup.calls == ["first", "second"]
        assert setup.ended == ["completed"]
        await setup.runner.close()

    asyncio.run(scenario())


def test_a_held_lease_defers_the_copy(setup: Setup) -> None:
    async def scenario() -> None:
        job_id = setup.create()
        await setup.runner.redis.set(LEASE_PREFIX + job_id, "another-node", ex=5)
        assert await setup.runner.run(job_id, -1) == Outcome(retry_index=0)
        assert setup.calls == []
        await setup.runner.redis.delete(LEASE_PREFIX + job_id)
        assert await setup.runner.run(job_id, 0) == Outcome(next_index=1)
        assert not await setup.runner.redis.exists(LEASE_PREFIX + job_id)  # released after the step
        await setup.runner.close()

    asyncio.run(scenario())


def test_cancellation_reaches_a_running_step(setup: Setup) -> None:
    async def scenario() -> None:
        job_id = setup.create()
        await setup.runner.run(job_id, -1)
        running = asyncio.create_task(setup.runner.run(job_id, 1))
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(setup.store.transition, job_id, "cancelled")
        assert await asyncio.wait_for(running, 5) == Outcome(done=True)
        assert setup.store.get_or_raise(job_id).status == "cancelled"
        assert setup.ended == ["cancelled"]
        assert await setup.runner.run(job_id, -1) == Outcome(done=True)  # the executor's copy: ended already
        assert setup.ended == ["cancelled"]
        await setup.runner.close()

    asyncio.run(scenario())


def test_a_job_cancelled_before_its_first_step_ends_once(setup: Setup) -> None:
    async def scenario() -> None:
        job_id = setup.create()
        assert await asyncio.to_thread(setup.store.transition, job_id, "cancelled")
        assert await setup.runner.run(job_id, -1) == Outcome(done=True)
        assert await setup.runner.run(job_id, -1) == Outcome(done=True)
        assert setup.calls == []
        assert setup.ended == ["cancelled"]
        await setup.runner.close()

    asyncio.run(scenario())
