"""Who may call what: API keys with two roles, and the Host/Origin allowlist of a server without keys.

* **Keys set** (``MODELHOST_ADMIN_API_KEYS``, ``MODELHOST_API_KEYS``): every route but the docs and the
  dashboard's page and assets needs ``Authorization: Bearer <key>`` (401 otherwise). An inference key may not use
  the admin routes (403).
* **No keys** (loopback only, enforced by the configuration): a request must name a loopback ``Host`` (or one of
  ``MODELHOST_ALLOWED_HOSTS``) and carry no foreign ``Origin``, so that a web page cannot reach the server by DNS
  rebinding or a cross-site form; admin routes additionally need a loopback ``Host``.

Admin routes are those that change models, runtime settings or workers, and everything about environments.
Keys are compared as SHA-256 digests with ``hmac.compare_digest``, against every key (no early exit), so the
time taken says nothing about a key's value, length or position.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from modelhost.config import Settings
from modelhost.errors import error_envelope

Role = Literal["admin", "inference"]

PUBLIC_PATHS = ("/docs", "/openapi.json", "/redoc", "/ui/")
"""Served without a key: the API docs and the dashboard's static assets (plus the dashboard page ``/`` itself)."""
ADMIN_WRITE_PREFIXES = ("/v1/models", "/v1/settings", "/v1/workers")
"""Reading these is inference-level; any other method is an admin action."""
ADMIN_ONLY_PREFIXES = ("/v1/environments",)
"""Every method is an admin action (the answers name paths on the server)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return path.startswith(prefixes) and any(path == p or path.startswith(p + "/") for p in prefixes)


def is_admin_route(method: str, path: str) -> bool:
    """True for requests that change models, settings, workers or environments."""
    if _under(path, ADMIN_ONLY_PREFIXES):
        return True
    return method.upper() not in SAFE_METHODS and _under(path, ADMIN_WRITE_PREFIXES)


def is_loopback_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_check(header: bytes) -> tuple[str, bool]:
    """The name in a raw ``Host`` header and whether it is a loopback name (cached: every request of a server
    without keys asks — ipaddress parsing costs ~10 µs — and the same few headers come back; a long one is not
    kept)."""
    return _host_check_cached(header) if len(header) <= 128 else _host_check_uncached(header)


def _host_check_uncached(header: bytes) -> tuple[str, bool]:
    host = host_name(header.decode("latin-1"))
    return host, is_loopback_name(host)


_host_check_cached = functools.lru_cache(maxsize=256)(_host_check_uncached)


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8000`` → ``::1``, ``A.org:80`` → ``a.org``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        header = header.partition(":")[0]
    return header.rstrip(".")


class KeyRing:
    """Admin and inference keys, compared in constant time."""

    def __init__(self, admin: set[str], inference: set[str]) -> None:
        self._keys: list[tuple[bytes, Role]] = [(_digest(k.encode()), "admin") for k in sorted(admin)]
        self._keys += [(_digest(k.encode()), "inference") for k in sorted(inference - admin)]
        self.has_admin = bool(admin)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def role(self, token: bytes) -> Role | None:
        digest = _digest(token)
        found: Role | None = None
        for key_digest, role in self._keys:  # all of them, whatever matched first
            if hmac.compare_digest(digest, key_digest) and found is None:
                found = role
        return found


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


@dataclass
class AccessPolicy:
    keys: KeyRing
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allowed_origins: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        return cls(
            KeyRing(settings.admin_key_values(), settings.api_key_values()),
            frozenset(host_name(h) for h in settings.allowed_hosts),
            frozenset(o.strip().rstrip("/").lower() for o in settings.allowed_origins),
        )

    def origin_allowed(self, origin: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if origin in self.allowed_origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and is_loopback_name(parts.hostname or "")


class AccessMiddleware:
    """Enforces ``AccessPolicy`` before any route runs or any body is read."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path: str = scope["path"]
        method: str = scope.get("method", "GET")
        admin_route = is_admin_route(method, path)
        if self.policy.keys:
            if path == "/" or path.startswith(PUBLIC_PATHS):
                await self.app(scope, receive, send)
                return
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            role = self.policy.keys.role(token.strip()) if scheme.lower() == b"bearer" and token.strip() else None
            if role is None:
                message = "missing API key: send 'Authorization: Bearer <key>'" if not auth else "invalid API key"
                await _refuse(scope, send, 401, message, "authentication_error", "invalid_api_key", bearer=True)
                return
            if admin_route and role != "admin":
                why = "" if self.policy.keys.has_admin else "; no admin key is configured (MODELHOST_ADMIN_API_KEYS)"
                await _refuse(
                    scope,
                    send,
                    403,
                    f"{method} {path} changes the server (models, settings, workers or environments) and "
                    f"needs an admin key; the key sent is an inference key{why}",
                    "permission_error",
                    "admin_key_required",
                )
                return
            scope.setdefault("state", {})["auth_role"] = role
            await self.app(scope, receive, send)
            return
        # No keys: loopback serving; keep browsers on other sites out.
        host, loopback_host = _host_check(headers.get(b"host", b""))
        if not loopback_host and host not in self.policy.allowed_hosts:
            await _refuse(
                scope,
                send,
                403,
                f"Host {host or '(none)'!r} is not allowed: without API keys modelhost answers only requests "
                "addressed to localhost, 127.0.0.1 or ::1 (add names with MODELHOST_ALLOWED_HOSTS, or set keys)",
                "permission_error",
                "host_not_allowed",
            )
            return
        origin = headers.get(b"origin")
        if origin is not None and not self.policy.origin_allowed(origin.decode("latin-1")):
            await _refuse(
                scope,
                send,
                403,
                f"Origin {origin.decode('latin-1')!r} is not allowed: without API keys modelhost accepts browser "
                "requests from loopback origins only (add origins with MODELHOST_ALLOWED_ORIGINS, or set keys)",
                "permission_error",
                "origin_not_allowed",
            )
            return
        if admin_route and not loopback_host:
            await _refuse(
                scope,
                send,
                403,
                f"{method} {path} changes the server and, without API keys, is accepted only when addressed "
                "to localhost, 127.0.0.1 or ::1; set MODELHOST_ADMIN_API_KEYS to administer it through other names",
                "permission_error",
                "admin_key_required",
            )
            return
        scope.setdefault("state", {})["auth_role"] = "admin" if loopback_host else "inference"
        await self.app(scope, receive, send)


async def _refuse(
    scope: Scope, send: Send, status: int, message: str, error_type: str, code: str, *, bearer: bool = False
) -> None:
    if scope["type"] == "websocket":  # closing before accepting answers the handshake with 403
        await send({"type": "websocket.close", "code": 1008, "reason": f"{code}: {message}"[:120]})
        return
    payload = orjson.dumps(error_envelope(message, error_type, code=code))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if bearer:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
