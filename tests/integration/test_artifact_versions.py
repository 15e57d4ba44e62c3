"""Artifact downloads while a step rewrites the artifact (``notes.json``): every version under a blob key of its own,
``If-Range`` and ``If-None-Match`` (RFC 9110), on the local store and on S3 (moto, an S3 EMULATOR), through the app."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelhost.api.app import create_app
from modelhost.api.routes import jobs as job_routes
from modelhost.config import Settings
from modelhost.jobs.pipeline import Pipeline, StepContext

V1 = b'{"version": 1, "slides": ["one", "two", "three"]}\n' * 40
V2 = b'{"version": 2, "slides": ["one", "two", "three", "four"]}\n' * 100
V3 = b'{"version": 3}\n' * 300


class App:
    """The app on ``where``'s blob store, one job, and a step context of that job that puts its artifacts."""

    def __init__(self, client: TestClient, where: str) -> None:
        self.client = client
        services: Any = client.app.state.services  # type: ignore[attr-defined]
        self.jobs = services.jobs
        self.blobs = services.jobs.deps.blobs
        if where == "s3":
            self.blobs.ensure_bucket()
        job = self.jobs.store.create("presentation-video", {})
        self.job_id = job.id
        self.ctx = StepContext(
            job_id=job.id,
            kind=job.kind,
            params={},
            deps=self.jobs.deps,
            store=self.jobs.store,
            pipeline=Pipeline("test"),
            outputs={},
            cancelled=asyncio.Event(),
        )
        self.url = f"/v1/jobs/{job.id}/artifacts/notes.json"

    def put(self, data: bytes) -> str:
        """Put a version of ``notes.json`` as a step does; its blob key."""
        asyncio.run(self.ctx.put_artifact("notes.json", data, "application/json"))
        return self.key()

    def key(self) -> str:
        return str(self.jobs.artifact(self.job_id, "notes.json").blob_key)


@contextlib.contextmanager
def running_app(where: str, data_dir: Path, request: pytest.FixtureRequest) -> Iterator[App]:
    with pytest.MonkeyPatch.context() as mp:
        if where == "s3":
            mp.setenv("MODELHOST_STORAGE__URL", "s3://modelhost-test/versions")
            mp.setenv("MODELHOST_STORAGE__ENDPOINT_URL", request.getfixturevalue("endpoint"))
        # a download cut short answers what was sent before the error (raised, it would hide the answer)
        app = create_app(Settings(data_dir=data_dir))
        with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
            yield App(client, where)


