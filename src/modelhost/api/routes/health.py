"""``GET /api/health`` and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import os
import sys
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import modelhost
from modelhost.api.deps import ServicesDep
from modelhost.cluster.router import cluster_nodes

router = APIRouter(tags=["health"])

#: Libraries the serve process must never load (DESIGN rule 1); reported so anyone can check.
ML_MODULES = (
    "torch",
    "transformers",
    "sentence_transformers",
    "onnxruntime",
    "ctranslate2",
    "faster_whisper",
    "llama_cpp",
    "tokenizers",
    "numpy",
    "modelhost.backends",
)


#: Modules allowed only because a light client the serve process uses needs them: numpy comes with qdrant-client
#: (speaker voiceprints, imported on first use of a speaker route or a meeting job; docs/architecture.md).
ALLOWED_WITH = {"numpy": "qdrant_client"}


def loaded_ml_modules() -> list[str]:
    return sorted(
        name for name in ML_MODULES if name in sys.modules and ALLOWED_WITH.get(name, "\0") not in sys.modules
    )


@router.get("/api/health", summary="Server and worker status")
async def health(services: ServicesDep) -> dict[str, Any]:
    coordinator = services.coordinator
    nodes = await cluster_nodes(coordinator)
    return {
        "status": "ok",
        "version": modelhost.__version__,
        "pid": os.getpid(),
        "workers": coordinator.workers(),
        "zygotes": coordinator.zygotes(),
        "gpu_lock": coordinator.gpu_lock(),
        "gpu_policy": services.runtime.current.gpu_policy,
        "queue_depth": coordinator.queue_depths(),
        # Memory admission: RAM budget and use (workers + zygotes), GPUs, and the loads waiting for room, in order.
        "memory": coordinator.memory(),
        "ml_modules_loaded": loaded_ml_modules(),
        # With MODELHOST_BROKER_URL: the live `modelhost node` processes (queues, models, workers, queue depths).
        **({"nodes": nodes} if nodes is not None else {}),
    }


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
