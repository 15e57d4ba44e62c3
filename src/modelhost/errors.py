"""Typed errors of the serve process. Each carries its HTTP status and the fields of the error envelope.

Routes, the coordinator and the catalog raise these; ``modelhost.api.errors`` turns every one of them (and
every validation or unexpected error) into ``{"error": {"message", "type", "param", "code"}}``, built by
``error_envelope`` — the one builder of that shape, used by the serve process and by workers alike (this module
imports nothing but the standard library, so a worker can import it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

#: ``OSError`` numbers of a full disk and of a used-up quota (answered 507 ``storage_full``, see ``StorageFull``).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for want of space: a full disk or a used-up quota."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def tool_reports_disk_full(stderr: str) -> bool:
    """Whether a tool's error output (ffmpeg, soffice, pdftoppm) reports the same: the C library's words for it."""
    return any(os.strerror(number) in stderr for number in DISK_FULL)


#: An absolute path in a tool's words: the server's own temporary names, which mean nothing to a client.
_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s:'\",/]+/)*[^\s:'\",/]+")


def tool_reason(stderr: str, fallback: str, paths: Iterable[str | os.PathLike[str]] = ()) -> str:
    """What a tool's failure says, fit for a client: the last line of its error output (``fallback`` when there is
    none) without the server's paths. ffmpeg opens its line with the input's path (``/srv/data/tmp/uploads/…/upload-x:
    Invalid data found when processing input``): that prefix goes; ``paths`` (the tool's arguments: those that are
    absolute paths, which may hold spaces) and any other absolute path in the line become ``<file>``."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return fallback
    line = lines[-1]
    for path in sorted((os.fspath(p) for p in paths if os.path.isabs(p)), key=len, reverse=True):
        line = line.removeprefix(f"{path}: ").replace(path, "<file>")
    leading = _PATH.match(line)
    if leading is not None and line[leading.end() :].startswith(": "):
        line = line[leading.end() + 2 :]
    return _PATH.sub("<file>", line) or fallback


#: Less free space than this where a failed tool wrote means the disk was full, not the input broken.
NEARLY_FULL_BYTES = 1 << 20


def tool_failed_for_space(stderr: str, folder: str | os.PathLike[str]) -> bool:
    """Whether a tool that failed writing into ``folder`` did so for want of space: it says so, or the disk there is
    (nearly) full now — pdftoppm does not say it (libpng reports a write error, then pdftoppm crashes)."""
    if tool_reports_disk_full(stderr):
        return True
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < NEARLY_FULL_BYTES


def error_envelope(message: str, error_type: str, *, param: str | None = None, code: str) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``: every error answer of the server and its workers."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class ModelhostError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str = "internal_error"

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
        return error_envelope(self.message, self.error_type, param=self.param, code=self.code)


class InvalidRequest(ModelhostError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(ModelhostError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ModelhostError):
    """The caller is known but may not do this (an inference key on an admin route, a disabled feature)."""

    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class NotFound(ModelhostError):
    status_code = 404
    error_type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(ModelhostError):
    status_code = 409
    error_type = "conflict_error"
    code = "conflict"


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


class StorageFull(ModelhostError):
    """A local folder of the server (its data dir) has no space left (``ENOSPC``) or its quota is used up
    (``EDQUOT``): 507 Insufficient Storage, without Retry-After — it takes an operator to free space."""

    status_code = 507
    error_type = "service_unavailable"
    code = "storage_full"

    @classmethod
    def in_folder(cls, folder: str | os.PathLike[str], what: str, reason: str | None) -> StorageFull:
        """The one wording: ``no space left in <folder> for <what> (<reason>); free some space there``."""
        return cls(f"no space left in {folder} for {what} ({reason}); free some space there")

    @classmethod
    def from_os_error(cls, exc: OSError, what: str) -> StorageFull:
        """For a full-disk ``OSError`` that no ``storage_full_in`` caught: the folder is the file's when the error
        names it (``open``), else the process's temporary folder, where scratch files go (a failed ``write``)."""
        where = os.path.dirname(exc.filename) if isinstance(exc.filename, str) else tempfile.gettempdir()
        return cls.in_folder(where, what, exc.strerror)


@contextlib.contextmanager
def storage_full_in(folder: str | os.PathLike[str], what: str) -> Iterator[None]:
    """A full disk (or used-up quota) under ``folder`` while writing ``what`` → ``StorageFull`` (507) naming both;
    any other ``OSError`` passes. The caller removes its partial file (or writes into a temporary one it drops)."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise StorageFull.in_folder(folder, what, exc.strerror) from exc


class WorkerCrashed(ModelhostError):
    status_code = 502
    error_type = "worker_error"
    code = "worker_crashed"


class InferenceTimeout(ModelhostError):
    status_code = 504
    error_type = "timeout_error"
    code = "inference_timeout"


class BackendUnavailable(ModelhostError):
    """The backend lacks something to serve the request (a package, a file, a tool): 503 without Retry-After,
    since retrying does not help until an operator installs it."""

    status_code = 503
    error_type = "service_unavailable"
    code = "backend_fault"


class WorkerFailed(ModelhostError):
    """The backend raised an unexpected error while serving a valid request."""

    status_code = 500
    error_type = "worker_error"
    code = "inference_failed"


class RangeNotSatisfiable(InvalidRequest):
    status_code = 416
    code = "range_not_satisfiable"


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
        422: InvalidRequest,
        503: BackendUnavailable,
        507: StorageFull,  # the worker's disk (its temporary folder) is full: not the worker's fault, nor a crash
    }
    cls = classes.get(status, WorkerFailed)
    return cls(message, param=param if isinstance(param, str) else None, code=code if isinstance(code, str) else None)


# -- raised by backends in a worker (``modelhost.backends.base`` re-exports them); carried by the worker protocol ----
# * ``BadInput`` — the request cannot be served as sent (4xx, by default 400): an unknown voice, a prompt longer than
#   the context, an image that does not decode.
# * ``BackendFault`` — the server cannot serve it (5xx, by default 503): a model package or file missing, a system
#   tool not installed. Not the caller's fault; the message says what to install or fix.
# * ``StorageFull`` (or a full-disk ``OSError`` from a write, see ``is_disk_full``) — the worker's disk is full where it
#   writes (its temporary folder: a PDF rendered to images, audio encoded by ffmpeg): 507 ``storage_full``.
# Anything else a backend raises is a bug: answered 500 ``inference_failed`` and logged with its traceback.


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
