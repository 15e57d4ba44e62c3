"""Typed errors of the serve process. Each carries its HTTP status and the fields of the error envelope.

Routes, the coordinator and the catalog raise these; ``modelhost.api.errors`` turns every one of them (and
every validation or unexpected error) into ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from typing import Any


class ModelhostError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ModelhostError):
    status_code = 400
    error_type = "invalid_request_error"


class ValidationFailed(InvalidRequest):
    status_code = 422


class Unauthorized(ModelhostError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ModelhostError):
    status_code = 404
    error_type = "not_found_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(ModelhostError):
    status_code = 409
    error_type = "conflict_error"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(InvalidRequest):
    status_code = 415
    code = "unsupported_media_type"


class QueueFull(ModelhostError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "queue_full"


class ModelUnavailable(ModelhostError):
    """The model's worker could not be started (yet): 503, with Retry-After when retrying may help
    (``retry_after=None`` for a permanent failure such as a missing package or path)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "model_unavailable"

    def __init__(self, message: str, *, retry_after: int | None = 5, code: str | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        super().__init__(message, code=code, headers=headers)


class WorkerCrashed(ModelhostError):
    status_code = 502
    error_type = "worker_error"
    code = "worker_crashed"


class InferenceTimeout(ModelhostError):
    status_code = 504
    error_type = "timeout_error"
    code = "inference_timeout"


class WorkerFailed(ModelhostError):
    """The backend raised an unexpected error while serving a valid request."""

    status_code = 500
    error_type = "worker_error"
    code = "inference_failed"


def from_worker_error(status: int, error: dict[str, Any]) -> ModelhostError:
    """Re-raise an error envelope returned by a worker as the matching typed error."""
    message = str(error.get("message") or "worker error")
    param = error.get("param")
    code = error.get("code")
    classes: dict[int, type[ModelhostError]] = {
        400: InvalidRequest,
        404: NotFound,
        413: PayloadTooLarge,
        415: UnsupportedMediaType,
        422: ValidationFailed,
    }
    cls = classes.get(status, WorkerFailed)
    return cls(message, param=param if isinstance(param, str) else None, code=code if isinstance(code, str) else None)
