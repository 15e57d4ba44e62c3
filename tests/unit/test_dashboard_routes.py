"""The dashboard's server side: the page and its assets are public, ``/api/session`` names the caller's role, warm-up
is an admin action; the page ships with a strict Content-Security-Policy. In-process; no worker starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from modelhost.api.app import create_app
from modelhost.config import Settings

ADMIN, INFERENCE = "admin-key-0123456789", "inference-key-0123456789"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, admin_api_keys=[SecretStr(ADMIN)], api_keys=[SecretStr(INFERENCE)])
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def keyless(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, allowed_hosts=["mybox.lan"])
    with TestClient(create_app(settings), base_url="http://localhost:8000") as client:
        yield client


def test_page_and_assets_need_no_key_but_everything_else_does(keyed: TestClient) -> None:
    page = keyed.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src" not in csp  # no inline script, no other origin
    for asset, media_type in (("/ui/app.js", "javascript"), ("/ui/app.css", "text/css")):
        response = keyed.get(asset)
        assert response.status_code == 200, asset
        assert media_type in response.headers["content-type"]
    assert keyed.get("/ui/missing.js").status_code == 404
    assert keyed.get("/ui/%2e%2e/__init__.py").status_code == 404  # nothing outside the static folder
    assert keyed.get("/api/session").status_code == 401
    assert keyed.get("/api/health").status_code == 401


def test_session_names_the_role_of_the_key(keyed: TestClient) -> None:
    assert keyed.get("/api/session", headers=bearer(INFERENCE)).json() == {"role": "inference", "keys_required": True}
    assert keyed.get("/api/session", headers=bearer(ADMIN)).json() == {"role": "admin", "keys_required": True}


def test_session_without_keys_is_admin_on_loopback_only(keyless: TestClient) -> None:
    assert keyless.get("/api/session").json() == {"role": "admin", "keys_required": False}
    lan = keyless.get("/api/session", headers={"Host": "mybox.lan"})
    assert lan.json() == {"role": "inference", "keys_required": False}
    assert keyless.get("/", headers={"Host": "evil.example"}).status_code == 403


def test_warm_up_is_an_admin_action_and_names_unknown_models(keyed: TestClient) -> None:
    refused = keyed.post("/v1/workers/all-minilm-l6-v2", headers=bearer(INFERENCE))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_key_required"
    missing = keyed.post("/v1/workers/no-such-model", headers=bearer(ADMIN))
    assert missing.status_code == 404
    assert "no-such-model" in missing.json()["error"]["message"]
    bad = keyed.post("/v1/workers/all-minilm-l6-v2", json={"wait": "maybe"}, headers=bearer(ADMIN))
    assert bad.status_code == 400
    operation = keyed.get("/openapi.json").json()["paths"]["/v1/workers/{model_id}"]["post"]
    assert "requestBody" in operation
    assert {"400", "403", "404", "503"} <= set(operation["responses"])
