"""``python -m modelhost.worker.zygote SOCKET BACKEND [PARENT_PID]``: a pre-imported parent that forks model workers.

Started by the coordinator (``modelhost.coordinator.zygote``) for one backend (``package.module:Class``) of the
server's own interpreter. It imports the backend module and the libraries its class names in ``zygote_preload``
(default: ``requires``; torch + sentence_transformers, faster_whisper + ctranslate2, llama_cpp, rapidocr.main…)
without running any model code, then serves spawn requests on a Unix socket, one per connection:

* request: one JSON line ``{"env": {...}, "log": "/path/worker-x.log"}`` (the environment a plain spawn would get);
* answer: ``{"pid": N}`` once forked, then ``{"exit": CODE}`` (a negative code: killed by that signal) when the
  child exits. The zygote reaps its children, so the coordinator learns exit codes from this connection.

The child does ``setsid``, points stdin at /dev/null and stdout/stderr at the worker log, takes the environment of
the request, restores default signal handlers, reseeds its random generators, sets its thread counts, and runs the
normal worker main.

CUDA: a worker for a GPU (``device`` ``cuda``/``cuda:N``) is forked too, because a process that has never touched
the CUDA driver forks as safely as any other and the child then initializes CUDA for itself. The zygote imports
with ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (torch then answers ``cuda.is_available()`` through NVML, without
initializing the driver) and, before forking a GPU worker, checks that the driver is not initialized in it
(``cuda_initialized``); when it is (a library initialized CUDA at import), the request is answered
``{"refused": REASON}`` and the coordinator spawns that worker plainly (CPU workers still fork).

Fork safety: the zygote must have exactly one thread when it forks (a lock held by another thread at fork time stays
locked forever in the child; a multithreaded torch op before a fork hangs the child). So it imports with every
thread-count variable at 1 (OpenBLAS starts its pool at import otherwise), never imports the modules of
``FORK_UNSAFE`` (the child imports them), runs no model code, and checks its thread count after the preload: with
more than one thread it exits with ``EXIT_NOT_FORKABLE`` and the coordinator plain-spawns that backend from then on.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import time
from typing import Any

#: The thread-count variables: 1 in a zygote (a worker gets its own in its environment).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
#: Set in a zygote before its imports: torch answers ``cuda.is_available()`` through NVML (no CUDA initialization),
#: and the jemalloc that pyarrow bundles (imported by sentence-transformers through ``datasets``) starts no background
#: thread (it would make the zygote refuse to fork; measured on a GPU host with pyarrow 25).
ZYGOTE_ENV = {"PYTORCH_NVML_BASED_CUDA_CHECK": "1", "JE_ARROW_MALLOC_CONF": "background_thread:false"}
#: The zygote's exit code when it cannot fork safely (a thread started during the preload): no retry.
EXIT_NOT_FORKABLE = 3
#: Modules a zygote never imports, with the reason; a worker forked from it imports them itself.
FORK_UNSAFE = {
    # onnxruntime 1.32's extension module starts a thread when it is imported (a timed wait in the library's
    # environment); importing it in the child costs 0.04-0.1 s once numpy is loaded.
    "onnxruntime": "its import starts a thread",
}


def preload_modules(backend: str) -> list[str]:
    """The modules a zygote for ``backend`` imports: the backend's module, then its ``zygote_preload``."""
    module_name, _, class_name = backend.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    listed: tuple[str, ...] | None = getattr(cls, "zygote_preload", None)
    wanted: tuple[str, ...] = getattr(cls, "requires", ()) if listed is None else listed
    return [module_name, *(name for name in wanted if name.split(".")[0] not in FORK_UNSAFE)]


def preload(backend: str) -> list[str]:
    """Import ``backend``'s module and the libraries it preloads (never ``FORK_UNSAFE``), then run the class's
    ``prepare_zygote``; returns the modules."""
    done = preload_modules(backend)
    for name in done[1:]:
        importlib.import_module(name)
    import modelhost.worker.server  # noqa: F401  (the worker's own imports: aiohttp/uvloop…)

    module_name, _, class_name = backend.partition(":")
    prepare = getattr(getattr(sys.modules[module_name], class_name), "prepare_zygote", None)
    if prepare is not None:
        prepare()
    return done


