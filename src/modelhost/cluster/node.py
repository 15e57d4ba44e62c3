"""``modelhost node``: a Celery worker (thread pool) around one coordinator and its worker processes.

Admission (GPU lock, memory budget) stays per machine because each node has its own coordinator. The node consumes
the queues it is given (``jobs``, ``cpu``, ``gpu``…) plus ``model.<id>`` for each model it preloads; it writes a
heartbeat (queues, models, workers) to Redis every ``MODELHOST_NODE_HEARTBEAT_SECONDS``. The coordinator and the
job steps run on one asyncio loop in a background thread; Celery's threads hand them coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from modelhost.cluster.celery import (
    INFER_STREAM_TASK,
    INFER_TASK,
    JOBS_QUEUE,
    STEP_ITEM_TASK,
    STEP_TASK,
    build_celery,
    model_queue,
    send,
    send_chord,
)
from modelhost.cluster.router import REPLY_TTL_SECONDS, ClusterRouter, decode_files, pack_message
from modelhost.cluster.steps import LEASE_SECONDS, StepRunner
from modelhost.errors import ModelhostError, NotFound
from modelhost.storage.files import use_process_temp_dir

if TYPE_CHECKING:
    from celery import Celery

    from modelhost.api.composition import Services
    from modelhost.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a node keeps trying to deliver a reply while Redis is away.
PUSH_PATIENCE_SECONDS = 15.0
#: Queues a node consumes when ``--queues`` is not given.
DEFAULT_QUEUES = ("jobs", "cpu")
#: A step task goes straight on to its job's next step (no trip through the queue) while it has run for less than
#: this: a short job runs its steps in one task, one Celery hop each saved (~7 ms here); a long one hands over to
#: the queue between steps, so other jobs get their turn and a warm shutdown waits for one step, not a whole job.
CHAIN_SECONDS = 10.0


class Node:
    def __init__(
        self, settings: Settings, queues: list[str], preload: list[str], name: str | None, concurrency: int
    ) -> None:
        if not settings.broker_url:
            raise ValueError("modelhost node needs MODELHOST_BROKER_URL (redis://host:6379/0)")
        self.settings = settings
        self.preload = preload
        self.queues = list(dict.fromkeys([*queues, *(model_queue(m) for m in preload)]))
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.concurrency = concurrency
        self.started = time.time()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="node-loop", daemon=True)
        self._services: Services | None = None
        self._runner: StepRunner | None = None
        self._router: ClusterRouter | None = None
        self._heartbeat: Future[None] | None = None
        self._restore_temp_dir: Callable[[], None] = lambda: None
        #: Set when the Celery worker begins a warm shutdown: a running step task then queues its job's next step.
        self.draining = threading.Event()

    # -- plumbing --------------------------------------------------------------------------------------------
    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the node's loop and wait for it (from a Celery thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    @property
    def services(self) -> Services:
        assert self._services is not None
        return self._services

    @property
    def router(self) -> ClusterRouter:
        assert self._router is not None
        return self._router

    @property
    def runner(self) -> StepRunner:
        assert self._runner is not None
        return self._runner

    def chains(self, started: float) -> bool:
        """Whether a step task that started at ``started`` (monotonic) runs its job's next step itself."""
        return not self.draining.is_set() and time.monotonic() - started < CHAIN_SECONDS

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        from modelhost.api.composition import build_services
        from modelhost.metrics import Metrics

        self._thread.start()
        self._services = build_services(self.settings, Metrics())
        router = self.services.coordinator
        assert isinstance(router, ClusterRouter)
        router.local_queues = set(self.queues)
        self._router = router
        self.call(router.start())
        self._restore_temp_dir = use_process_temp_dir(self.settings.data_dir)  # after the worker sockets' folder
        jobs = self.services.jobs
        assert self.settings.broker_url
        self._runner = StepRunner(jobs.store, jobs.registry, jobs.deps, self.settings.broker_url)
        for model_id in self.preload:
            self.call(self._preload(model_id))
        self._heartbeat = asyncio.run_coroutine_threadsafe(self._beat_forever(), self.loop)
        log.info("node %s ready: queues %s, preloaded %s", self.name, ",".join(self.queues), self.preload or "none")

    async def _preload(self, model_id: str) -> None:
        entry = self.services.catalog.get_or_raise(model_id)
        local = self.router.local
        started = time.monotonic()
        await local.warm_up(entry)  # the worker starts now, under the same admission as a load
        log.info("preloaded %s in %.1f s", model_id, time.monotonic() - started)

    def info(self) -> dict[str, Any]:
        workers = self.router.local.workers()
        return {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": self.queues,
            "preload": self.preload,
            "models": sorted({str(w.get("model")) for w in workers} | set(self.preload)),
            "workers": workers,
            "started": self.started,
        }

    async def _beat_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.router.registry.beat, self.info())
            except Exception as exc:
                log.warning("heartbeat to Redis failed: %s", exc)
            await asyncio.sleep(self.settings.node_heartbeat_seconds)

    def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        with contextlib.suppress(Exception):
            self.router.registry.forget(self.name)
        if self._runner is not None:
            self.call(self._runner.close())
        if self._services is not None:
            self.call(self.router.stop())
            self.services.speakers.index.close()
            self.services.engine.dispose()
        self._restore_temp_dir()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    # -- inference for other processes -----------------------------------------------------------------------
    def _entry(self, model_id: str) -> Any:
        try:
            return self.services.catalog.get_or_raise(model_id)
        except NotFound:
            self.services.catalog.load()  # added on the front since this node read the catalog
            return self.services.catalog.get_or_raise(model_id)

    async def _push(self, reply: str, message: dict[str, Any]) -> None:
        """Append to the caller's reply list, riding out a Redis restart of up to ~15 s."""
        import redis

        body = json.dumps(pack_message(message))
        delay = 0.2
        deadline = time.monotonic() + PUSH_PATIENCE_SECONDS
        while True:
            try:
                async with self.runner.redis.pipeline(transaction=True) as pipe:
                    pipe.rpush(reply, body)
                    pipe.expire(reply, REPLY_TTL_SECONDS)
                    await pipe.execute()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def infer(self, model_id: str, payload: dict[str, Any], files: dict[str, Any], reply: str) -> None:
        try:
            entry = self._entry(model_id)
            received = await asyncio.to_thread(decode_files, files, self.services.jobs.deps.blobs)
            result = await self.router.local.infer(entry, payload, received)
            await self._push(reply, {"result": result})
        except ModelhostError as exc:
            await self._push(reply, {"status": exc.status_code, **exc.envelope()})
        except Exception as exc:
            log.exception("inference for %s failed", model_id)
            await self._push(reply, {"status": 500, "error": {"message": f"node error: {exc}", "type": "server_error"}})

    async def infer_stream(self, model_id: str, payload: dict[str, Any], files: dict[str, Any], reply: str) -> None:
        redis = self.runner.redis
        try:
            entry = self._entry(model_id)
            received = await asyncio.to_thread(decode_files, files, self.services.jobs.deps.blobs)
            stream = self.router.local.infer_stream(entry, payload, received)
            checked = time.monotonic()
            try:
                async for chunk in stream:
                    await self._push(reply, {"chunk": chunk})
                    if time.monotonic() - checked > 0.25:
                        checked = time.monotonic()
                        if await redis.exists(reply + ":cancel"):
                            log.info("stream for %s cancelled by its client", model_id)
                            return
            finally:
                await stream.aclose()  # type: ignore[attr-defined]  # an async generator
            await self._push(reply, {"done": True})
        except ModelhostError as exc:
            await self._push(reply, {"status": exc.status_code, **exc.envelope()})
        except Exception as exc:
            log.exception("streamed inference for %s failed", model_id)
            await self._push(reply, {"status": 500, "error": {"message": f"node error: {exc}", "type": "server_error"}})


