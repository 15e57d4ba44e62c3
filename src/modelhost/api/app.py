"""``create_app(settings)``: the FastAPI application; its lifespan owns the database, catalog and coordinator."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import modelhost
from modelhost.api.access import AccessMiddleware, AccessPolicy
from modelhost.api.composition import build_services
from modelhost.api.docs import install_docs
from modelhost.api.errors import install_error_handlers, without_validation_422
from modelhost.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from modelhost.api.routes import (
    audio,
    completions,
    embeddings,
    environments,
    health,
    images,
    meetings,
    models,
    ocr,
    presentations,
    rerank,
    speakers,
    voices,
    workers,
)
from modelhost.api.routes import jobs as jobs_routes
from modelhost.api.routes import settings as settings_routes
from modelhost.api.routes.embeddings import PATH, EmbeddingsFastPath
from modelhost.api.upload_limit import UploadLimitMiddleware
from modelhost.config import Settings
from modelhost.metrics import Metrics
from modelhost.web import mount_dashboard

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, metrics)
        await services.coordinator.start()
        app.state.services = services
        await services.jobs.start()
        if settings.local_workers:  # a front with no local workers starts no zygotes
            services.coordinator.supervisor.track(services.coordinator.prestart_pinned(services.catalog.list()))
        log.info(
            "modelhost %s ready: %d models in the catalog",
            modelhost.__version__,
            len(services.catalog.list()),
        )
        try:
            yield
        finally:
            await services.jobs.stop()
            await services.coordinator.stop()
            services.speakers.index.close()
            services.engine.dispose()

    app = FastAPI(
        title="modelhost",
        version=modelhost.__version__,
        summary="Many models, one HTTP API, one worker process per model.",
        lifespan=lifespan,
        docs_url=None,  # served from the package by install_docs, not from a CDN
        redoc_url=None,
    )
    install_docs(app)
    install_error_handlers(app)
    build_openapi = app.openapi
    app.openapi = lambda: without_validation_422(build_openapi())  # type: ignore[method-assign]  # FastAPI's hook
    for router in (
        audio.router,
        voices.router,
        completions.router,
        images.router,
        embeddings.router,
        ocr.router,
        rerank.router,
        models.router,
        settings_routes.router,
        workers.router,
        environments.router,
        health.router,
        meetings.router,  # before the jobs router: POST /v1/jobs/meeting-transcription
        presentations.router,  # likewise: POST /v1/jobs/presentation-video
        speakers.router,
        jobs_routes.router,
    ):
        app.include_router(router)
    mount_dashboard(app)
    # Innermost: the embeddings route's lean path, behind everything below (its route labels the metrics).
    app.add_middleware(
        EmbeddingsFastPath, route=next(r for r in embeddings.router.routes if getattr(r, "path", "") == PATH)
    )
    # Outermost first: metrics see every answer, auth runs before the body is read.
    app.add_middleware(UploadLimitMiddleware, limit=settings.max_concurrent_uploads)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(AccessMiddleware, policy=AccessPolicy.from_settings(settings))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
