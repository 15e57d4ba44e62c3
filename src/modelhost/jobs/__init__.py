"""Durable jobs: pipelines of named, idempotent steps, run by an executor, resumed after a restart.

This docstring is the contract pipelines are written against (docs/jobs.md shows it from the client's side).
It only grows: names below keep their meaning.

Declaring a pipeline (``modelhost/jobs/meeting.py`` is a full example)::

    from modelhost.jobs.pipeline import Pipeline, StepContext
    from modelhost.jobs import inference

    PIPELINE = Pipeline("presentation-video", description="…")

    @PIPELINE.step("notes", weight=1)          # steps run in declaration order
    async def notes(ctx: StepContext) -> dict:  # returns JSON: recorded as the step's output
        deck = await ctx.read_input("file")     # inputs given at creation
        return {"slides": [...]}

    @PIPELINE.step("narrate", weight=5)
    async def narrate(ctx: StepContext) -> dict:
        slides = ctx.outputs["notes"]["slides"]  # outputs of earlier steps (also after a restart)
        async def one(i): return await ctx.once(f"slide-{i}", lambda: synthesize(ctx, i))  # recorded sub-step
        return {"audio": await ctx.gather(*(one(i) for i in range(len(slides))), limit=2)}

    @PIPELINE.step("render")
    async def render(ctx: StepContext) -> dict:
        await ctx.put_artifact("video.mp4", path_or_bytes, "video/mp4")
        return {"slides": 3}                    # the LAST step's output is the job's ``result``

    @PIPELINE.on_end                             # optional: once, when the job completes, fails or is cancelled
    async def ended(ctx: StepContext, status: str, error: dict | None) -> None: ...

Registering a kind: add it to ``modelhost.jobs.builtin.builtin_pipelines()`` (one import, one list entry).

Rules for steps:
  * Idempotent: a step runs again from its start when the server died during it (``kill -9``); finished steps
    are skipped (their recorded output is in ``ctx.outputs``), and so are finished ``ctx.once(name, fn)`` parts.
  * Outputs (step return values, ``once`` results) are JSON; put bytes in blobs, not in outputs.
  * A step raising a ``modelhost.errors.ModelhostError`` fails the job with that error's envelope fields
    (``InvalidRequest`` etc.: the job's ``error``); any other exception fails it as ``server_error``.
    ``WorkerCrashed``, ``ModelUnavailable``, ``QueueFull`` and ``jobs.pipeline.TransientError`` are retried
    (the whole step, backoff ``jobs_retry_backoff_seconds`` doubling, up to ``jobs_max_attempts`` tries).
  * Inference goes through ``modelhost.jobs.inference`` only (``transcribe``, ``diarize``, ``embed_speaker``;
    add a function there for a new task), so coordinator changes touch one module.

``StepContext`` (``modelhost.jobs.pipeline``):
  ``job_id``, ``kind``, ``params`` (the JSON given at creation, plus ``params["inputs"]`` describing inputs),
  ``step`` (name of the running step), ``outputs`` (recorded outputs by step name),
  ``deps`` (``JobDeps``: ``settings``, ``runtime`` (``.current`` runtime settings), ``catalog``, ``coordinator``,
  ``blobs``, ``sessions``, ``speakers``, ``extras``), shortcuts ``coordinator``, ``catalog``, ``blobs``;
  ``await progress(fraction)`` (0..1 within the step; the job's progress follows the step weights; also checks
  cancellation), ``check_cancelled()`` / ``cancelled``, ``await once(name, fn)``, ``await gather(*coros, limit=)``;
  files: ``read_input(name)``, ``input_path(name)`` (async context manager → local path), ``input_info(name)``,
  ``put_work(name, data)`` / ``read_work(name)`` / ``work_path(name)`` / ``work_key(name)`` (intermediate blobs,
  deleted when the job ends), ``put_artifact(name, data, media_type)`` (bytes, a local ``Path`` or a binary
  stream; downloadable at ``/v1/jobs/{id}/artifacts/{name}``; removed again if the job fails or is cancelled;
  each version under a blob key of its own), ``artifact_keys()`` (name → the blob key of its current version).

Blob store (``modelhost.storage.blobs.BlobStore``): ``put/get/open/size/exists/delete/url/local_path`` by key;
nothing else touches blob paths.

Creating a job from a route (``modelhost/api/routes/meetings.py``)::

    @router.post("/v1/jobs/presentation-video", status_code=202, response_model=JobView)
    async def create(jobs: JobsDep, file: Annotated[UploadFile, File()], voice: Annotated[str | None, Form()] = None):
        job = await jobs.create("presentation-video", {"voice": voice}, inputs={"file": upload_input(file, "file")})
        return job_accepted(job)          # 202, the job, Location: /v1/jobs/{id}

``JobService`` (``modelhost.jobs.service``): ``create(kind, params, inputs={name: JobInput}) → JobView``, ``get``,
``list``, ``cancel``, ``delete``, ``events``. Executors implement ``modelhost.jobs.executor.Executor``
(``start/submit/cancel/stop``); ``LocalExecutor`` runs jobs as asyncio tasks in the serve process, at most
``jobs_max_concurrency`` at once, and restarts pending and running jobs when the server starts. With
``MODELHOST_BROKER_URL``, ``modelhost.cluster.executor.CeleryExecutor`` runs each step as a Celery task on a
``modelhost node`` (``modelhost.cluster.steps.StepRunner``): same pipelines, so steps must stay idempotent and their
files must go through the blob store (another machine may run the next step). There ``gather`` is a Celery chord
(``modelhost.cluster.fanout``): each call runs on whichever node takes it, after replaying the step up to the
``gather``, so the code before a ``gather`` must be deterministic and cheap and the gathered results JSON.
"""