def register_tasks(app: Celery, node: Node) -> None:
    import kombu.exceptions
    import redis
    import sqlalchemy.exc

    from modelhost.cluster.router import BrokerUnavailable
    from modelhost.storage.s3 import StorageUnavailable

    infrastructure = (
        sqlalchemy.exc.OperationalError,
        redis.RedisError,
        kombu.exceptions.OperationalError,
        StorageUnavailable,
        BrokerUnavailable,
    )

    @app.task(  # type: ignore[untyped-decorator]  # celery is untyped
        name=STEP_TASK,
        bind=True,
        acks_late=True,
        autoretry_for=infrastructure,
        retry_backoff=2,
        retry_backoff_max=60,
        retry_jitter=True,
        max_retries=100,
    )
    def step(self: Any, job_id: str, index: int) -> None:
        started = time.monotonic()
        outcome = node.call(node.runner.run(job_id, index))
        while outcome.next_index is not None and node.chains(started):
            # Each step is still recorded on its own, so a redelivered copy of this task (the node died in a later
            # step) finds the steps before recorded and goes on from the first one that is not.
            outcome = node.call(node.runner.run(job_id, outcome.next_index))
        if outcome.fan_out is not None:
            send_chord(app, job_id, *outcome.fan_out)
        elif outcome.next_index is not None:
            send(app, STEP_TASK, [job_id, outcome.next_index], JOBS_QUEUE)
        elif outcome.retry_index is not None:
            # Another node holds the job's lease (runs this step now, or died less than LEASE_SECONDS ago).
            raise self.retry(args=[job_id, outcome.retry_index], countdown=LEASE_SECONDS / 3, max_retries=None)

    @app.task(  # type: ignore[untyped-decorator]  # celery is untyped
        name=STEP_ITEM_TASK,
        bind=True,
        acks_late=True,
        autoretry_for=infrastructure,
        retry_backoff=2,
        retry_backoff_max=60,
        retry_jitter=True,
        max_retries=100,
    )
    def step_item(self: Any, job_id: str, index: int, ordinal: int, item: int) -> None:
        """A chord member: its return value is nothing; the chord's callback reads the recorded items."""
        outcome = node.call(node.runner.run_item(job_id, index, ordinal, item))
        if outcome.retry_index is not None:  # another node runs this item now (or died less than a lease ago)
            raise self.retry(countdown=LEASE_SECONDS / 3, max_retries=None)

    @app.task(name=INFER_TASK, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]  # untyped
    def infer(model_id: str, payload: dict[str, Any], files: dict[str, Any], reply: str) -> None:
        node.call(node.infer(model_id, payload, files, reply))

    @app.task(name=INFER_STREAM_TASK, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]  # untyped
    def infer_stream(model_id: str, payload: dict[str, Any], files: dict[str, Any], reply: str) -> None:
        node.call(node.infer_stream(model_id, payload, files, reply))


