"""The web dashboard: static files served from the package at ``/`` (page) and ``/ui/`` (scripts, styles).

It is a small vanilla-JavaScript app (no build step, nothing from a CDN) that talks only to the public API with
the key the user typed, so everything it does a script can do too. ``GET /api/session`` tells it which role its
key (or, on loopback without keys, its address) has, so admin-only controls can be hidden.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from modelhost.api.deps import ServicesDep

STATIC = files("modelhost.web") / "static"
ASSETS_PREFIX = "/ui"
#: The page may load only its own scripts, styles and media (artifacts are played from blob: URLs it fetched).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
async def dashboard() -> HTMLResponse:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.get("/api/session", summary="Who the caller is: role of its key (or loopback address) and whether keys are set")
async def session(request: Request, services: ServicesDep) -> dict[str, Any]:
    settings = services.settings
    keys_required = bool(settings.admin_key_values() or settings.api_key_values())
    role = request.scope.get("state", {}).get("auth_role", "inference")
    return {"role": role, "keys_required": keys_required}


def mount_dashboard(app: FastAPI) -> None:
    """Add the dashboard page, its session probe and its static assets to ``app``."""
    app.include_router(router)
    app.mount(ASSETS_PREFIX, StaticFiles(directory=str(STATIC)), name="dashboard-assets")