@pytest.fixture(params=["local", "s3"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    with running_app(request.param, tmp_path, request) as running:
        yield running


@pytest.fixture
def s3_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    """On S3 only: its GETs can be intercepted (botocore's events) to replace the artifact at a chosen moment."""
    with running_app("s3", tmp_path, request) as running:
        yield running


def etag(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()}"'


def test_each_version_has_a_key_of_its_own_and_the_replaced_one_goes(app: App) -> None:
    first = app.put(V1)
    assert first.startswith(f"jobs/{app.job_id}/artifacts/")
    assert first.endswith("/notes.json")
    second = app.put(V2)
    assert second != first
    assert app.blobs.get(second) == V2
    assert not app.blobs.exists(first)
    assert app.put(V2) != second  # the same bytes again: a new key too (the ETag stays the same)
    assert not app.blobs.exists(second)
    assert asyncio.run(app.ctx.artifact_keys()) == {"notes.json": app.key()}


def test_if_none_match_answers_304_for_the_current_version_only(app: App) -> None:
    app.put(V1)
    whole = app.client.get(app.url)
    assert (whole.status_code, whole.content, whole.headers["etag"]) == (200, V1, etag(V1))
    for header in (etag(V1), f"W/{etag(V1)}", f'"other", {etag(V1)}', "*"):
        unchanged = app.client.get(app.url, headers={"If-None-Match": header})
        assert unchanged.status_code == 304, header
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == etag(V1)
        assert "content-length" not in unchanged.headers
    other = app.client.get(app.url, headers={"If-None-Match": '"other"'})
    assert (other.status_code, other.content) == (200, V1)

    app.put(V2)  # the step rewrites it: the client's copy is stale now
    stale = app.client.get(app.url, headers={"If-None-Match": etag(V1)})
    assert (stale.status_code, stale.content, stale.headers["etag"]) == (200, V2, etag(V2))
    # If-None-Match is evaluated before Range: a match is a 304 even with a range asked for
    assert app.client.get(app.url, headers={"If-None-Match": etag(V2), "Range": "bytes=0-9"}).status_code == 304


def test_if_range_of_a_replaced_version_sends_the_new_one_whole(app: App) -> None:
    app.put(V1)
    part = app.client.get(app.url, headers={"Range": "bytes=10-19", "If-Range": etag(V1)})
    assert (part.status_code, part.content) == (206, V1[10:20])
    assert part.headers["content-range"] == f"bytes 10-19/{len(V1)}"
    assert part.headers["etag"] == etag(V1)

    app.put(V2)  # a client resuming its download of V1 must not get V2's bytes after V1's
    resumed = app.client.get(app.url, headers={"Range": "bytes=20-", "If-Range": etag(V1)})
    assert (resumed.status_code, resumed.content) == (200, V2)
    assert resumed.headers["etag"] == etag(V2)
    assert resumed.headers["content-length"] == str(len(V2))
    assert "content-range" not in resumed.headers
    # a range the new version cannot satisfy is ignored too: If-Range failed, so Range is not evaluated
    outside = app.client.get(app.url, headers={"Range": f"bytes={len(V2) + 5}-", "If-Range": etag(V1)})
    assert (outside.status_code, outside.content) == (200, V2)

    current = app.client.get(app.url, headers={"Range": "bytes=20-", "If-Range": etag(V2)})
    assert (current.status_code, current.content) == (206, V2[20:])
    # strong comparison: a weak tag never matches; a date neither (artifacts send no Last-Modified)
    for validator in (f"W/{etag(V2)}", "Thu, 26 Nov 2026 09:00:00 GMT", "garbage"):
        whole = app.client.get(app.url, headers={"Range": "bytes=20-", "If-Range": validator})
        assert (whole.status_code, whole.content) == (200, V2), validator


def test_a_version_replaced_between_row_and_blob_reads_serves_the_new_one(s3_app: App) -> None:
    """A step replaces the artifact just as the download's GET of the version it read is sent (the old blob
    is gone when the GET arrives): the download serves the new version whole, under its ETag, never a mix."""
    app = s3_app
    old = app.put(V1)
    replaced: list[str] = []

    def replace_once(request: Any, **_: Any) -> None:
        if not replaced and request.url.endswith(old):
            replaced.append(app.put(V2))  # a step in another thread replaces it: the old blob is deleted

    app.blobs.client.meta.events.register("before-send.s3.GetObject", replace_once)
    answer = app.client.get(app.url)
    assert replaced
    assert (answer.status_code, answer.content, answer.headers["etag"]) == (200, V2, etag(V2))


def test_a_download_whose_version_is_replaced_midway_is_cut_and_resumes_whole(
    s3_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ranged download read in several pieces: the artifact replaced after its first piece. The answer stops
    there (the old version's bytes only, fewer than its Content-Length), and resuming with If-Range gets the new
    version whole."""
    app = s3_app
    monkeypatch.setattr(job_routes, "RANGE_PIECE", 1000)
    old = app.put(V2)
    gets: list[str] = []

    def replace_at_second_piece(request: Any, **_: Any) -> None:
        if request.url.endswith(old):
            gets.append(request.headers["Range"].decode())
            if len(gets) == 2:
                app.put(V3)

    app.blobs.client.meta.events.register("before-send.s3.GetObject", replace_at_second_piece)
    cut = app.client.get(app.url, headers={"Range": "bytes=0-2999"})
    assert cut.status_code == 206
    assert cut.headers["etag"] == etag(V2)
    assert cut.headers["content-length"] == "3000"
    assert cut.content == V2[:1000]  # the first piece, and nothing of V3
    assert gets == ["bytes=0-999", "bytes=1000-1999"]
    resumed = app.client.get(app.url, headers={"Range": "bytes=1000-2999", "If-Range": etag(V2)})
    assert (resumed.status_code, resumed.content, resumed.headers["etag"]) == (200, V3, etag(V3))
