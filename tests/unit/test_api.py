"""The API in-process (no worker is started by these routes): envelopes, auth, limits, catalog, settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from modelhost.api.app import create_app
from modelhost.config import Settings
from modelhost.coordinator.admission import FAIR_GRANTS, FAIR_SECONDS


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, max_request_bytes=4096)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    # A loopback Host: a server without keys refuses any other (DNS rebinding defence; TestClient's is "testserver").
    with TestClient(create_app(settings), base_url="http://localhost") as test_client:
        yield test_client


def assert_envelope(response_json: dict[str, object]) -> dict[str, object]:
    error = response_json["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


def test_models_list_in_openai_shape(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    assert {"all-minilm-l6-v2", "all-minilm-l6-v2-onnx"} <= ids
    model = body["data"][0]
    assert {"id", "object", "created", "owned_by", "task", "backend"} <= set(model)
    only = client.get("/v1/models", params={"task": "embeddings"}).json()["data"]
    assert only
    assert all(m["task"] == "embeddings" for m in only)


def test_model_crud_over_http(client: TestClient) -> None:
    new = {"id": "team/mini", "task": "embeddings", "backend": "onnx", "source": "/srv/m.onnx", "threads": 2}
    created = client.post("/v1/models", json=new)
    assert created.status_code == 201
    assert created.json()["owned_by"] == "user"
    assert client.get("/v1/models/team/mini").json()["threads"] == 2
    assert client.post("/v1/models", json=new).status_code == 409
    patched = client.patch("/v1/models/team/mini", json={"idle_timeout_seconds": 0, "device": "cuda:0"})
    assert (patched.json()["idle_timeout_seconds"], patched.json()["device"]) == (0, "cuda:0")
    assert client.delete("/v1/models/team/mini").json() == {
        "id": "team/mini",
        "object": "model",
        "deleted": True,
    }
    missing = client.get("/v1/models/team/mini")
    assert missing.status_code == 404
    assert assert_envelope(missing.json())["code"] == "model_not_found"
    builtin = client.delete("/v1/models/all-minilm-l6-v2")
    assert builtin.status_code == 409


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"id": "x", "task": "embeddings", "backend": "onnx"}, "source"),
        ({"id": "bad id!", "task": "embeddings", "backend": "onnx", "source": "s"}, "id"),
        ({"id": "x", "task": "embeddings", "backend": "onnx", "source": "s", "device": "tpu"}, "device"),
        ({"id": "x", "task": "embeddings", "backend": "onnx", "source": "s", "threads": 0}, "threads"),
        (
            {"id": "x", "task": "embeddings", "backend": "onnx", "source": "s", "idle_timeout_seconds": -2},
            "idle_timeout_seconds",
        ),
        ({"id": "x", "task": "embeddings", "backend": "onnx", "source": "s", "colour": "red"}, "colour"),
    ],
)
def test_model_validation_errors(client: TestClient, body: dict[str, object], param: str) -> None:
    response = client.post("/v1/models", json=body)
    assert response.status_code == 400
    assert assert_envelope(response.json())["param"] == param


def test_settings_get_patch_and_errors(client: TestClient) -> None:
    body = client.get("/v1/settings").json()
    assert body["settings"]["worker_idle_timeout_seconds"] == 60
    assert body["settings"]["gpu_policy"] == "exclusive"
    assert all(body["descriptions"].values())
    changed = client.patch("/v1/settings", json={"worker_idle_timeout_seconds": 30})
    assert changed.json()["settings"]["worker_idle_timeout_seconds"] == 30
    for bad in ({"gpu_policy": "yolo"}, {"worker_startup_timeout_seconds": 0}, {"nope": 1}, [], {}):
        response = client.patch("/v1/settings", json=bad)
        assert response.status_code == 400, bad
        assert_envelope(response.json())
    assert client.get("/v1/settings").json()["settings"]["worker_idle_timeout_seconds"] == 30


def test_gpu_fairness_settings_default_to_the_lock_constants_and_are_validated(client: TestClient) -> None:
    current = client.get("/v1/settings").json()["settings"]
    assert (current["gpu_fair_grants"], current["gpu_fair_seconds"]) == (FAIR_GRANTS, FAIR_SECONDS)
    for bad, param in (({"gpu_fair_grants": 0}, "gpu_fair_grants"), ({"gpu_fair_seconds": 0}, "gpu_fair_seconds")):
        response = client.patch("/v1/settings", json=bad)
        assert response.status_code == 400, bad
        assert assert_envelope(response.json())["param"] == param
    changed = client.patch("/v1/settings", json={"gpu_fair_grants": 1, "gpu_fair_seconds": 0.5}).json()["settings"]
    assert (changed["gpu_fair_grants"], changed["gpu_fair_seconds"]) == (1, 0.5)


def test_body_limit_is_413(client: TestClient) -> None:
    response = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "x" * 10_000})
    assert response.status_code == 413
    assert assert_envelope(response.json())["code"] == "payload_too_large"


def test_unknown_route_and_method_use_the_envelope(client: TestClient) -> None:
    assert assert_envelope(client.get("/v1/unknown").json())["type"] == "not_found_error"
    response = client.put("/v1/settings", json={})
    assert response.status_code == 405
    assert_envelope(response.json())


def test_health_and_metrics(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok"
    assert health["workers"] == []
    assert health["gpu_lock"] == {"held": False, "holder": None, "waiters": 0}
    metrics = client.get("/metrics").text
    assert "modelhost_requests_total" in metrics
    assert 'route="/api/health"' in metrics


def test_embeddings_hot_path_keeps_limits_errors_and_metrics(client: TestClient) -> None:
    """``POST /v1/embeddings`` with JSON takes the app's hot path (metrics → access → body limit → lean route). A
    body the lean route does not take goes on to the FastAPI route without passing the middleware twice: every
    request is counted once, under its route."""
    invalid = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2-onnx", "input": []})
    assert invalid.status_code == 400
    assert assert_envelope(invalid.json())["code"] == "empty_input"
    unknown = client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert unknown.status_code == 404
    assert assert_envelope(unknown.json())["code"] == "model_not_found"
    too_large = client.post("/v1/embeddings", json={"model": "nope", "input": "x" * 5000})
    assert too_large.status_code == 413
    assert assert_envelope(too_large.json())["code"] == "payload_too_large"
    chunked = client.post(
        "/v1/embeddings",
        content=iter([b'{"model": "nope", "input": "', b"x" * 5000, b'"}']),  # no Content-Length: counted as read
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    metrics = client.get("/metrics").text
    assert 'modelhost_requests_total{method="POST",route="/v1/embeddings",status="400"} 1.0' in metrics
    assert 'modelhost_requests_total{method="POST",route="/v1/embeddings",status="404"} 1.0' in metrics
    assert 'modelhost_requests_total{method="POST",route="unmatched",status="413"} 2.0' in metrics
    foreign = client.post("/v1/embeddings", json={"model": "nope", "input": "x"}, headers={"Host": "evil.example"})
    assert foreign.status_code == 403


def test_api_keys(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_keys=[SecretStr("sesame")])
    with TestClient(create_app(settings)) as client:
        missing = client.get("/v1/models")
        assert missing.status_code == 401
        assert assert_envelope(missing.json())["type"] == "authentication_error"
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer sesame"}).status_code == 200
        assert client.get("/openapi.json").status_code == 200  # docs stay readable
