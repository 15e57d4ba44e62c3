"""``create_app(settings)``: the FastAPI application; its lifespan owns the database, catalog and coordinator."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

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
from modelhost.api.routes.embeddings import PATH, EmbeddingsFastPath, is_json
from modelhost.api.upload_limit import UploadLimitMiddleware
from modelhost.config import Settings
from modelhost.metrics import Metrics
from modelhost.storage.files import use_process_temp_dir
from modelhost.web import mount_dashboard

log = logging.getLogger(__name__)


class ModelhostApp(FastAPI):
    """FastAPI, plus one hot path: ``POST /v1/embeddings`` with a JSON body goes straight into a short chain —
    ``hot_path(fallback)``: the same metrics, access and body-limit middleware as every request, then the lean
    route (``EmbeddingsFastPath``) — instead of through Starlette's error middleware, every middleware and the
    router. ``fallback`` is the application below its middleware (exception handlers, router), behind its own
    error middleware: a body the lean route does not take reaches the FastAPI route there, answered as before,
    without passing the middleware twice. Everything else takes the usual way."""

    hot_path: Callable[[ASGIApp], ASGIApp] | None = None
    _hot: ASGIApp | None = None
    _telemetry_on = False
    _telemetry_checked = -1e9

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if self.hot_path is not None:
            inner = stack
            while not isinstance(inner, ExceptionMiddleware):  # below the user middleware
                inner = inner.app  # type: ignore[attr-defined]  # every middleware keeps the app it wraps
            assert isinstance(stack, ServerErrorMiddleware)
            self._hot = self.hot_path(ServerErrorMiddleware(inner, handler=stack.handler, debug=stack.debug))
        return stack

    def _telemetry_enabled(self) -> bool:
        """Whether FastAPI's OpenTelemetry instrumentation is on (it wraps the whole stack: the usual way then).
        Asked at most once a second (its answer reads the environment: ~5 µs); providers are set once per process."""
        now = time.monotonic()
        if now - self._telemetry_checked >= 1.0:
            telemetry = getattr(self, "_native_telemetry", None)  # FastAPI ≥ 0.16x; older versions have none
            self._telemetry_on = telemetry is not None and bool(telemetry.enabled())
            self._telemetry_checked = now
        return self._telemetry_on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST" and is_json(scope):
            if self.middleware_stack is None:
                self.middleware_stack = self.build_middleware_stack()
            if self._hot is not None and not self.root_path and not self._telemetry_enabled():
                scope["app"] = self
                await self._hot(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, metrics)
        await services.coordinator.start()  # (its worker sockets stay in the short system path: before the switch)
        restore_temp_dir = use_process_temp_dir(settings.data_dir)
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
            restore_temp_dir()

    app = ModelhostApp(
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
    policy = AccessPolicy.from_settings(settings)
    # Outermost first: metrics see every answer, auth runs before the body is read.
    app.add_middleware(UploadLimitMiddleware, limit=settings.max_concurrent_uploads)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(AccessMiddleware, policy=policy)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # The embeddings hot path: the same middleware (the same metrics and access policy), then the lean route, whose
    # requests it cannot take go on to the FastAPI route. No upload limit: it only takes JSON bodies.
    route = next(r for r in embeddings.router.routes if getattr(r, "path", "") == PATH)
    app.hot_path = lambda fallback: MetricsMiddleware(
        AccessMiddleware(
            BodyLimitMiddleware(EmbeddingsFastPath(fallback, route=route), limit=settings.max_request_bytes),
            policy=policy,
        ),
        metrics=metrics,
    )
    return app
