"""Dependencies: typed access to the app's shared objects (aliases end in ``Dep``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from modelhost.api.services import Services
from modelhost.catalog.models import Catalog
from modelhost.coordinator.coordinator import Coordinator
from modelhost.runtime_settings import RuntimeSettingsStore


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_catalog(request: Request) -> Catalog:
    return get_services(request).catalog


def get_coordinator(request: Request) -> Coordinator:
    return get_services(request).coordinator


def get_runtime(request: Request) -> RuntimeSettingsStore:
    return get_services(request).runtime


ServicesDep = Annotated[Services, Depends(get_services)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]
RuntimeDep = Annotated[RuntimeSettingsStore, Depends(get_runtime)]
