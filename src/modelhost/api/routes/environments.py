"""Python environments as the server sees them (admin only: the answer names paths on the server).

Environments are created by ``modelhost envs create`` on the server's machine, under the server's data dir; the
CLI asks this route where that is, so that it never creates an environment the server cannot see.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from modelhost.api.deps import ServicesDep
from modelhost.api.errors import error_responses

router = APIRouter(tags=["environments"])


@router.get(
    "/v1/environments", summary="Python environments and where the server keeps them", responses=error_responses(403)
)
async def list_environments(services: ServicesDep) -> dict[str, Any]:
    envs = await run_in_threadpool(services.envs.list)
    return {
        "object": "list",
        "data_dir": str(services.settings.data_dir.resolve()),
        "envs_dir": str(services.envs.envs_dir.resolve()),
        "data": [asdict(e) for e in envs],
    }
