"""Dependencies: typed access to the app's shared objects (aliases end in ``Dep``).

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool, which cost a
thread hop each on every request (measured: a dozen hops per embeddings request before this).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from modelhost.api.composition import Services
from modelhost.catalog.store import Catalog
from modelhost.coordinator.coordinator import Coordinator
from modelhost.jobs.service import JobService
from modelhost.runtime_settings import RuntimeSettingsStore
from modelhost.speakers.directory import SpeakerDirectory


async def get_services(request: Request) -> Services:
    return _services(request)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_catalog(request: Request) -> Catalog:
    return _services(request).catalog


async def get_coordinator(request: Request) -> Coordinator:
    return _services(request).coordinator


async def get_runtime(request: Request) -> RuntimeSettingsStore:
    return _services(request).runtime


async def get_jobs(request: Request) -> JobService:
    return _services(request).jobs


async def get_speakers(request: Request) -> SpeakerDirectory:
    return _services(request).speakers


ServicesDep = Annotated[Services, Depends(get_services)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]
RuntimeDep = Annotated[RuntimeSettingsStore, Depends(get_runtime)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
SpeakersDep = Annotated[SpeakerDirectory, Depends(get_speakers)]
