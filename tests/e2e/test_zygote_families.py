"""Every built-in backend family of the cold-start benchmark gets a zygote that can fork: it imports its libraries
(never onnxruntime, whose import starts a thread) and is left with exactly one thread."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelhost.catalog.registry import backend_reference
from modelhost.worker.zygote import EXIT_NOT_FORKABLE, FORK_UNSAFE, preload_modules
from tests.support.server import REPO_ROOT

FAMILIES = ("sentence-transformers", "onnx", "faster-whisper", "hibari", "rapidocr", "llama-cpp")


@pytest.mark.parametrize("name", FAMILIES)
def test_the_zygote_of_each_family_preloads_with_one_thread(name: str, tmp_path: Path) -> None:
    backend = backend_reference(name)
    modules = preload_modules(backend)
    assert not [m for m in modules if m.split(".")[0] in FORK_UNSAFE]
    socket_path = tmp_path / "z.sock"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src") + os.pathsep + str(REPO_ROOT)}
    zygote = subprocess.Popen(
        [sys.executable, "-m", "modelhost.worker.zygote", str(socket_path), backend],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not socket_path.exists() and zygote.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert zygote.returncode != EXIT_NOT_FORKABLE
        assert socket_path.exists(), zygote.stdout.read() if zygote.stdout else ""
        assert len(os.listdir(f"/proc/{zygote.pid}/task")) == 1
    finally:
        zygote.terminate()
        output, _ = zygote.communicate(timeout=10)
    assert f"for {backend}: imported {', '.join(modules)} in " in output
