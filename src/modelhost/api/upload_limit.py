"""Cap how many multipart uploads the serve process handles at once (``MODELHOST_MAX_CONCURRENT_UPLOADS``).

Checked before the body is read: one over the cap is answered 429 ``too_many_uploads`` with Retry-After, so a burst
of large uploads cannot fill the disk spool or memory. Uploads are spooled to disk by the form parser and handed to
workers as paths (see ``modelhost.coordinator``), never held whole in memory.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from modelhost.api.middleware import _send_error
from modelhost.errors import error_envelope


class UploadLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_multipart(scope):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            message = (
                f"{self.active} uploads are already being processed (MODELHOST_MAX_CONCURRENT_UPLOADS="
                f"{self.limit}); retry shortly"
            )
            body = error_envelope(message, "rate_limit_error", code="too_many_uploads")
            await _send_error(send, 429, body, [(b"retry-after", b"1")])
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def _is_multipart(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value).lower().startswith(b"multipart/")
    return False
