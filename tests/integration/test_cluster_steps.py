"""``StepRunner`` (what a node runs for each job step) over a real database and real Redis: one step per task, a
recorded step's copy is dropped after requeueing what follows, a held lease defers a copy instead of running it
twice (or dropping the job's only task), cancellation reaches a running step; a ``ctx.gather`` becomes chord items
(each run once, recorded, retried when transient, failing the job when not) and the step's replay completes; the
front's reconciler queues only jobs with neither a task nor a lease in Redis."""

from __future__ import annotations

import asyncio
import json
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


def step_runner(tmp_path: Path, redis_url: str, pipeline: Pipeline, ended: list[str]) -> tuple[JobStore, StepRunner]:
    """A ``StepRunner`` of ``pipeline`` over a fresh SQLite database (retries without backoff); ``ended`` collects the
    statuses its end hook sees."""
    engine = build_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    sessions = build_sessionmaker(engine)
    runtime = RuntimeSettingsStore(sessions)
    runtime.update({"jobs_retry_backoff_seconds": 0.0})

    @pipeline.on_end
    async def on_end(ctx: StepContext, status: str, error: dict[str, Any] | None) -> None:  # noqa: ARG001
        ended.append(status)

    store = JobStore(sessions)
    deps = JobDeps(
        Settings(data_dir=tmp_path),
        runtime,
        cast(Any, None),
        cast(Any, None),
        LocalBlobStore(tmp_path / "blobs"),
        sessions,
        cast(Any, None),
    )
    return store, StepRunner(store, PipelineRegistry([pipeline]), deps, redis_url)


class Setup:
    def __init__(self, tmp_path: Path, redis_url: str) -> None:
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

        self.ended: list[str] = []
        self.store, self.runner = step_runner(tmp_path, redis_url, pipeline, self.ended)

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
        # A copy of the recorded first step while somebody holds the lease: the task that ran the first step went
        # on to the second itself (a chained task) and may have died in it, holding the lease until it expires —
        # the copy may be the job's only task, so it waits instead of being dropped.
        await setup.runner.redis.set(LEASE_PREFIX + job_id, "a-node-in-the-second-step", ex=5)
        assert await setup.runner.run(job_id, 0) == Outcome(retry_index=0)
        await setup.runner.redis.delete(LEASE_PREFIX + job_id)
        assert await setup.runner.run(job_id, 0) == Outcome(next_index=1)
        assert setup.calls == ["first"]
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


class FanOutSetup:
    """A one-step pipeline whose step gathers three calls (the second fails transiently once)."""

    def __init__(self, tmp_path: Path, redis_url: str, fail_permanently: bool = False) -> None:
        from modelhost.jobs.pipeline import TransientError

        self.before: list[str] = []
        self.calls: list[int] = []
        self.ended: list[str] = []
        pipeline = Pipeline("fan")

        @pipeline.step("speak")
        async def speak(ctx: StepContext) -> dict[str, Any]:
            self.before.append("speak")  # the code before the gather: replayed by every item

            async def one(i: int) -> dict[str, int]:
                self.calls.append(i)
                if i == 1 and self.calls.count(1) == 1:
                    raise TransientError("a worker crashed")
                if i == 2 and fail_permanently:
                    raise ValueError("bad slide")
                return {"slide": i, "seconds": i * 10}

            timings = await ctx.gather(*(one(i) for i in range(3)))
            return {"slides": timings}

        self.store, self.runner = step_runner(tmp_path, redis_url, pipeline, self.ended)

    def create(self) -> str:
        return self.store.create("fan", {"inputs": {}}, None).id


