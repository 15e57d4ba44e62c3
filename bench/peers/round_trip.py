"""The machine's part of the floor: a message from a client over TCP to a relay process, over a Unix socket to an
echo process, and back — the same four wake-ups as one request through an HTTP front and a model process, with no
HTTP, no event loop and no Python beyond a blocking ``recv``/``sendall`` loop.

Run by ``bench/bench_embeddings.py`` (``round_trip()``); ``python bench/peers/round_trip.py echo PATH`` and
``... relay PORT PATH`` are its two processes.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def echo(path: str) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    conn, _ = server.accept()
    while data := conn.recv(65536):
        conn.sendall(data)


def relay(port: int, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX)
    upstream.connect(path)
    server = socket.create_server(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(65536):
        upstream.sendall(data)
        conn.sendall(upstream.recv(65536))


def round_trip(port: int, requests: int = 3000, size: int = 300) -> tuple[float, float]:
    """p50 and p90 seconds of one ``size``-byte message through the relay and the echo and back (their processes
    started and stopped here; ``port`` a free TCP port)."""
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "echo.sock")
        processes = [subprocess.Popen([sys.executable, __file__, "echo", path])]
        try:
            while not Path(path).exists():
                time.sleep(0.01)
            processes.append(subprocess.Popen([sys.executable, __file__, "relay", str(port), path]))
            deadline = time.monotonic() + 30
            while True:
                try:
                    client = socket.create_connection(("127.0.0.1", port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            message, times = b"x" * size, []
            for i in range(requests + 200):  # the first 200 warm up
                t = time.perf_counter()
                client.sendall(message)
                received = 0
                while received < size:
                    received += len(client.recv(65536))
                if i >= 200:
                    times.append(time.perf_counter() - t)
            client.close()
        finally:
            for process in processes:
                process.kill()
                process.wait()
    times.sort()
    return statistics.median(times), times[int(0.9 * len(times))]


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(sys.argv[2])
    else:
        relay(int(sys.argv[2]), sys.argv[3])
