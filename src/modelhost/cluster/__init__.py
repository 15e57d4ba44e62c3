"""Scale-out (DESIGN §9): Celery on Redis between one front (``modelhost serve``) and ``modelhost node`` processes.

* ``celery`` — the Celery app (broker and result backend: ``MODELHOST_BROKER_URL``), queue names, task names.
* ``registry`` — node heartbeats and queue depths in Redis (``/api/health`` ``"nodes"``, ``modelhost cluster
  status``).
* ``router`` — ``ClusterRouter``: the coordinator interface (``infer``/``infer_stream``) that runs a model on the
  local coordinator when this process serves it, and otherwise on a node (Celery request/reply; streamed chunks
  over a Redis list; request files by key in the blob store).
* ``executor`` — ``CeleryExecutor``: the jobs engine's executor when a broker is set; each step of a job is one
  Celery task (queue ``jobs``) run by ``steps.StepRunner`` on a node; job state lives only in the database; its
  reconciler queues again what Redis lost.
* ``fanout`` — ``ctx.gather`` under the Celery executor: a chord of item tasks that replay the step up to it.
* ``node`` — the ``modelhost node`` process: a Celery worker (thread pool) around one coordinator.

Queues: ``jobs`` (job steps), ``cpu``/``gpu`` (inference on a model of that device class), ``model.<id>``
(inference on one model; a node consumes it for each model it preloads).
"""
