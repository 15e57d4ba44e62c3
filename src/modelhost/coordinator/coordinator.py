"""The coordinator: routes requests to workers, admits GPU work, and answers every failure the same way.

Routes and pipelines call ``await coordinator.infer(model, payload, files=...)`` or iterate
``coordinator.infer_stream(model, payload, files=...)``; they never see sockets or processes. Process supervision
(spawn, readiness, exit watch, stop, log) lives in ``modelhost.coordinator.supervisor``.

Files: a mapping of field name to a ``Path`` (a file the caller keeps until the call returns), a binary file object
(e.g. an upload's spooled file) or ``bytes``; the last two are written to a private temporary file for the duration
of the call.
The worker receives paths and opens them itself, so an upload is never held whole in the serve process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import IO, Any

import aiohttp

from modelhost.catalog.envs import EnvManager
from modelhost.catalog.registry import backend_reference
from modelhost.catalog.schemas import ModelEntry
from modelhost.config import Settings
from modelhost.coordinator.admission import GpuAdmission, Occupant, Plan, combine, plan_room, worker_ram
from modelhost.coordinator.client import Payload, WorkerClient, WorkerProtocolError, encode_payload
from modelhost.coordinator.footprint import MiB, device_key, gpu_need_bytes, ram_need_bytes
from modelhost.coordinator.handles import READY, STARTING, WorkerHandle
from modelhost.coordinator.sources import check_source
from modelhost.coordinator.supervisor import Supervisor, describe_exit
from modelhost.coordinator.zygote import ForkedProcess
from modelhost.errors import (
    Conflict,
    InferenceTimeout,
    ModelhostError,
    ModelUnavailable,
    QueueFull,
    WorkerCrashed,
    from_worker_error,
    storage_full_in,
)
from modelhost.metrics import GaugeSeries, HistogramSeries, Metrics
from modelhost.runtime_settings import RuntimeSettingsStore
from modelhost.storage.files import private_dir, process_dir, remove_process_dir
from modelhost.worker.protocol import EXIT_IDLE, OUT_OF_MEMORY, WorkerSpec, read_memory_status

log = logging.getLogger(__name__)

#: What ``infer``/``infer_stream`` accept as files: a path the caller owns, or a binary file object or bytes to spool.
FileRef = Path | IO[bytes] | bytes
Files = Mapping[str, FileRef]
#: A streamed partial result: a JSON object (text generation) or bytes (an audio chunk).
Chunk = dict[str, Any] | bytes

_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, WorkerProtocolError, TimeoutError)
#: How often the memory watchdog compares the live RSS of workers and zygotes with the RAM budget.
WATCHDOG_INTERVAL = 2.0


class _WorkerWentIdle(Exception):
    """The worker exited on its idle timer just as a request reached it: safe to retry on a fresh one."""


class Coordinator:
    def __init__(self, settings: Settings, runtime: RuntimeSettingsStore, envs: EnvManager, metrics: Metrics) -> None:
        self.settings = settings
        self.runtime = runtime
        self.envs = envs
        self.metrics = metrics
        #: model id → its queue-depth and inference-time series
        self._queue_metrics: dict[str, tuple[GaugeSeries, HistogramSeries]] = {}
        self._id_prefix = uuid.uuid4().hex[:12]
        self._request_ids = itertools.count(1)
        self.admission = GpuAdmission(
            metrics, lambda: (self.runtime.current.gpu_fair_grants, self.runtime.current.gpu_fair_seconds)
        )
        self.supervisor = Supervisor(
            metrics,
            settings.logs_dir,
            lambda: sum(h.alive for h in self._handles.values()),
            zygote_idle_timeout=lambda: self.runtime.current.zygote_idle_timeout_seconds,
        )
        self._handles: dict[str, WorkerHandle] = {}
        self._latest: dict[str, ModelEntry] = {}  # the newest catalog entry per changed model
        #: (model id, forked) → the peak RSS of its last worker started that way, measured in this process. A plain
        #: spawn peaks higher than a fork (it imports its libraries itself; a fork maps the zygote's lazily).
        self._peaks: dict[tuple[str, bool], int] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._over_budget_warned = False  # one line per episode over budget with nothing idle to evict
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owns_run_dir = settings.run_dir is None
        self.run_dir = Path(settings.run_dir) if settings.run_dir else Path()
        #: This process's folder for upload copies, under ``<data_dir>/tmp/uploads`` (made at ``start``: see there).
        self.upload_dir = settings.data_dir / "tmp" / "uploads"
        self._started = False
        #: Called with (model id, measured figures in MiB) after each load and before each eviction: the catalog
        #: keeps them (``Catalog.record_memory``). Runs in a thread.
        self.on_measured: Callable[[str, dict[str, int | None]], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._owns_run_dir:
            self.run_dir = Path(tempfile.mkdtemp(prefix="modelhost-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        # A folder of this process's own: several processes may share the data dir, and the folders of those killed
        # with ``kill -9`` (with the uploads they were handling) are removed here.
        uploads = self.settings.data_dir / "tmp" / "uploads"
        private_dir(uploads.parent)
        self.upload_dir = process_dir(uploads)
        self._started = True
        self._watchdog = asyncio.ensure_future(self._watch_memory())
        log.info("coordinator started, worker sockets in %s", self.run_dir)

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        await asyncio.gather(*(self.supervisor.stop(h, "shutdown") for h in list(self._handles.values())))
        self.supervisor.cancel_tasks()
        await self.supervisor.close()
        if self._owns_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._started:
            remove_process_dir(self.upload_dir)
        log.info("coordinator stopped")

    # -- requests --------------------------------------------------------------------------------------------
    async def infer(self, model: ModelEntry, payload: dict[str, Any], files: Files | None = None) -> dict[str, Any]:
        """One result. Binary values in it (an embedding matrix, a voiceprint) are ``bytes``."""
        encoded = encode_payload(payload)  # a payload that cannot be sent is 400 before any worker starts
        handle = self._handle(model)
        with self._queued(handle):
            if not files:  # no async generator for the spool of a request without files (every embedding)
                return await self._infer(handle, encoded, None)
            async with self._spooled(files) as paths:
                return await self._infer(handle, encoded, paths)

    async def _infer(self, handle: WorkerHandle, encoded: Payload, paths: dict[str, Path] | None) -> dict[str, Any]:
        # Plain context managers on this path (no async generators, no task): it is every request's.
        for attempt in (1, 2):
            async with _Admitted(self, handle):
                client = handle.client if _ready(handle) else None
                if client is None:
                    client = await self._ensure_ready(handle)
                try:
                    with _InFlight(self, handle) as timeout:
                        try:  # the client keeps the deadline (TimeoutError): no asyncio.timeout per request
                            status, body = await client.infer(
                                encoded,
                                request_id=self._request_id(),
                                idle_timeout=handle.idle_timeout,
                                files=paths,
                                timeout=timeout,
                            )
                        except _TRANSPORT_ERRORS as exc:
                            raise await self._transport_failure(handle, exc, timeout) from None
                except _WorkerWentIdle:
                    self._retry_or_raise(handle.model, attempt)
                    continue
                handle.requests += 1
                if status != 200:
                    raise worker_error(status, body.get("error"))
                result: dict[str, Any] = body["result"]
                return result
        raise AssertionError("unreachable")

    async def warm_up(self, model: ModelEntry, wait: bool = True) -> dict[str, Any]:
        """Start the model's worker without a request (under the same admission as a load); its status after, or
        at once (``wait=False``: the load goes on in the background and a failure is logged)."""
        handle = self._handle(model)

        async def load() -> None:
            async with self.admission.admit(model, self.runtime.current.gpu_policy):
                await self._ensure_ready(handle)
            handle.last_used = time.monotonic()

        if wait:
            await load()
            return handle.status()

        async def load_logged() -> None:
            try:
                await load()
            except Exception:
                log.exception("warm-up of %s failed", model.id)

        self.supervisor.track(load_logged())
        await asyncio.sleep(0)  # let the spawn begin, so the status says so
        return handle.status()

    async def prestart_zygote(self, model: ModelEntry, keep: bool = True) -> bool:
        """Start the zygote of ``model``'s backend now instead of with its first worker, so that the first worker
        is already a fork (for pinned models, at start-up). ``keep``: the zygote stays while no worker of its backend
        runs, until ``supervisor.zygotes.release(model.id)``. False when the model cannot fork (another Python
        environment, ``zygote: false``, or its backend's zygote failed), or when the zygote does not fit the RAM
        budget beside what runs (``_room_for_zygote``): then it is skipped with one log line, and the model loads by
        its normal path (its admission) when first used. Serialized with loads (``admission.loading``)."""
        spec = self._spec(model, self._idle_timeout(model))
        interpreter = self._interpreter(model)
        zygotes = self.supervisor.zygotes
        if not zygotes.will_start(spec, interpreter):  # cannot fork, or its zygote already runs: nothing to admit
            return await self.supervisor.prestart_zygote(spec, interpreter, keep=keep)
        async with self.admission.loading(f"{model.id} (zygote)"):
            if zygotes.will_start(spec, interpreter) and not await self._room_for_zygote(model, spec.backend):
                if keep:
                    zygotes.keep(spec)  # kept once a load starts it
                return False
            # started (importing), it counts at its expected size in every plan: the next load sees it
            return await self.supervisor.prestart_zygote(spec, interpreter, keep=keep)

    async def infer_stream(
        self, model: ModelEntry, payload: dict[str, Any], files: Files | None = None
    ) -> AsyncIterator[Chunk]:
        """Yield partial results: dicts, or bytes for binary chunks. Ends normally only when the worker said the
        answer is complete; any failure raises a ``ModelhostError``, before or after the first chunk. Closing the
        generator early (client gone) closes the worker connection, which stops generation. The GPU lock (if
        any) is held for the whole stream; ``worker_request_timeout_seconds`` applies to each chunk."""
        encoded = encode_payload(payload)
        handle = self._handle(model)
        with self._queued(handle):
            async with self._spooled(files) as paths:
                for attempt in (1, 2):
                    async with _Admitted(self, handle):
                        client = await self._ensure_ready(handle)
                        yielded = False
                        try:
                            with _InFlight(self, handle) as timeout:
                                stream = client.infer_stream(
                                    encoded,
                                    request_id=self._request_id(),
                                    idle_timeout=handle.idle_timeout,
                                    files=paths,
                                )
                                try:
                                    while True:
                                        try:
                                            async with asyncio.timeout(timeout):  # per chunk: a stream may run long
                                                status, item = await anext(stream)
                                        except StopAsyncIteration:
                                            handle.requests += 1
                                            return
                                        except _TRANSPORT_ERRORS as exc:
                                            raise await self._transport_failure(handle, exc, timeout) from None
                                        if status != 200:
                                            handle.requests += 1
                                            error = item.get("error") if isinstance(item, dict) else None
                                            raise worker_error(status, error)
                                        yielded = True
                                        yield item
                                finally:
                                    await stream.aclose()
                        except _WorkerWentIdle:
                            if yielded:  # cannot replay what the caller already has
                                raise WorkerCrashed(
                                    f"the worker for model {model.id!r} exited during the stream"
                                ) from None
                            self._retry_or_raise(model, attempt)
                            continue
                raise AssertionError("unreachable")

    def _queued(self, handle: WorkerHandle) -> _Queued:
        """Queue admission and metrics, shared by both request paths (a plain context manager)."""
        return _Queued(self, handle)

    def _request_id(self) -> str:
        """A request id unique in this process (the worker logs it): a counter, no ``uuid4`` (a syscall) per call."""
        return f"{self._id_prefix}-{next(self._request_ids):x}"

    @contextlib.asynccontextmanager
    async def _spooled(self, files: Files | None) -> AsyncIterator[dict[str, Path]]:
        """Paths for ``files``: a ``Path`` as given; a file object or bytes written (in a thread) to a private
        temporary file under ``<data_dir>/tmp/uploads`` (0700), deleted when the call ends. No room left there (a
        full disk, a used-up quota) → ``StorageFull`` (507), the partial copy deleted."""
        paths: dict[str, Path] = {}
        created: list[Path] = []
        try:
            for name, ref in (files or {}).items():
                if isinstance(ref, Path):
                    paths[name] = ref.resolve()
                    continue
                with storage_full_in(self.upload_dir, f"the uploaded {name!r}"):
                    fd, raw = tempfile.mkstemp(prefix="upload-", dir=self.upload_dir)
                    target = Path(raw)
                    created.append(target)
                    await asyncio.to_thread(_copy_into, ref, fd)
                paths[name] = target
            yield paths
        finally:
            for target in created:
                with contextlib.suppress(OSError):
                    target.unlink()

    async def _transport_failure(self, handle: WorkerHandle, exc: BaseException, timeout: float) -> Exception:
        """The one translation of a failed worker call (no answer in time, connection broken, answer cut off)
        into what the caller sees, for both request paths."""
        model_id = handle.model.id
        if isinstance(exc, TimeoutError):
            await self.supervisor.stop(handle, "timeout", grace=0)
            return InferenceTimeout(
                f"model {model_id!r} did not answer within {timeout:g} s (worker_request_timeout_seconds); "
                "its worker was stopped"
            )
        code = await self.supervisor.exit_code_after_failure(handle)
        if handle.stop_reason == "timeout":
            return InferenceTimeout(f"model {model_id!r}: its worker was stopped after the request timeout")
        if (code == EXIT_IDLE and handle.stop_reason is None) or handle.stop_reason in (
            "evicted",
            "over_budget",
            "changed",
        ):
            return _WorkerWentIdle()  # a fresh worker can take it
        if handle.stop_reason in ("stopped", "shutdown"):
            return ModelUnavailable(
                f"the worker for model {model_id!r} was stopped during the request "
                "(stop requested, model changed or removed, or server shutting down)",
                code="worker_stopped",
                retry_after=1,
            )
        log.warning(
            "worker for %s failed during a request (%s: %s; %s); log %s",
            model_id,
            type(exc).__name__,
            exc,
            describe_exit(code),
            handle.log_path,
        )
        return WorkerCrashed(
            f"the worker for model {model_id!r} failed during the request ({describe_exit(code)}); "
            "the next request starts a fresh worker"
        )

    @staticmethod
    def _retry_or_raise(model: ModelEntry, attempt: int) -> None:
        if attempt == 2:
            raise WorkerCrashed(f"the worker for model {model.id!r} exited twice in a row")
        log.info("worker for %s went idle under a request; retrying on a fresh worker", model.id)

    def _idle_timeout(self, model: ModelEntry) -> float:
        """The model's override, else the runtime setting: read per request so a change reaches running workers."""
        if model.pinned:
            return -1
        if model.idle_timeout_seconds is not None:
            return model.idle_timeout_seconds
        return self.runtime.current.worker_idle_timeout_seconds

    # -- workers ---------------------------------------------------------------------------------------------
    def _handle(self, model: ModelEntry) -> WorkerHandle:
        latest = self._latest.get(model.id)
        # a request that still holds an old entry (two dumps: only when the entry is not the latest itself)
        if latest is not None and latest is not model and not _same_worker(latest, model):
            model = latest
        handle = self._handles.get(model.id)
        if handle is None:
            handle = WorkerHandle(key=worker_key(model), model=model)
            self._handles[model.id] = handle
        elif handle.model is not model:  # the catalog hands out one entry: usually the same object, no __eq__
            # An equal copy (the handle was made before the catalog re-read it), or the entry with the memory the
            # catalog records after each load (``Catalog.record_memory``, not a change of the model): from now on the
            # identity check answers — no field-by-field __eq__ (and, unequal, a new ``next_model``) per request.
            if handle.model == model or _same_but_measured(handle.model, model):
                handle.model = model
            elif handle.alive:
                handle.next_model = model  # for its next spawn (a changed model's worker is being stopped)
            else:
                handle.model, handle.next_model = model, None
                handle.key = worker_key(model)
        return handle

    async def _ensure_ready(self, handle: WorkerHandle) -> WorkerClient:
        if _ready(handle):
            assert handle.client is not None
            return handle.client
        async with handle.spawn_lock:  # concurrent first requests share one spawn
            if _ready(handle):
                assert handle.client is not None
                return handle.client
            if handle.alive:
                await self.supervisor.stop(handle, handle.stop_reason or "stopped", grace=1)
            if handle.next_model is not None:
                handle.model, handle.next_model = handle.next_model, None
                handle.key = worker_key(handle.model)
            check_source(handle.model.id, handle.model.source)
            interpreter = self._interpreter(handle.model)
            async with self.admission.loading(handle.model.id):  # loads one at a time
                for attempt in (1, 2):
                    start_zygote = await self._make_room(handle, interpreter)
                    runtime = self.runtime.current
                    handle.idle_timeout = self._idle_timeout(handle.model)
                    spec = self._spec(handle.model, handle.idle_timeout)
                    handle.reserved_bytes = self._ram_need(handle, interpreter, start_zygote)
                    handle.reserved_gpu_bytes = gpu_need_bytes(handle.model)
                    try:
                        await self.supervisor.spawn(
                            handle, spec, interpreter, runtime.worker_startup_timeout_seconds, start_zygote
                        )
                    except ModelUnavailable as exc:
                        if exc.code != OUT_OF_MEMORY or attempt == 2:
                            raise
                        log.warning(
                            "loading %s ran out of memory; evicting every idle worker, then retrying once",
                            handle.model.id,
                        )
                        await self._evict(handle, [h for h in self._handles.values() if self._evictable(h, handle)])
                        continue
                    finally:
                        handle.reserved_bytes = handle.reserved_gpu_bytes = 0
                    break
            await self._measure(handle, after_load=True)
            assert handle.client is not None
            return handle.client

    # -- memory admission ------------------------------------------------------------------------------------
    def _evictable(self, other: WorkerHandle, wanting: WorkerHandle | None) -> bool:
        """Idle: alive and ready, nothing in flight, no pending request that is not merely held back; unpinned."""
        return (
            other is not wanting
            and other.alive
            and other.state == READY
            and other.stop_reason is None
            and other.in_flight == 0
            and other.pending <= other.held
            and not other.model.pinned
        )

    def _ram_bytes(self, handle: WorkerHandle) -> int:
        """What a live worker uses now (RSS from /proc), or what its load reserved while it is starting."""
        pid = handle.pid
        if pid is None:
            return 0
        rss = (read_memory_status(pid) or (0, 0))[0]
        return max(rss, handle.reserved_bytes) if handle.state == STARTING else rss

    def _ram_planned(self, handle: WorkerHandle) -> int:
        """What admission counts for a live worker (``admission.worker_ram``): its peak, its model's last measured
        one as known here (this process, else the catalog's). A worker at rest grows back to its peak when it runs
        (long audio, a long batch), so two workers that fit at rest are not admitted side by side unless their peaks
        fit."""
        pid = handle.pid
        if pid is None:
            return 0
        rss, hwm = read_memory_status(pid) or (0, 0)
        forked = isinstance(handle.process, ForkedProcess)
        known = max(self._peaks.get((handle.model.id, forked), 0), (handle.model.memory_peak_mb or 0) * MiB)
        return worker_ram(rss, hwm, known, handle.reserved_bytes if handle.state == STARTING else 0)

    def _zygote_bytes(self) -> int:
        return sum((read_memory_status(pid) or (0, 0))[0] for pid in self.supervisor.zygotes.pids().values())

    def _plan(self, handle: WorkerHandle, interpreter: str, start_zygote: bool = True) -> Plan:
        """The memory plan for loading ``handle``'s model now: RAM always, and its GPU's budget on a GPU. Fixed RAM:
        the zygotes (one still importing at its expected size) and, when this load would start its backend's zygote
        (and ``start_zygote``), that zygote's expected size too."""
        runtime = self.runtime.current
        live = [h for h in self._handles.values() if h is not handle and h.alive]
        plans = []
        zygote = self._zygote_to_start(handle, interpreter) if start_zygote else 0
        ram = self._ram_plan(self._ram_need(handle, interpreter, start_zygote), zygote, handle)
        if ram is not None:
            plans.append(ram)
        if handle.model.uses_gpu:
            device = device_key(handle.model.device)
            gpu_budget = self.admission.gpu_budget(device, runtime.gpu_memory_budget_bytes)
            if gpu_budget is not None:
                on_device = [h for h in live if h.model.uses_gpu and device_key(h.model.device) == device]
                occupants = [
                    self._occupant(h, max(h.gpu_bytes, h.reserved_gpu_bytes if h.state == STARTING else 0), handle)
                    for h in on_device
                ]
                plans.append(plan_room(gpu_need_bytes(handle.model), gpu_budget, 0, occupants))
        return combine(plans)

    def _zygote_to_start(self, handle: WorkerHandle, interpreter: str) -> int:
        """The expected size of the zygote that loading ``handle``'s model would start (0 when it would start
        none: its backend's zygote already runs or imports, or the model does not fork)."""
        spec = self._spec(handle.model, 0, socket_path="")
        zygotes = self.supervisor.zygotes
        return zygotes.expected_bytes(spec.backend) if zygotes.will_start(spec, interpreter) else 0

    def _ram_need(self, handle: WorkerHandle, interpreter: str, start_zygote: bool = True) -> int:
        """RAM the load of ``handle``'s model needs (``footprint.ram_need_bytes``); when it will be a plain spawn
        (no listening zygote to fork from), at least the peak of its last plain-spawned worker in this process."""
        need = ram_need_bytes(handle.model)
        forks = self.supervisor.zygotes.will_fork(self._spec(handle.model, 0, socket_path=""), interpreter)
        if not forks or not start_zygote:
            need = max(need, self._peaks.get((handle.model.id, False), 0))
        return need

    def _occupant(self, other: WorkerHandle, used: int, wanting: WorkerHandle | None) -> Occupant:
        return Occupant(other.model.id, used, other.last_used, other.model.pinned, self._evictable(other, wanting))

    def _ram_plan(self, need: int, starting_zygote: int, wanting: WorkerHandle | None) -> Plan | None:
        """The RAM plan for ``need`` bytes (None: no RAM budget): beside the zygotes (fixed: one importing at its
        expected size, plus ``starting_zygote`` bytes for one this load starts) and the live workers but
        ``wanting``'s, at their peaks (``_ram_planned``). A load's (``_plan``) and a zygote prestart's."""
        budget = self.admission.ram_budget(self.runtime.current.memory_budget_bytes)
        if budget is None:
            return None
        live = [h for h in self._handles.values() if h is not wanting and h.alive]
        occupants = [self._occupant(h, self._ram_planned(h), wanting) for h in live]
        return plan_room(need, budget, self.supervisor.zygotes.reserved_bytes() + starting_zygote, occupants)

    async def _room_for_zygote(self, model: ModelEntry, backend: str) -> bool:
        """Make room for ``backend``'s zygote as a load would (evicting idle unpinned workers, least recently used
        first; never a pinned, busy or starting one) and say whether it fits; a prestart never waits (``wait``,
        ``pinned`` and ``never`` are all a no, with one log line)."""
        for _ in range(3):  # a victim that turned busy meanwhile is not evicted: plan again
            plan = self._ram_plan(self.supervisor.zygotes.expected_bytes(backend), 0, None)  # beside what runs
            if plan is None or (plan.verdict == "fits" and not plan.victims):
                return True
            if plan.verdict != "fits":
                break
            victims = [self._handles[key] for key in plan.victims if key in self._handles]
            await self._evict(None, victims, f"to prestart the zygote of {model.id}")
        assert plan is not None  # (None returned above)
        beside = {"never": "the zygotes", "pinned": "the pinned workers"}.get(plan.verdict, "busy workers")
        log.info(
            "not prestarting the zygote of pinned model %s: its %s do not fit the memory budget beside %s (%s free); "
            "the model loads by its normal path when first used",
            model.id,
            _mib(self.supervisor.zygotes.expected_bytes(backend)),
            beside,
            _mib(max(plan.free, 0)),
        )
        return False

    async def _make_room(self, handle: WorkerHandle, interpreter: str) -> bool:
        """Evict idle workers (least recently used first) until ``handle``'s load fits the budgets, or wait; fail
        fast when it can never fit. See ``modelhost.coordinator.admission``. Returns whether the load may start its
        backend's zygote: not when the zygote is what keeps it from ever fitting (it is then a plain spawn, as
        without zygotes)."""
        model = handle.model
        started = time.monotonic()
        timeout = self.runtime.current.worker_request_timeout_seconds
        start_zygote = True
        try:
            while True:
                plan = self._plan(handle, interpreter, start_zygote)
                if start_zygote and plan.verdict in ("never", "pinned") and self._zygote_to_start(handle, interpreter):
                    alone = self._plan(handle, interpreter, start_zygote=False)
                    if alone.verdict not in ("never", "pinned"):
                        log.info(
                            "loading %s without starting its backend's zygote: the two do not fit the memory budget",
                            model.id,
                        )
                        start_zygote, plan = False, alone
                need = self._ram_need(handle, interpreter, start_zygote), gpu_need_bytes(model)
                if plan.verdict == "never":
                    raise ModelUnavailable(
                        f"model {model.id!r} needs {_mib(need[0])} of RAM{_gpu_text(need[1])} to load, more than the "
                        "whole memory budget left beside the zygotes (memory_budget_bytes / gpu_memory_budget_bytes); "
                        "raise the budget or lower the model's memory_estimate_mb",
                        code="model_exceeds_memory_budget",
                        retry_after=None,
                    )
                if plan.verdict == "pinned":
                    raise ModelUnavailable(
                        f"model {model.id!r} needs {_mib(need[0])} of RAM{_gpu_text(need[1])} to load and does not fit "
                        "beside the pinned models; unpin one, raise the memory budget, or retry later",
                        code="memory_budget_pinned",
                        retry_after=30,
                    )
                if plan.verdict == "fits":
                    if not plan.victims:
                        return start_zygote
                    victims = [self._handles[key] for key in plan.victims if key in self._handles]
                    await self._evict(handle, victims)
                    continue  # measure again: what is really free now
                waited = time.monotonic() - started
                if self.admission.room_wait is None:
                    log.info("loading %s waits for memory (%s free; busy: %s)", model.id, _mib(plan.free), plan.drain)
                self.admission.room_wait = {
                    "model": model.id,
                    "need_bytes": need[0],
                    "waited_seconds": round(waited, 3),
                }
                if waited >= self.runtime.current.gpu_fair_seconds and self.admission.draining != set(plan.drain):
                    log.info("draining %s so that %s can load", sorted(plan.drain), model.id)
                    self.admission.draining = set(plan.drain)
                if waited >= timeout:
                    raise ModelUnavailable(
                        f"model {model.id!r} waited {waited:.0f} s for memory held by busy models; retry later",
                        code="memory_wait_timeout",
                        retry_after=5,
                    )
                await asyncio.sleep(0.1)
        finally:
            self.admission.draining = set()
            self.admission.room_wait = None

    async def _watch_memory(self) -> None:
        """The memory watchdog: every ``WATCHDOG_INTERVAL`` seconds, ``enforce_budget``."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            try:
                await self.enforce_budget()
            except Exception:
                log.exception("memory watchdog failed")

    async def enforce_budget(self) -> list[str]:
        """What admission cannot foresee (a worker growing past its known peak, a zygote larger than expected, a
        budget lowered at run time): when the live RSS of the workers and zygotes is over the RAM budget, evict idle
        workers, least recently used first, until it is not (``over_budget`` in
        ``modelhost_worker_evictions_total``). Never a busy, pinned or starting worker. Returns the evicted models."""
        budget = self.admission.ram_budget(self.runtime.current.memory_budget_bytes)
        if budget is None:
            return []
        live = [h for h in self._handles.values() if h.alive]
        rss = {h.model.id: (read_memory_status(h.pid) or (0, 0))[0] if h.pid else 0 for h in live}
        used = self._zygote_bytes() + sum(rss.values())
        if used <= budget:
            self._over_budget_warned = False
            return []
        victims = []
        freed = 0
        for handle in sorted((h for h in live if self._evictable(h, None)), key=lambda h: h.last_used):
            if used - freed <= budget:
                break
            victims.append(handle)
            freed += rss[handle.model.id]
        if not victims:
            if not self._over_budget_warned:
                log.warning(
                    "memory over budget: %s used of %s (memory_budget_bytes) and no idle worker to evict",
                    _mib(used),
                    _mib(budget),
                )
                self._over_budget_warned = True
            return []
        log.warning(
            "memory over budget: %s used of %s (memory_budget_bytes); evicting idle %s",
            _mib(used),
            _mib(budget),
            ", ".join(h.model.id for h in victims),
        )
        evicted = []
        for victim in victims:
            await self._measure(victim, after_load=False)
            if self._evictable(victim, None):  # still idle after the await
                evicted.append(victim.model.id)
                await self.supervisor.stop(victim, "over_budget")
        return evicted

    async def _evict(self, wanting: WorkerHandle | None, victims: list[WorkerHandle], purpose: str = "") -> None:
        """Stop the idle ``victims`` (``evicted``) for ``wanting``'s load, or (None) for ``purpose``."""
        why = purpose if wanting is None else f"to load {wanting.model.id}"
        for victim in victims:
            if not self._evictable(victim, wanting):
                continue
            await self._measure(victim, after_load=False)
            log.info("evicting idle worker of %s %s", victim.model.id, why)
            if (
                wanting is not None
                and victim.model.uses_gpu
                and wanting.model.uses_gpu
                and self.runtime.current.gpu_policy != "exclusive"
            ):
                self.metrics.gpu_swaps.inc()
            await self.supervisor.stop(victim, "evicted")

    async def _measure(self, handle: WorkerHandle, after_load: bool) -> None:
        """Read the worker's memory (RSS and peak from /proc; GPU memory from its ``/info``) and hand it to the
        catalog. After a load also learns its GPU's total (the default GPU budget)."""
        pid = handle.pid
        status = read_memory_status(pid) if pid else None
        if status is None:
            return
        self._peaks[(handle.model.id, isinstance(handle.process, ForkedProcess))] = status[1]
        figures: dict[str, int | None] = {"memory_measured_mb": status[0] // MiB, "memory_peak_mb": status[1] // MiB}
        if not after_load:
            figures["memory_measured_mb"] = None  # the figure after load stays; the peak grows with use
        if handle.model.uses_gpu and handle.client is not None:
            try:
                info = await handle.client.info()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                info = {}
            gpu = info.get("gpu") if isinstance(info.get("gpu"), dict) else None
            if gpu:
                handle.gpu_bytes = int(gpu.get("bytes") or 0)
                if gpu.get("total_bytes"):
                    self.admission.gpu_totals[device_key(str(gpu.get("device") or handle.model.device))] = int(
                        gpu["total_bytes"]
                    )
                figures["gpu_memory_measured_mb"] = handle.gpu_bytes // MiB if after_load else None
                figures["gpu_memory_peak_mb"] = int(gpu.get("peak_bytes") or handle.gpu_bytes) // MiB
        if self.on_measured is not None:
            try:
                await asyncio.to_thread(self.on_measured, handle.model.id, figures)
            except Exception:
                log.warning("could not record the memory of %s", handle.model.id, exc_info=True)

    def _spec(self, model: ModelEntry, idle_timeout: float, socket_path: str | None = None) -> WorkerSpec:
        runtime = self.runtime.current
        return WorkerSpec(
            model_id=model.id,
            task=model.task,
            backend=backend_reference(model.backend),
            source=model.source,
            socket_path=self.supervisor.socket_path(self.run_dir) if socket_path is None else socket_path,
            device=model.device,
            threads=model.threads or 1,
            idle_timeout=idle_timeout,
            max_batch_size=runtime.worker_max_batch_size,
            batch_wait_ms=runtime.worker_batch_wait_ms,
            parent_pid=os.getpid(),
            log_level=self.settings.log_level,
            data_dir=str(self.settings.data_dir),
            options=model.options,
            max_audio_seconds=self.settings.max_audio_seconds,
        )

    async def stop_worker(self, model_id: str) -> bool:
        """Stop a model's worker (its memory is freed); it respawns on next use. False if none was running."""
        handle = self._handles.get(model_id)
        if handle is None or not handle.alive:
            return False
        if handle.state == READY:
            await self._measure(handle, after_load=False)  # its peak, inferences included
        await self.supervisor.stop(handle, "stopped")
        return True

    def model_changed(self, model_id: str, entry: ModelEntry | None = None) -> None:
        """Catalog callback (any thread). A removed model's worker stops; a changed one stops too (its next request
        starts it from the new entry; a request caught by that stop is retried on the fresh worker), unless only
        fields a running worker does not depend on changed (pinned, idle timeout, memory figures, description):
        then the worker keeps running under the new entry. Pinning keeps its backend's zygote started."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(lambda: self.supervisor.track(self._apply_change(model_id, entry)))

    async def _apply_change(self, model_id: str, entry: ModelEntry | None) -> None:
        if entry is None:
            self._latest.pop(model_id, None)
        else:
            self._latest[model_id] = entry  # a request still holding the old entry spawns from this one
        handle = self._handles.get(model_id)
        old = handle.model if handle is not None else None
        if entry is not None and entry.pinned and (old is None or not old.pinned):
            with contextlib.suppress(ModelhostError):
                await self.prestart_zygote(entry, keep=True)
        elif entry is None or not entry.pinned:
            self.supervisor.zygotes.release(model_id)
        if handle is None or old is None:
            return
        if entry is not None and _same_worker(old, entry):
            handle.model, handle.next_model = entry, None
            handle.idle_timeout = self._idle_timeout(entry)
            return
        for forked in (False, True):  # another worker: the peaks of the old one say nothing about it
            self._peaks.pop((model_id, forked), None)
        if entry is not None:
            handle.next_model = entry
        if handle.alive:
            if handle.state == READY:
                await self._measure(handle, after_load=False)
            # changed: a request caught by the stop is retried on a fresh worker; removed: it answers 503
            await self.supervisor.stop(handle, "changed" if entry is not None else "stopped", grace=1)

    async def prestart_pinned(self, entries: list[ModelEntry]) -> None:
        """At start-up: the zygotes of pinned models' backends, so their first worker is already a fork; each through
        memory admission (``prestart_zygote``: one that does not fit is skipped)."""
        for entry in entries:
            if entry.pinned:
                with contextlib.suppress(ModelhostError):
                    await self.prestart_zygote(entry, keep=True)

    async def worker_info(self, model_id: str) -> dict[str, Any] | None:
        handle = self._handles.get(model_id)
        if handle is None or not handle.alive or handle.client is None or handle.state != READY:
            return None
        try:
            return await handle.client.info()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            log.warning("could not read /info of the worker for %s", model_id, exc_info=True)
            return None

    def _interpreter(self, model: ModelEntry) -> str:
        if model.python_env is None:
            return sys.executable
        if not self.envs.exists(model.python_env):
            raise Conflict(
                f"model {model.id!r} runs in python environment {model.python_env!r}, which does not exist; "
                f"create it with `modelhost envs create {model.python_env} --requirements FILE`",
                code="python_env_missing",
                param="model",
            )
        return str(self.envs.interpreter(model.python_env))

    # -- introspection ---------------------------------------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        return [h.status() for h in sorted(self._handles.values(), key=lambda h: h.model.id) if h.alive]

    def zygotes(self) -> list[dict[str, Any]]:
        return self.supervisor.zygotes.status()

    def queue_depths(self) -> dict[str, int]:
        return {h.model.id: h.pending for h in self._handles.values() if h.pending}

    def memory(self) -> dict[str, Any]:
        """Budgets, use and the loads waiting for room (``/api/health``)."""
        runtime = self.runtime.current
        live = [h for h in self._handles.values() if h.alive]
        zygotes = self._zygote_bytes()
        gpus: dict[str, dict[str, Any]] = {}
        for h in live:
            if h.model.uses_gpu:
                device = device_key(h.model.device)
                entry = gpus.setdefault(device, {"budget_bytes": None, "used_bytes": 0})
                entry["used_bytes"] += h.gpu_bytes
        for device in set(gpus) | set(self.admission.gpu_totals):
            entry = gpus.setdefault(device, {"used_bytes": 0})
            entry["budget_bytes"] = self.admission.gpu_budget(device, runtime.gpu_memory_budget_bytes)
            entry["total_bytes"] = self.admission.gpu_totals.get(device)
        now = time.monotonic()
        return {
            "budget_bytes": self.admission.ram_budget(runtime.memory_budget_bytes),
            "used_bytes": zygotes + sum(self._ram_bytes(h) for h in live),
            "zygotes_bytes": zygotes,
            # what admission plans with: workers at their peaks, importing zygotes at their expected size
            "reserved_bytes": self.supervisor.zygotes.reserved_bytes() + sum(self._ram_planned(h) for h in live),
            "gpus": gpus,
            # position 0 is loading (or waiting for room: ``room_wait``); the others wait for their turn to load
            "loads": [
                {"model": model_id, "position": i, "waited_seconds": round(now - since, 3)}
                for i, (model_id, since) in enumerate(self.admission.loading_queue)
            ],
            "room_wait": self.admission.room_wait,
            "draining": sorted(self.admission.draining),
        }

    def gpu_lock(self) -> dict[str, Any]:
        return {
            "held": self.admission.held,
            "holder": self.admission.holder,
            "waiters": self.admission.waiters,
        }


def worker_error(status: int, error: Any) -> ModelhostError:
    """A worker's error envelope as the typed error the API answers: a 503 stays a 503 (with Retry-After only
    when the worker was merely not ready), 4xx keep their status, anything else is a 500."""
    error = error if isinstance(error, dict) else {}
    if status == 503:
        code = error.get("code") if isinstance(error.get("code"), str) else None
        transient = code in (None, "model_unavailable")
        return ModelUnavailable(
            str(error.get("message") or "model unavailable"), code=code, retry_after=5 if transient else None
        )
    return from_worker_error(status, error)


def _ready(handle: WorkerHandle) -> bool:
    return handle.alive and handle.state == READY and handle.client is not None and handle.stop_reason is None


def _mib(value: int) -> str:
    return f"{value / MiB:.0f} MiB"


def _gpu_text(gpu: int) -> str:
    return f" and {_mib(gpu)} of GPU memory" if gpu else ""


#: Catalog fields a running worker does not depend on: changing them keeps it running.
_LIVE_FIELDS = frozenset(
    {
        "pinned",
        "idle_timeout_seconds",
        "memory_estimate_mb",
        "memory_measured_mb",
        "memory_peak_mb",
        "gpu_memory_measured_mb",
        "gpu_memory_peak_mb",
        "description",
        "created_at",
    }
)


def _same_worker(old: ModelEntry, new: ModelEntry) -> bool:
    return old.model_dump(exclude=set(_LIVE_FIELDS)) == new.model_dump(exclude=set(_LIVE_FIELDS))


#: The figures ``Catalog.record_memory`` writes after a load: a new entry object, not a change of the model.
_MEASURED_FIELDS = frozenset({"memory_measured_mb", "memory_peak_mb", "gpu_memory_measured_mb", "gpu_memory_peak_mb"})


def _same_but_measured(old: ModelEntry, new: ModelEntry) -> bool:
    return old.model_dump(exclude=set(_MEASURED_FIELDS)) == new.model_dump(exclude=set(_MEASURED_FIELDS))


def worker_key(model: ModelEntry) -> str:
    return f"{model.task}:{model.id}" + (f":{model.python_env}" if model.python_env else "")


def _copy_into(source: IO[bytes] | bytes, fd: int) -> None:
    with os.fdopen(fd, "wb") as target:
        if isinstance(source, bytes):
            target.write(source)
            return
        with contextlib.suppress(AttributeError, OSError, ValueError):
            source.seek(0)
        shutil.copyfileobj(source, target, 1024 * 1024)


__all__ = ["Chunk", "Coordinator", "FileRef", "Files", "ModelhostError", "worker_error", "worker_key"]


class _Queued:
    """Queue admission and metrics for one request (``Coordinator._queued``): 429 when the model's queue is full."""

    __slots__ = ("handle", "depth", "seconds", "started")

    depth: GaugeSeries
    seconds: HistogramSeries

    def __init__(self, coordinator: Coordinator, handle: WorkerHandle) -> None:
        self.handle = handle
        model_id = handle.model.id
        limit = coordinator.runtime.current.max_queue_per_model
        if handle.pending >= limit:
            raise QueueFull(
                f"model {model_id!r} already has {handle.pending} requests queued or running "
                f"(max_queue_per_model={limit}); retry later",
                headers={"Retry-After": "1"},
            )
        children = coordinator._queue_metrics.get(model_id)
        if children is None:  # looked up once per model
            metrics = coordinator.metrics
            children = (metrics.queue_depth.labels(model_id), metrics.inference_seconds.labels(model_id))
            coordinator._queue_metrics[model_id] = children
        self.depth, self.seconds = children
        self.started = 0.0

    def __enter__(self) -> None:
        handle = self.handle
        handle.pending += 1
        self.depth.value = handle.pending
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        handle = self.handle
        handle.pending -= 1
        self.depth.value = handle.pending
        self.seconds.observe(time.monotonic() - self.started)


class _Admitted:
    """GPU admission for one request, after any drain of its model (a waiting load's turn). While held back here
    the request does not keep its idle worker from being evicted (``handle.held``)."""

    __slots__ = ("admission", "handle", "policy", "locked")

    def __init__(self, coordinator: Coordinator, handle: WorkerHandle) -> None:
        self.admission = coordinator.admission
        self.handle = handle
        self.policy = coordinator.runtime.current.gpu_policy
        self.locked = False

    async def __aenter__(self) -> None:
        handle, admission = self.handle, self.admission
        handle.held += 1
        try:
            if handle.model.id in admission.draining:
                await admission.until_not_draining(handle.model.id)
            self.locked = await admission.enter(handle.model, self.policy)
        finally:
            handle.held -= 1

    async def __aexit__(self, *exc: object) -> None:
        if self.locked:
            self.admission.leave()


class _InFlight:
    """Marks a request as sent to the worker; ``with`` gives the request timeout."""

    __slots__ = ("coordinator", "handle")

    def __init__(self, coordinator: Coordinator, handle: WorkerHandle) -> None:
        self.coordinator = coordinator
        self.handle = handle

    def __enter__(self) -> float:
        coordinator, handle = self.coordinator, self.handle
        handle.idle_timeout = coordinator._idle_timeout(handle.model)
        handle.in_flight += 1
        handle.last_used = time.monotonic()
        return coordinator.runtime.current.worker_request_timeout_seconds

    def __exit__(self, *exc: object) -> None:
        handle = self.handle
        handle.in_flight -= 1
        handle.last_used = time.monotonic()
