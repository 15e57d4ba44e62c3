"""The model catalog: ``GET /v1/models`` in OpenAI's shape, plus native create/update/delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import error_responses
from modelhost.catalog.aliases import aliases_of
from modelhost.catalog.registry import BUILTIN_BACKENDS, TASKS
from modelhost.catalog.schemas import ModelCreate, ModelEntry, ModelUpdate
from modelhost.catalog.secrets import redact_options, redact_url

router = APIRouter(tags=["models"])


def model_object(entry: ModelEntry) -> dict[str, Any]:
    """An entry in OpenAI's model shape plus our fields; secrets in options and source URLs shown as ``***``."""
    created = int(entry.created_at.timestamp()) if entry.created_at else 0
    fields = entry.model_dump(mode="json", exclude={"id", "created_at"})
    fields["options"] = redact_options(fields["options"])
    fields["source"] = redact_url(fields["source"])
    return {
        "id": entry.id,
        "object": "model",
        "created": created,
        "owned_by": "modelhost" if entry.builtin else "user",
        **fields,
    }


@router.get("/v1/models", summary="List models (OpenAI-compatible)")
async def list_models(
    catalog: CatalogDep, task: str | None = Query(None, description="only this task")
) -> dict[str, Any]:
    data = [model_object(e) for e in catalog.list(task)]
    for alias, entry in aliases_of(catalog).items():  # OpenAI names, served by the same entry (and worker)
        if task is None or entry.task == task:
            data.append({**model_object(entry), "id": alias, "alias_of": entry.id})
    return {"object": "list", "data": data}


@router.get("/v1/backends", summary="Built-in backends and tasks")
async def list_backends() -> dict[str, Any]:
    return {
        "tasks": list(TASKS),
        "backends": [
            {"name": b.name, "tasks": list(b.tasks), "extra": b.extra, "description": b.description}
            for b in BUILTIN_BACKENDS.values()
        ],
    }


@router.get("/v1/models/{model_id:path}", summary="Retrieve a model", responses=error_responses(404))
async def get_model(model_id: str, catalog: CatalogDep) -> dict[str, Any]:
    alias = aliases_of(catalog).get(model_id)
    if alias is not None:
        return {**model_object(alias), "id": model_id, "alias_of": alias.id}
    return model_object(catalog.get_or_raise(model_id))


@router.post("/v1/models", status_code=201, summary="Add a model", responses=error_responses(400, 403, 409))
async def create_model(body: ModelCreate, catalog: CatalogDep) -> dict[str, Any]:
    return model_object(await run_in_threadpool(catalog.create, body))


@router.patch("/v1/models/{model_id:path}", summary="Change a model", responses=error_responses(400, 403, 404))
async def update_model(model_id: str, body: ModelUpdate, catalog: CatalogDep) -> dict[str, Any]:
    return model_object(await run_in_threadpool(catalog.update, model_id, body))


@router.delete("/v1/models/{model_id:path}", summary="Remove a model", responses=error_responses(403, 404, 409))
async def delete_model(model_id: str, catalog: CatalogDep, coordinator: CoordinatorDep) -> dict[str, Any]:
    await run_in_threadpool(catalog.delete, model_id)
    await coordinator.stop_worker(model_id)
    return {"id": model_id, "object": "model", "deleted": True}