def test_a_gather_becomes_chord_items_and_the_replayed_step_completes(tmp_path: Path) -> None:
    setup = FanOutSetup(tmp_path, redis_url_or_skip())

    async def scenario() -> None:
        job_id = setup.create()
        assert await setup.runner.run(job_id, -1) == Outcome(fan_out=(0, 0, [0, 1, 2]))
        assert setup.calls == []  # nothing ran in the step's task: the coroutines were closed
        for done, item in enumerate((2, 0, 1), start=1):
            assert await setup.runner.run_item(job_id, 0, 0, item) == Outcome(done=True)
            # each item reports the share of the gather recorded so far (the pipeline's only step)
            assert setup.store.get_or_raise(job_id).progress == pytest.approx(done / 3, abs=0.01)
        assert setup.calls == [2, 0, 1, 1]  # item 1 failed transiently once and was retried
        assert await setup.runner.run_item(job_id, 0, 0, 1) == Outcome(done=True)  # a redelivered item
        assert setup.calls == [2, 0, 1, 1]
        outputs = setup.store.step_outputs(job_id)
        assert outputs["speak/~fan-0/2"] == {"slide": 2, "seconds": 20}
        # the chord's callback: the step replays, finds every item recorded, completes with results in order
        assert await setup.runner.run(job_id, 0) == Outcome(done=True)
        job = setup.store.get_or_raise(job_id)
        assert job.status == "completed"
        assert job.result == {"slides": [{"slide": i, "seconds": i * 10} for i in range(3)]}
        assert setup.calls == [2, 0, 1, 1]
        assert setup.ended == ["completed"]
        assert not [k async for k in setup.runner.redis.scan_iter(match=LEASE_PREFIX + job_id + "*")]
        await setup.runner.close()

    asyncio.run(scenario())


def test_a_held_item_lease_defers_the_copy_and_a_permanent_failure_fails_the_job(tmp_path: Path) -> None:
    from modelhost.cluster.steps import lease_key

    setup = FanOutSetup(tmp_path, redis_url_or_skip(), fail_permanently=True)

    async def scenario() -> None:
        job_id = setup.create()
        await setup.runner.run(job_id, -1)
        key = lease_key(job_id, "speak/~fan-0/0")
        await setup.runner.redis.set(key, "another-node", ex=5)
        assert await setup.runner.run_item(job_id, 0, 0, 0) == Outcome(retry_index=0)
        assert setup.calls == []
        await setup.runner.redis.delete(key)
        assert await setup.runner.run_item(job_id, 0, 0, 2) == Outcome(done=True)
        job = setup.store.get_or_raise(job_id)
        assert job.status == "failed"
        assert job.error is not None
        assert "bad slide" in job.error.message
        assert setup.ended == ["failed"]
        # the other items and the callback find the job failed and do nothing
        assert await setup.runner.run_item(job_id, 0, 0, 0) == Outcome(done=True)
        assert await setup.runner.run(job_id, 0) == Outcome(done=True)
        assert setup.calls == [2]
        await setup.runner.close()

    asyncio.run(scenario())


def test_the_reconciler_queues_only_jobs_without_a_task_or_a_lease(tmp_path: Path) -> None:
    import redis.asyncio

    from modelhost.cluster.executor import CeleryExecutor

    url = redis_url_or_skip()
    setup = Setup(tmp_path, url)
    sent: list[str] = []

    class Recording(CeleryExecutor):
        async def submit(self, job_id: str) -> None:
            sent.append(job_id)

    async def scenario() -> None:
        deps = setup.runner.deps
        deps.settings = Settings(data_dir=tmp_path, broker_url=url)
        executor = Recording(setup.store, setup.runner.registry, deps)
        client = redis.asyncio.Redis.from_url(url)
        leased, queued, unacked, lost = (setup.create() for _ in range(4))
        for job_id in (leased, queued, unacked, lost):
            setup.store.transition(job_id, "running")
        await client.set(LEASE_PREFIX + leased + ":speak/~fan-0/1", "a-node", ex=10)  # an item runs
        message = {"headers": {"task": "modelhost.step", "argsrepr": f"['{queued}', -1]"}}
        await client.lpush("jobs", json.dumps(message))
        await client.hset("unacked", "tag", json.dumps([{"headers": {"argsrepr": f"['{unacked}', 0, 0, 2]"}}]))
        assert await executor.reconcile(client) == [lost]
        assert sent == [lost]
        await client.flushdb()
        await client.aclose()
        await setup.runner.close()

    asyncio.run(scenario())
