"""One place that maps every failure to the error envelope ``{"error": {message, type, param, code}}`` (built by
``modelhost.errors.error_envelope``). Validation errors are 400 (as OpenAI answers), every error has a ``code``."""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelhost.errors import ModelhostError, StorageFull, error_envelope, is_disk_full
from modelhost.schemas.base import describe_errors

log = logging.getLogger(__name__)

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "code": {"type": "string"},
            },
        }
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the statuses it may answer with, all in the envelope."""
    return {s: {"description": "error", "content": {"application/json": {"schema": ERROR_SCHEMA}}} for s in statuses}


#: What every inference route may answer besides 200 (validation, unknown model, limits, queue, worker trouble; 507:
#: no room left where the worker writes its temporary files).
INFERENCE_ERRORS = (400, 401, 404, 413, 429, 500, 502, 503, 504, 507)
#: The same, for routes that take an upload (415: a file that is not of a type the model reads; 507 also: no room left
#: on the server's disk to receive it).
UPLOAD_ERRORS = (400, 401, 404, 413, 415, 429, 500, 502, 503, 504, 507)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def without_validation_422(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 on every route with parameters; this server answers validation errors with 400."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    return schema


def modelhost_error_body(exc: ModelhostError) -> dict[str, Any]:
    """The envelope of a ``ModelhostError`` (answered with ``exc.status_code`` and ``exc.headers``)."""
    if exc.status_code >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return exc.envelope()


def unexpected_error_body(exc: Exception) -> dict[str, Any]:
    """The envelope of an unexpected exception (answered 500); the traceback goes to the log."""
    log.error("unhandled error", exc_info=exc)
    return error_envelope(f"internal error: {type(exc).__name__}", "server_error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelhostError)
    async def _modelhost_error(_request: Request, exc: ModelhostError) -> JSONResponse:
        return JSONResponse(modelhost_error_body(exc), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # 400, as OpenAI answers (its client raises BadRequestError), not FastAPI's 422.
        message, param, code = describe_errors(exc.errors())
        if code == "missing_parameter" and param == "file":
            message, code = "the 'file' field (multipart/form-data) is required", "missing_file"
        body = error_envelope(message, "invalid_request_error", param=param, code=code)
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if isinstance(cause, OSError) and is_disk_full(cause):
            # FastAPI answers any failure to read a form with 400; the form parser's spool (parts above 1 MiB, in
            # the process's temporary folder: ``use_process_temp_dir``) hitting a full disk is the server's trouble.
            full = StorageFull.in_folder(tempfile.gettempdir(), "the upload being received", cause.strerror)
            return await _modelhost_error(request, full)
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            error_envelope(str(exc.detail), error_type, code=code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    async def _database_unavailable(_request: Request, exc: sqlalchemy.exc.OperationalError) -> JSONResponse:
        # The database went away (PostgreSQL restarting, network): a clear 503, not an internal error.
        log.warning("database unavailable: %s", str(exc.orig or exc).splitlines()[0])
        message = "the database is unavailable; retry shortly"
        body = error_envelope(message, "service_unavailable", code="database_unavailable")
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, OSError) and is_disk_full(exc):  # a write no ``storage_full_in`` wraps: 507, not 500
            return await _modelhost_error(request, StorageFull.from_os_error(exc, "a file of the request"))
        return JSONResponse(unexpected_error_body(exc), status_code=500)
