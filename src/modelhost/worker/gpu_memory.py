"""A worker's own GPU memory, for ``GET /info`` (read by the coordinator's memory admission).

Per process through ``nvidia-smi`` (what the driver really holds, CUDA context included); when that is missing, what
torch reserved. Imports torch only when the backend already did, and never initialises CUDA itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any


def gpu_memory(device: str) -> dict[str, Any] | None:
    """``{"device", "bytes", "peak_bytes", "total_bytes", "source"}`` for ``device`` (``cuda``/``cuda:N``); None when
    the worker is not on a GPU or nothing can measure it."""
    if not device.startswith("cuda"):
        return None
    index = int(device.partition(":")[2] or 0)
    used = total = reserved = peak_reserved = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        reserved = int(torch.cuda.memory_reserved(index))
        peak_reserved = int(torch.cuda.max_memory_reserved(index))
        total = int(torch.cuda.mem_get_info(index)[1])
    smi_used, smi_total = _nvidia_smi(index) or (None, None)
    total = total or smi_total
    source = "torch"
    if smi_used is not None:
        used, source = smi_used, "nvidia-smi"
    elif reserved is not None:  # e.g. in a container whose pids nvidia-smi does not show: no CUDA context counted
        used = reserved
    if used is None:
        return None
    # The peak: what the driver holds now plus how far torch's cache once stood above where it stands now.
    peak = used + max(0, (peak_reserved or 0) - (reserved or 0))
    return {"device": f"cuda:{index}", "bytes": used, "peak_bytes": peak, "total_bytes": total, "source": source}


def _nvidia_smi(index: int) -> tuple[int | None, int | None] | None:
    """(this process's memory on GPU ``index``, the GPU's total) in bytes, from ``nvidia-smi``; the first is None
    when this pid is not listed."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        gpus = subprocess.run(
            [exe, "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        apps = subprocess.run(
            [exe, "--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    uuid, total = None, None
    for line in gpus.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0] == str(index):
            uuid, total = parts[1], int(parts[2]) * 2**20
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible and visible.split(",")[0].strip().isdigit():  # cuda:N is the Nth visible device
        wanted = visible.split(",")[index].strip() if index < len(visible.split(",")) else None
        for line in gpus.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[0] == wanted:
                uuid, total = parts[1], int(parts[2]) * 2**20
    pid = str(os.getpid())
    for line in apps.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0] == pid and (uuid is None or parts[1] == uuid):
            try:
                return int(parts[2]) * 2**20, total
            except ValueError:
                return None
    return None, total
