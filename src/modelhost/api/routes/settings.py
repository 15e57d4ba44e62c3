"""Runtime settings: ``GET/PATCH /v1/settings``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body
from fastapi.concurrency import run_in_threadpool

from modelhost.api.deps import RuntimeDep
from modelhost.api.errors import error_responses
from modelhost.errors import InvalidRequest
from modelhost.runtime_settings import RuntimeSettings

router = APIRouter(tags=["settings"])


def _describe() -> dict[str, Any]:
    return {name: field.description for name, field in RuntimeSettings.model_fields.items()}


@router.get("/v1/settings", summary="Current runtime settings")
async def get_settings(runtime: RuntimeDep) -> dict[str, Any]:
    return {"settings": runtime.current.model_dump(), "descriptions": _describe()}


@router.patch(
    "/v1/settings", summary="Change runtime settings (effective at once)", responses=error_responses(400, 403)
)
async def patch_settings(
    runtime: RuntimeDep, changes: Any = Body(..., examples=[{"worker_idle_timeout_seconds": 30}])
) -> dict[str, Any]:
    if not isinstance(changes, dict) or not changes:
        raise InvalidRequest("body must be a non-empty JSON object of settings to change", code="invalid_setting")
    updated = await run_in_threadpool(runtime.update, changes)
    return {"settings": updated.model_dump(), "descriptions": _describe()}
