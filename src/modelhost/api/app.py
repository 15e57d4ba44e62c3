"""``create_app(settings)``: the FastAPI application; its lifespan owns the database, catalog and coordinator."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import modelhost
from modelhost.api.errors import install_error_handlers
from modelhost.api.middleware import ApiKeyMiddleware, BodyLimitMiddleware, MetricsMiddleware
from modelhost.api.routes import audio, completions, embeddings, health, images, models, ocr, rerank, workers
from modelhost.api.routes import settings as settings_routes
from modelhost.api.services import build_services
from modelhost.api.upload_limit import UploadLimitMiddleware
from modelhost.config import Settings
from modelhost.metrics import Metrics

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, metrics)
        await services.coordinator.start()
        app.state.services = services
        log.info(
            "modelhost %s ready: %d models in the catalog",
            modelhost.__version__,
            len(services.catalog.list()),
        )
        try:
            yield
        finally:
            await services.coordinator.stop()
            services.engine.dispose()

    app = FastAPI(
        title="modelhost",
        version=modelhost.__version__,
        summary="Many models, one HTTP API, one worker process per model.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in (
        audio.router,
        completions.router,
        images.router,
        embeddings.router,
        ocr.router,
        rerank.router,
        models.router,
        settings_routes.router,
        workers.router,
        health.router,
    ):
        app.include_router(router)
    # Outermost first: metrics see every answer, auth runs before the body is read.
    app.add_middleware(UploadLimitMiddleware, limit=settings.max_concurrent_uploads)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_key_values())
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
