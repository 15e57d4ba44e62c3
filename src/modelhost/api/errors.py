"""One place that maps every failure to the error envelope ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelhost.errors import ModelhostError

log = logging.getLogger(__name__)

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the statuses it may answer with, all in the envelope."""
    return {s: {"description": "error", "content": {"application/json": {"schema": ERROR_SCHEMA}}} for s in statuses}


def envelope(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    parts = list(first.get("loc", ()))
    if parts and parts[0] in ("body", "query", "path", "form", "header", "cookie"):
        parts = parts[1:]  # where the value was; only the first item (a body field may be named "query")
    loc = [str(p) for p in parts if not _is_type_tag(p)]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if first.get("type") == "missing":
        return f"missing required parameter {param!r}", param
    extra = f" ({len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{param}: {msg}" if param else msg) + extra, param


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "bytes"}


def _is_type_tag(part: object) -> bool:
    """Pydantic names the union member in an error's location (``input.list[str].0``): not a parameter."""
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or part.startswith(("function-", "literal")))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelhostError)
    async def _modelhost_error(_request: Request, exc: ModelhostError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return JSONResponse(exc.envelope(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(envelope(message, "invalid_request_error", param, "invalid_parameter"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            envelope(str(exc.detail), error_type),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    async def _database_unavailable(_request: Request, exc: sqlalchemy.exc.OperationalError) -> JSONResponse:
        # The database went away (PostgreSQL restarting, network): a clear 503, not an internal error.
        log.warning("database unavailable: %s", str(exc.orig or exc).splitlines()[0])
        message = "the database is unavailable; retry shortly"
        body = envelope(message, "service_unavailable", None, "database_unavailable")
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(envelope(f"internal error: {type(exc).__name__}", "server_error"), status_code=500)
