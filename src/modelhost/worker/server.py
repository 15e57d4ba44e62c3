"""The worker process: loads one backend once and serves it on two Unix sockets: HTTP for ``/healthz``, ``/info``
and ``/shutdown``, and the inference stream (``modelhost.worker.frames``: multiplexed length-prefixed frames on
long-lived connections) for requests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from aiohttp import web

from modelhost.errors import BackendError, BadInput, StorageFull, error_envelope, is_disk_full
from modelhost.worker import frames
from modelhost.worker.batching import Batcher
from modelhost.worker.gpu_memory import gpu_memory
from modelhost.worker.protocol import (
    BUSY,
    ERROR,
    EXIT_IDLE,
    EXIT_LOAD_FAILED,
    EXIT_ORPHANED,
    READY,
    STARTING,
    TOKEN_HEADER,
    WorkerSpec,
    load_error,
    read_memory_status,
    read_rss_bytes,
    scrub,
)

try:  # orjson is faster, but a worker environment may not have it
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _parse_json(data: bytes | bytearray) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - depends on the environment

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def _parse_json(data: bytes | bytearray) -> Any:
        return json.loads(data)


log = logging.getLogger(__name__)


class WorkerServer:
    def __init__(self, spec: WorkerSpec, token: str) -> None:
        self.spec = spec
        self.token = token
        self.state = STARTING
        self.error: str | None = None
        self.error_code: str | None = None
        self.idle_timeout = spec.idle_timeout
        self.in_flight = 0
        self.served = 0
        self.last_activity = time.monotonic()
        self.load_time_s: float | None = None
        self.started_at = time.time()
        # One inference thread: backends need not be thread-safe, and threads are budgeted per worker.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self.backend: Any = None
        self.batcher: Batcher | None = None
        self._stopping = False
        self._executor_jobs = 0
        self._stream_server: asyncio.AbstractServer | None = None
        self._settled = asyncio.Event()  # set once loading ended (READY or ERROR): /healthz?wait=
        self._model_id = spec.model_id

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def serve(self) -> None:
        app = web.Application(middlewares=[self._auth], client_max_size=1024**3)
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/info", self._info),
                web.post("/shutdown", self._shutdown),
            ]
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        loop = asyncio.get_running_loop()
        stream_path = frames.stream_socket_path(self.spec.socket_path)
        self._stream_server = await loop.create_unix_server(lambda: InferConnection(self), stream_path)
        os.chmod(stream_path, 0o600)
        site = web.UnixSite(runner, self.spec.socket_path)  # last: the coordinator waits for this one
        await site.start()
        os.chmod(self.spec.socket_path, 0o600)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.exit, 0, f"signal {sig.name}")
        log.info("listening on %s, loading %s", self.spec.socket_path, self.spec.backend)
        # Looked up now, once: Python picks the temporary folder on first use and passes over one it cannot write
        # to, so a TMPDIR already full at a first request would send the files to /tmp silently; fixed here, a full
        # disk later is answered 507 naming this folder.
        log.info("temporary files in %s", tempfile.gettempdir())
        watchdog = loop.create_task(self._watchdog(), name="idle-watchdog")
        await self._load()
        await watchdog  # runs until the process exits

    async def _load(self) -> None:
        try:
            await self._load_backend()
        finally:
            self._settled.set()

    async def _load_backend(self) -> None:
        from modelhost.backends.base import load_backend_class

        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            cls = load_backend_class(self.spec.backend)
            self.backend = cls(self.spec)
            await self._in_executor(self.backend.load)
        except Exception as exc:
            self.error, self.error_code = load_error(exc)
            self.state = ERROR
            log.exception("loading %s failed", self.spec.model_id)
            # Stay up briefly so the coordinator can read the error from /healthz, then go.
            loop.call_later(30, self.exit, EXIT_LOAD_FAILED, "load failed")
            return
        self.load_time_s = time.perf_counter() - started
        if getattr(self.backend, "supports_batching", False):
            self.batcher = Batcher(
                self.backend.run_batch,
                self.executor,
                max_batch_size=self.spec.max_batch_size,
                wait_ms=self.spec.batch_wait_ms,
                inline_when=self._inference_thread_idle,
            )
            self.batcher.start()
        self.last_activity = time.monotonic()
        self.state = READY
        log.info(
            "model %s loaded in %.2f s (rss %s MiB)",
            self.spec.model_id,
            self.load_time_s,
            _mib(read_rss_bytes()),
        )

    def _parent_alive(self) -> bool:
        """Whether the coordinator still runs: it is the parent of a spawned worker; a forked worker's parent is
        its zygote, so it checks the coordinator's pid directly."""
        if os.getppid() == self.spec.parent_pid:
            return True
        if not self.spec.forked:
            return False
        try:
            os.kill(self.spec.parent_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def exit(self, code: int, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("worker for %s exiting (%s)", self.spec.model_id, reason)
        for path in (self.spec.socket_path, frames.stream_socket_path(self.spec.socket_path)):
            with contextlib.suppress(OSError):
                os.unlink(path)
        logging.shutdown()
        os._exit(code)

    async def _watchdog(self) -> None:
        while True:
            timeout = self.idle_timeout
            await asyncio.sleep(0.02 if timeout == 0 else 0.1 if 0 < timeout < 5 else 0.5)
            if self.spec.parent_pid and not self._parent_alive():
                self.exit(EXIT_ORPHANED, "coordinator process is gone")
            if self.state != READY or self.in_flight or timeout < 0:
                continue
            if timeout == 0:
                if self.served:
                    self.exit(EXIT_IDLE, "idle timeout 0: one request served")
            elif time.monotonic() - self.last_activity >= timeout:
                self.exit(EXIT_IDLE, f"idle for {timeout:g} s")

    # -- routes ----------------------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get(TOKEN_HEADER) != self.token:
            return _json(
                error_envelope("missing or wrong worker token", "authentication_error", code="invalid_worker_token"),
                401,
            )
        response: web.StreamResponse = await handler(request)
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        """The worker's state. ``?wait=SECONDS`` (at most ``MAX_HEALTH_WAIT``) while STARTING: answer as soon as
        loading ends, or after that long (the coordinator's start-up wait learns READY at once, with no polling)."""
        wait = _wait_seconds(request.query.get("wait"))
        if wait > 0 and self.state == STARTING:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), wait)
        state = BUSY if self.state == READY and self.in_flight else self.state
        body = {"state": state, "model": self.spec.model_id, "error": self.error, "error_code": self.error_code}
        return _json({**body, "pid": os.getpid()})

    async def _info(self, _request: web.Request) -> web.Response:
        backend_info = self.backend.info() if self.backend is not None and self.state == READY else {}
        versions = {}
        for dist in ("aiohttp", *backend_info.pop("packages", ())):
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[dist] = metadata.version(dist)
        return _json(
            {
                "model": self.spec.model_id,
                "task": self.spec.task,
                "backend": self.spec.backend,
                "state": self.state,
                "pid": os.getpid(),
                "python": sys.executable,
                "prefix": sys.prefix,
                "packages": versions,
                "load_time_s": self.load_time_s,
                "rss_bytes": read_rss_bytes(),
                "rss_peak_bytes": (read_memory_status() or (None, None))[1],
                "gpu": gpu_memory(self.spec.device) if self.state == READY else None,
                "requests_served": self.served,
                "in_flight": self.in_flight,
                "idle_timeout": self.idle_timeout,
                "threads": self.spec.threads,
                "started_by": "zygote" if self.spec.forked else "spawn",
                "uptime_s": round(time.time() - self.started_at, 3),
                "batching": self.batcher.stats.as_dict() if self.batcher else None,
                "backend_info": backend_info,
            }
        )

    async def _shutdown(self, _request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_later(0.05, self.exit, 0, "shutdown requested")
        return _json({"state": "STOPPING"})

    # -- the inference stream ----------------------------------------------------------------------------------
    def _serve_request(self, conn: InferConnection, rid: int, raw: bytes) -> asyncio.Future[Any] | None:
        """One ``REQUEST`` frame: its answer goes back as frames with the same request id. Refused at once (an error
        frame, nothing to return), or in flight: the future to cancel on ``CANCEL`` — a batched request is the
        batcher's future, answered by its done-callback (no task per request: the embeddings path); a stream, a
        request with files or an unbatched backend a task."""
        if self.state != READY:
            message = f"model {self.spec.model_id} is {self.state.lower()}" + (f": {self.error}" if self.error else "")
            conn.send(_error_frame(rid, error_envelope(message, "service_unavailable", code="model_unavailable"), 503))
            return None
        try:
            body = _loads(raw)
            if not isinstance(body, dict):
                raise BadInput("request body must be a JSON object", code="invalid_payload")
            files = _file_paths(body.get("files"))
        except BackendError as exc:
            conn.send(_error_frame(rid, _backend_error(exc), exc.status))
            return None
        if "idle_timeout" in body and isinstance(body["idle_timeout"], int | float):
            self.idle_timeout = float(body["idle_timeout"])
        payload = body.get("payload")
        request_id = str(body.get("request_id") or uuid.uuid4().hex)
        if not isinstance(payload, dict):
            envelope = error_envelope(
                "'payload' must be an object", "invalid_request_error", param="payload", code="invalid_payload"
            )
            conn.send(_error_frame(rid, envelope, 400))
            return None
        if body.get("stream"):
            return asyncio.get_running_loop().create_task(self._serve_stream(conn, rid, payload, files))
        self.in_flight += 1
        self.last_activity = time.monotonic()
        started = time.perf_counter()
        if self.batcher is not None and not files:
            future = self.batcher.enqueue(payload)
            future.add_done_callback(functools.partial(self._batched_done, conn, rid, request_id, started))
            return future
        return asyncio.get_running_loop().create_task(
            self._serve_unbatched(conn, rid, request_id, started, payload, files)
        )

    def _batched_done(
        self, conn: InferConnection, rid: int, request_id: str, started: float, future: asyncio.Future[Any]
    ) -> None:
        """The answer of a batched request (or nothing: cancelled)."""
        conn.forget(rid, future)
        self._request_done()
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            conn.send(self._answer(rid, request_id, started, future.result()))
        else:
            conn.send(self._failure_frame(rid, request_id, exc))

    async def _serve_unbatched(
        self,
        conn: InferConnection,
        rid: int,
        request_id: str,
        started: float,
        payload: dict[str, Any],
        files: dict[str, Path],
    ) -> None:
        try:
            result = await self._in_executor(self.backend.run, payload, files)
        except Exception as exc:
            conn.send(self._failure_frame(rid, request_id, exc))
            return
        finally:
            self._request_done()
        conn.send(self._answer(rid, request_id, started, result))

    def _request_done(self) -> None:
        self.in_flight -= 1
        self.served += 1
        self.last_activity = time.monotonic()

    def _failure_frame(self, rid: int, request_id: str, exc: BaseException) -> bytes:
        return _error_frame(rid, *self._failure(request_id, exc))

    def _failure(self, request_id: str, exc: BaseException) -> tuple[dict[str, Any], int]:
        """The error envelope and status of a request the backend failed: a ``BackendError`` as it says; a full
        disk where the worker writes (``StorageFull``, or an ``OSError`` ENOSPC/EDQUOT) 507 ``storage_full`` naming
        the folder — the operator's to fix, the worker stays up; anything else 500 ``inference_failed``, logged."""
        if isinstance(exc, BackendError):
            return _backend_error(exc), exc.status
        if isinstance(exc, OSError) and is_disk_full(exc):
            exc = StorageFull.from_os_error(exc, f"a temporary file of model {self.spec.model_id}")
        if isinstance(exc, StorageFull):
            log.warning("request %s: %s", request_id, exc.message)
            return error_envelope(scrub(exc.message), exc.error_type, code=exc.code), exc.status_code
        log.error("inference failed for request %s", request_id, exc_info=exc)
        message = _failure_message(self.spec.model_id, exc)
        return error_envelope(message, "worker_error", code="inference_failed"), 500

    def _answer(self, rid: int, request_id: str, started: float, result: Any) -> bytes:
        """JSON (binary values as ``{"$bytes": i}``), one BYTES frame per binary value, DONE: one write."""
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        value, blobs = frames.split_binary(result)  # the envelope's other fields are never bytes
        envelope = {
            "result": value,
            "request_id": request_id,
            "processing_time_ms": elapsed_ms,
            "model": self._model_id,
        }
        parts = [frames.encode(frames.JSON, rid, _dumps(envelope))]
        parts += [frames.encode(frames.BYTES, rid, blob) for blob in blobs]
        parts.append(frames.encode(frames.DONE, rid, _dumps({"processing_time_ms": elapsed_ms})))
        return b"".join(parts)

    async def _serve_stream(
        self, conn: InferConnection, rid: int, payload: dict[str, Any], files: dict[str, Path]
    ) -> None:
        """Run ``backend.run_stream`` on the inference thread and forward each item as a frame: a dict as a
        ``JSON`` frame, bytes as a ``BYTES`` frame; then ``DONE``, or ``ERROR`` if the backend raised. A ``CANCEL``
        frame or a closed connection sets the ``cancelled`` event the backend checks between chunks."""
        if not getattr(self.backend, "supports_streaming", False):
            message = f"model {self.spec.model_id} does not stream"
            envelope = error_envelope(message, "invalid_request_error", param="stream", code="streaming_unsupported")
            conn.send(_error_frame(rid, envelope, 400))
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                for item in self.backend.run_stream(payload, files, cancelled):
                    loop.call_soon_threadsafe(queue.put_nowait, ("chunk", item))
                    if cancelled.is_set():
                        break
            except BaseException as exc:  # forwarded to the client as an error frame
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            else:
                loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

        self.in_flight += 1
        self.last_activity = time.monotonic()
        started = time.perf_counter()
        future = self._in_executor(produce)
        try:
            while True:
                kind, item = await queue.get()
                if kind == "chunk":
                    conn.send(_chunk_frame(rid, item))
                    await conn.drain()
                    continue
                if kind == "error":
                    conn.send(_error_frame(rid, *self._failure(f"{rid} (stream)", item)))
                else:
                    elapsed = round((time.perf_counter() - started) * 1000, 3)
                    conn.send(frames.encode(frames.DONE, rid, _dumps({"processing_time_ms": elapsed})))
                break
        except (ConnectionResetError, asyncio.CancelledError):
            log.info("stream client went away; cancelling generation")
            cancelled.set()
            raise
        finally:
            cancelled.set()  # also stops a producer still running after an error
            await asyncio.shield(future)
            self.in_flight -= 1
            self.served += 1
            self.last_activity = time.monotonic()

    def _in_executor(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``fn`` on the inference thread, counted so the batcher knows when it may run a batch inline."""
        self._executor_jobs += 1
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        future.add_done_callback(self._executor_job_done)
        return future

    def _executor_job_done(self, _future: asyncio.Future[Any]) -> None:
        self._executor_jobs -= 1

    def _inference_thread_idle(self) -> bool:
        return self._executor_jobs == 0


class InferConnection(asyncio.Protocol):
    """One coordinator connection to the inference socket: ``HELLO`` with the token first, then any number of
    ``REQUEST`` frames in flight at once (each served by its own task) and ``CANCEL`` frames."""

    def __init__(self, server: WorkerServer) -> None:
        self.server = server
        self.reader = frames.FrameReader()
        self.transport: asyncio.Transport | None = None
        self.authenticated = False
        self.calls: dict[int, asyncio.Future[Any]] = {}  # a task, or a batched request's future
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a Unix stream transport

    def data_received(self, data: bytes) -> None:
        try:
            received = self.reader.feed(data)
        except ValueError as exc:
            log.warning("closing an inference connection: %s", exc)
            self._close()
            return
        for kind, rid, body in received:
            if kind == frames.REQUEST and self.authenticated:
                call = self.server._serve_request(self, rid, body)
                if call is not None:
                    self.calls[rid] = call
                    if isinstance(call, asyncio.Task):
                        call.add_done_callback(functools.partial(self._finished, rid))
            elif kind == frames.CANCEL and self.authenticated:
                call = self.calls.get(rid)
                if call is not None:
                    call.cancel()
            elif kind == frames.HELLO and hmac.compare_digest(body, self.server.token.encode()):
                self.authenticated = True
            else:  # no token, a wrong one, or a frame only a worker sends
                log.warning("closing an inference connection: unexpected %s frame", frames.KINDS[kind])
                self._close()
                return

    def _finished(self, rid: int, task: asyncio.Future[Any]) -> None:
        self.forget(rid, task)
        if not task.cancelled() and task.exception() is not None:
            log.error("serving request %s failed", rid, exc_info=task.exception())

    def forget(self, rid: int, call: asyncio.Future[Any]) -> None:
        if self.calls.get(rid) is call:
            del self.calls[rid]

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - asyncio.Protocol signature
        for task in list(self.calls.values()):
            task.cancel()  # a stream stops generating; a queued request leaves its batch
        self._resume()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the coordinator reads slower than a stream produces."""
        if self._paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._resume()

    def _resume(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _error_frame(rid: int, envelope: dict[str, Any], status: int) -> bytes:
    return frames.encode(frames.ERROR, rid, _dumps({**envelope, "status": status}))


def _chunk_frame(rid: int, item: Any) -> bytes:
    if isinstance(item, bytes | bytearray | memoryview):
        return frames.encode(frames.BYTES, rid, bytes(item))
    value, blobs = frames.split_binary(item)
    if blobs:
        raise TypeError("a streamed partial result is either bytes or a JSON object without bytes inside")
    return frames.encode(frames.JSON, rid, _dumps(value))


def _failure_message(model_id: str, exc: BaseException) -> str:
    """What the client reads about an unexpected backend error: the exception type, never its text (which may hold
    reprs, paths or data); the traceback is in the worker log."""
    return f"inference failed in the worker for model {model_id} ({type(exc).__name__}); the server log has details"


def _file_paths(value: Any) -> dict[str, Path]:
    """``{"name": "/absolute/path"}`` from the request: files the coordinator spooled for this request."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput("'files' must be an object of paths", param="files", code="invalid_payload")
    files: dict[str, Path] = {}
    for name, raw in value.items():
        path = Path(str(raw))
        if not path.is_absolute() or not path.is_file():
            raise BadInput(f"file {name!r} is not readable by the worker", param="files", code="missing_file")
        files[str(name)] = path
    return files


#: The longest ``/healthz?wait=`` holds an answer back.
MAX_HEALTH_WAIT = 5.0


def _wait_seconds(raw: str | None) -> float:
    """``/healthz``'s ``wait`` parameter: seconds within [0, ``MAX_HEALTH_WAIT``]; anything unreadable is 0."""
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        return 0.0
    return min(max(value, 0.0), MAX_HEALTH_WAIT) if value == value else 0.0  # NaN is 0


def _loads(data: bytes | bytearray) -> Any:
    try:
        return _parse_json(data)
    except ValueError as exc:
        raise BadInput(f"invalid JSON: {exc}", code="invalid_json") from exc


def _backend_error(exc: BackendError) -> dict[str, Any]:
    return error_envelope(scrub(exc.message), exc.error_type, param=exc.param, code=exc.code)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type="application/json")


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:.0f}"
