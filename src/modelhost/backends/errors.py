"""The two errors a backend raises on purpose. Standard library only: the worker protocol carries them.

* ``BadInput`` — the request cannot be served as sent (4xx, by default 400): an unknown voice, a prompt longer
  than the context, an image that does not decode.
* ``BackendFault`` — the server cannot serve it (5xx, by default 503): a model package or file missing, a
  system tool not installed. Not the caller's fault; the message says what to install or fix.

Anything else a backend raises is a bug: answered 500 ``inference_failed`` and logged with its traceback.
"""

from __future__ import annotations


class BackendError(Exception):
    status: int = 400
    error_type: str = "invalid_request_error"
    default_code: str = "invalid_input"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        if status is not None:
            self.status = status


class BadInput(BackendError):
    """The request cannot be served as sent: a 4xx (``status``, 400 by default)."""


class BackendFault(BackendError):
    """The server cannot serve the request (missing package, file or tool): a 5xx (``status``, 503 by default)."""

    status = 503
    error_type = "service_unavailable"
    default_code = "backend_fault"