def cuda_initialized() -> bool:
    """Whether the CUDA driver has been initialized in this process (a child forked now could not use the GPU).
    Not mapped: no. Mapped (a CUDA build of torch links it at import without initializing it): ask the loaded
    driver ``cuCtxGetCurrent``, which answers ``CUDA_ERROR_NOT_INITIALIZED`` (3) before ``cuInit`` and initializes
    nothing. A driver that cannot be asked counts as initialized."""
    try:
        with open("/proc/self/maps") as maps:
            if not any("libcuda.so" in line for line in maps):
                return False
    except OSError:
        return True
    import ctypes

    try:  # RTLD_NOLOAD: only the copy already loaded, never a new one
        driver = ctypes.CDLL("libcuda.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        context = ctypes.c_void_p()
        return int(driver.cuCtxGetCurrent(ctypes.byref(context))) != 3
    except (OSError, AttributeError):
        return True


def _wants_gpu(request: dict[str, Any]) -> bool:
    try:
        spec = json.loads(request["env"]["MODELHOST_WORKER_SPEC"])
    except (KeyError, TypeError, ValueError):
        return False
    return str(spec.get("device") or "cpu") != "cpu"


def thread_names() -> list[str]:
    """The names of this process's threads (Linux); one entry per thread."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return names


def _exit_code(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _run_child(request: dict[str, Any]) -> None:
    """In the forked child: become a worker. Never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.close(null_fd)
        env: dict[str, str] = request["env"]
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = None  # this worker's TMPDIR, not the folder the zygote may have looked up and kept
        env_spec = json.loads(env["MODELHOST_WORKER_SPEC"])
        env_spec["forked"] = True
        os.environ["MODELHOST_WORKER_SPEC"] = json.dumps(env_spec)
        _reseed()
        _set_threads(int(env_spec.get("threads") or 1))
        from modelhost.worker.__main__ import main

        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - report, then exit: a forked child must never return to the zygote loop
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with_flush()
        os._exit(code)


def _reseed() -> None:
    """Fresh random state per worker (forked children would otherwise share the zygote's): Python's ``random``
    (also reseeded by its own fork hook) and numpy's global generator when loaded, from the OS, as in a spawned
    worker. torch keeps its fixed default seed, as a spawned worker does."""
    import random

    random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _set_threads(threads: int) -> None:
    """The worker's thread budget. The libraries the zygote loaded read the thread variables when they were
    loaded, with 1: torch is told directly, and the BLAS/OpenMP pools through threadpoolctl when more than one
    thread is wanted. Libraries imported in the child (onnxruntime) read the child's environment; ctranslate2 and
    llama.cpp take the count from the backend."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    if threads > 1:
        with contextlib.suppress(Exception):
            from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # no stubs

            threadpool_limits(limits=threads)


def with_flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def serve(socket_path: str, backend: str, parent: int | None = None) -> None:
    """Preload, then fork workers on request until SIGTERM or until ``parent`` (the coordinator's pid; default: the
    parent at start) is no longer this process's parent — also when it died before this function began, which
    ``getppid()`` read here alone would miss (the zygote would then wait for ever, re-parented to init)."""
    if parent is None:
        parent = os.getppid()
    if os.getppid() != parent:
        return
    for var in THREAD_VARS:  # before any import: OpenBLAS would start its threads at numpy's import
        os.environ[var] = "1"
    os.environ.update(ZYGOTE_ENV)
    started = time.perf_counter()
    imported = preload(backend)
    threads = thread_names()
    if len(threads) > 1:
        sys.stderr.write(
            f"zygote pid={os.getpid()} for {backend} cannot fork safely: {len(threads)} threads "
            f"({', '.join(sorted(threads))}) after importing {', '.join(imported)}; its models are plain-spawned\n"
        )
        sys.stderr.flush()
        os._exit(EXIT_NOT_FORKABLE)
    sys.stderr.write(
        f"zygote pid={os.getpid()} for {backend}: imported {', '.join(imported)} in "
        f"{time.perf_counter() - started:.2f} s\n"
    )
    sys.stderr.flush()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = socket_path + ".tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    listener.bind(tmp)
    os.chmod(tmp, 0o600)
    listener.listen(16)
    os.replace(tmp, socket_path)  # appears only once listening: the coordinator's readiness signal
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    children: dict[int, socket.socket] = {}
    buffers: dict[socket.socket, bytes] = {}
    while not stopping and os.getppid() == parent:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "wake":
                with_suppress(lambda: os.read(wake_r, 512))
                _reap(children)
            elif key.data == "accept":
                conn, _addr = listener.accept()
                buffers[conn] = b""
                sel.register(conn, selectors.EVENT_READ, "conn")
            else:
                conn = key.fileobj  # type: ignore[assignment]
                assert isinstance(conn, socket.socket)
                try:
                    chunk = conn.recv(1 << 20)
                except OSError:
                    chunk = b""
                if not chunk:  # the coordinator hung up: it no longer wants this child's exit code
                    sel.unregister(conn)
                    buffers.pop(conn, None)
                    for pid, c in list(children.items()):
                        if c is conn:
                            children[pid] = None  # type: ignore[assignment]
                    conn.close()
                    continue
                if conn not in buffers:  # one request per connection; anything after it is ignored
                    continue
                buffers[conn] += chunk
                if b"\n" not in buffers[conn]:
                    continue
                line = buffers.pop(conn).split(b"\n", 1)[0]
                try:
                    request = json.loads(line)
                except ValueError:
                    sel.unregister(conn)
                    conn.close()
                    continue
                if _wants_gpu(request) and cuda_initialized():
                    reason = "CUDA is initialized in the zygote (a library initialized it at import)"
                    with_suppress(lambda c=conn, r=reason: c.sendall(json.dumps({"refused": r}).encode() + b"\n"))
                    continue
                pid = os.fork()
                if pid == 0:  # the child keeps no descriptor of the zygote's (a dead zygote must read as EOF)
                    for fileobj in [k.fileobj for k in sel.get_map().values()]:
                        if isinstance(fileobj, int):
                            os.close(fileobj)
                        else:
                            fileobj.close()  # type: ignore[attr-defined]
                    sel.close()
                    os.close(wake_w)
                    _run_child(request)
                children[pid] = conn
                with_suppress(lambda c=conn, p=pid: c.sendall(json.dumps({"pid": p}).encode() + b"\n"))
        _reap(children)
    with_suppress(lambda: os.unlink(socket_path))


def _reap(children: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            code = _exit_code(status)
            with_suppress(lambda c=conn, x=code: c.sendall(json.dumps({"exit": x}).encode() + b"\n"))


def with_suppress(fn: Any) -> None:
    with contextlib.suppress(OSError):
        fn()


def main() -> None:
    if len(sys.argv) not in (3, 4) or (len(sys.argv) == 4 and not sys.argv[3].isdigit()):
        sys.stderr.write(
            "usage: python -m modelhost.worker.zygote SOCKET BACKEND [PARENT_PID] (started by the coordinator)\n"
        )
        raise SystemExit(2)
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else None)


if __name__ == "__main__":
    main()
