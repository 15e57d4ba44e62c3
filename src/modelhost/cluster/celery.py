"""The Celery app shared by the front and the nodes; queue and task names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from modelhost.catalog.schemas import ModelEntry
    from modelhost.config import Settings

JOBS_QUEUE = "jobs"
STEP_TASK = "modelhost.step"
STEP_ITEM_TASK = "modelhost.step_item"
INFER_TASK = "modelhost.infer"
INFER_STREAM_TASK = "modelhost.infer_stream"


def device_queue(model: ModelEntry) -> str:
    """``gpu`` for a model on a CUDA device, else ``cpu``: the device class that routes its inference."""
    return "gpu" if str(model.device).startswith("cuda") else "cpu"


def model_queue(model_id: str) -> str:
    return f"model.{model_id}"


def build_celery(settings: Settings) -> Celery:
    """Celery on ``settings.broker_url`` (Redis: broker and request/reply result backend)."""
    from celery import Celery

    if not settings.broker_url:
        raise ValueError("MODELHOST_BROKER_URL is not set")
    app = Celery("modelhost", broker=settings.broker_url, backend=settings.broker_url)
    conf: dict[str, Any] = {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # A node acknowledges a task only when it finished: a node killed mid-task leaves it unacknowledged and
        # Redis hands it to another node after the visibility timeout (default one hour in Celery: far too long).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            # kombu scans for such tasks every interval × throttle seconds (10 × 10 by default): scan every few
            # seconds instead, so a killed node's task comes back soon after its visibility timeout.
            "unacked_restore_interval": max(1.0, min(10.0, settings.broker_visibility_timeout_seconds / 3)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
        },
        "result_backend_transport_options": {"socket_connect_timeout": 5},
        "result_expires": 600,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": JOBS_QUEUE,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "broker_heartbeat": 0,
    }
    app.conf.update(conf)
    return app


def send(app: Celery, task: str, args: list[Any], queue: str) -> None:
    """Queue ``task(*args)`` on ``queue`` (no result kept). Celery publishes a message for a direct queue through
    the anonymous exchange, straight onto the queue's Redis list, so sending needs no routing table in Redis and works
    right after a FLUSHALL."""
    app.send_task(task, args=args, queue=queue, ignore_result=True)


def send_chord(app: Celery, job_id: str, index: int, ordinal: int, missing: list[int]) -> None:
    """The missing items of a step's gather (``modelhost.cluster.fanout``) as a chord on the ``jobs`` queue; its
    callback is the step again (``modelhost.step(job, index)``, immutable: it ignores the members' results), which
    replays the step past the gather. A chord Redis lost (FLUSHALL) is found by the front's reconciler
    (``executor.CeleryExecutor``)."""
    from celery import chord, group

    header = group(app.signature(STEP_ITEM_TASK, args=[job_id, index, ordinal, i], queue=JOBS_QUEUE) for i in missing)
    callback = app.signature(STEP_TASK, args=[job_id, index], queue=JOBS_QUEUE, immutable=True)
    chord(header)(callback)