def _survive_broker_restarts() -> None:
    """Keep the node alive when Redis goes away and comes back (kombu 5.7 / celery 5.7 otherwise stop the worker
    with an "unrecoverable" ``AttributeError``, measured in the Redis-restart test):

    * closing the lost channel tries to hand the tasks it holds back through the connection just dropped: skip that;
      they stay in Redis's unacknowledged set and the periodic sweep hands them out after the visibility timeout;
    * acknowledging a task that finished after the reconnection goes through the old, closed channel: log it and
      leave the task unacknowledged; its redelivery is harmless (a recorded step is skipped, a reply nobody waits
      for expires).
    """
    from kombu.transport import redis as kombu_redis

    qos: Any = kombu_redis.QoS
    qos.restore_at_shutdown = False
    original_ack = qos.ack

    def ack(self: Any, delivery_tag: Any) -> None:
        try:
            original_ack(self, delivery_tag)
        except AttributeError:
            log.warning("task %s finished over a dropped broker connection; Redis will redeliver it", delivery_tag)

    qos.ack = ack


def run_node(settings: Settings, queues: list[str], preload: list[str], name: str | None, concurrency: int) -> None:
    """Start the node and run its Celery worker until it is stopped (SIGTERM/SIGINT: warm shutdown)."""
    _survive_broker_restarts()
    from celery.signals import worker_shutting_down

    node = Node(settings, queues, preload, name, concurrency)
    node.start()
    app = build_celery(settings)
    register_tasks(app, node)
    worker_shutting_down.connect(lambda **_: node.draining.set(), weak=False)
    try:
        app.worker_main(
            argv=[
                "worker",
                "--pool=threads",
                f"--concurrency={concurrency}",
                f"--queues={','.join(node.queues)}",
                f"--hostname={node.name}@%h",
                f"--loglevel={settings.log_level.upper()}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
        )
    finally:
        node.stop()
