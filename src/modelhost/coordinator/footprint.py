"""How much memory a model's worker needs to load: its last measured peak, else an estimate.

The estimate (before a model's first load) is the size of its weight files plus a per-backend base for the
interpreter and libraries; ``memory_estimate_mb`` in the catalog overrides it. Runs in the serve process: it reads
file sizes only (``importlib.util.find_spec`` locates a ``package:`` source without importing it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

from modelhost.catalog.registry import backend_reference
from modelhost.catalog.schemas import ModelEntry

MiB = 2**20
#: Resident memory of a loaded worker before its weights: Python, the backend's libraries, runtime buffers.
BACKEND_BASE_MB = {
    "sentence-transformers": 450,
    "bi-encoder": 450,
    "cross-encoder": 450,
    "transformers": 600,
    "caption-transformers": 600,
    "resemblyzer": 400,
    "builtin-diarizer": 450,
    "pyannote": 700,
    "hibari": 500,
    "openvoice": 700,
    "faster-whisper": 250,
    "onnx": 150,
    "rapidocr": 200,
    "silero-vad": 150,
    "llama-cpp": 120,
}
DEFAULT_BASE_MB = 300
#: GPU memory a process holds before its weights (CUDA context, cuBLAS/cuDNN workspaces).
GPU_CONTEXT_MB = 600


def weights_bytes(source: str) -> int:
    """Total size of the files a source names (0 when it names no local files: a hub id, a program, a voice)."""
    path: Path | None = None
    if source.startswith("package:"):
        module, _, sub = source.removeprefix("package:").partition("/")
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(module)
            if spec is not None and spec.submodule_search_locations:
                path = Path(next(iter(spec.submodule_search_locations))) / sub
    else:
        path = Path(source).expanduser()
    if path is None or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def ram_need_bytes(model: ModelEntry) -> int:
    """System RAM a load of ``model`` needs: the last measured peak, else the catalog estimate, else a guess."""
    if model.memory_peak_mb or model.memory_measured_mb:
        return int(max(model.memory_peak_mb or 0, model.memory_measured_mb or 0) * MiB)
    if model.memory_estimate_mb is not None and not model.uses_gpu:
        return model.memory_estimate_mb * MiB
    base = BACKEND_BASE_MB.get(model.backend, DEFAULT_BASE_MB) * MiB
    return base + (0 if model.uses_gpu else weights_bytes(model.source))


def zygote_estimate_bytes(backend: str) -> int:
    """System RAM a zygote of ``backend`` (a catalog backend name or its ``module:Class`` reference) is expected to
    hold once its imports are done, before it was ever measured: the backend's base (its libraries)."""
    mb = BACKEND_BASE_MB.get(backend)
    if mb is None:
        mb = next((v for name, v in BACKEND_BASE_MB.items() if backend_reference(name) == backend), DEFAULT_BASE_MB)
    return mb * MiB


def gpu_need_bytes(model: ModelEntry) -> int:
    """GPU memory a load of ``model`` needs on its device (0 for a CPU model)."""
    if not model.uses_gpu:
        return 0
    if model.gpu_memory_peak_mb or model.gpu_memory_measured_mb:
        return int(max(model.gpu_memory_peak_mb or 0, model.gpu_memory_measured_mb or 0) * MiB)
    if model.memory_estimate_mb is not None:
        return model.memory_estimate_mb * MiB
    return GPU_CONTEXT_MB * MiB + int(weights_bytes(model.source) * 1.2)


def device_key(device: str) -> str:
    """``cuda`` and ``cuda:0`` are one device."""
    return device if ":" in device else f"{device}:0"
