"""Worker processes: list them, warm one up, stop one (its memory is freed; it respawns on next use)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import error_responses
from modelhost.errors import NotFound

router = APIRouter(tags=["workers"])


class WarmUp(BaseModel):
    """The optional body of ``POST /v1/workers/{model}``."""

    wait: bool = Field(True, description="answer once the worker is ready (false: answer at once, load on)")


@router.get("/v1/workers", summary="Running workers (and the zygotes that fork them)")
async def list_workers(coordinator: CoordinatorDep) -> dict[str, Any]:
    return {"object": "list", "data": coordinator.workers(), "zygotes": coordinator.zygotes()}


@router.get("/v1/workers/{model_id:path}/info", summary="A worker's own report", responses=error_responses(404))
async def worker_info(model_id: str, coordinator: CoordinatorDep) -> dict[str, Any]:
    info = await coordinator.worker_info(model_id)
    if info is None:
        raise NotFound(f"no running worker for model {model_id!r}", param="model_id", code="worker_not_running")
    return info


@router.post(
    "/v1/workers/{model_id:path}",
    summary="Warm up a model: start its worker now, before the first request",
    responses=error_responses(400, 403, 404, 502, 503, 504),
)
async def warm_up_worker(
    model_id: str, catalog: CatalogDep, coordinator: CoordinatorDep, body: WarmUp | None = Body(None)
) -> dict[str, Any]:
    wait = body.wait if body is not None else True
    return await coordinator.warm_up(catalog.get_or_raise(model_id), wait=wait)


@router.delete("/v1/workers/{model_id:path}", summary="Stop a model's worker", responses=error_responses(403, 404))
async def stop_worker(model_id: str, coordinator: CoordinatorDep) -> dict[str, Any]:
    if not await coordinator.stop_worker(model_id):
        raise NotFound(f"no running worker for model {model_id!r}", param="model_id", code="worker_not_running")
    return {"model": model_id, "stopped": True}
