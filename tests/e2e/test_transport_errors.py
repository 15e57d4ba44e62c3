"""Errors at the transport boundary through a real server: text that is not valid Unicode, text a voice cannot
read, a library missing in a model's environment, and load failures that are permanent (fast 503, no Retry-After,
no worker log or Python repr in the message)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

# JSON with an escaped lone surrogate: valid JSON, but not valid Unicode text once decoded
LONE_SURROGATE = '"\\ud800"'


def post_raw_json(server: ServerProcess, route: str, body: str) -> tuple[int, dict[str, object]]:
    with server.client() as http:
        response = http.post(route, content=body.encode(), headers={"Content-Type": "application/json"})
    return response.status_code, response.json()


def test_lone_surrogate_in_embeddings_and_chat_is_400(server: ServerProcess) -> None:
    status, body = post_raw_json(
        server, "/v1/embeddings", '{"model": "all-minilm-l6-v2-onnx", "input": ' + LONE_SURROGATE + "}"
    )
    assert status == 400, body
    assert body["error"]["code"] == "invalid_unicode"  # type: ignore[index]
    chat = (
        '{"model": "gemma-3-270m", "max_tokens": 2, "messages": [{"role": "user", "content": ' + LONE_SURROGATE + "}]}"
    )
    status, body = post_raw_json(server, "/v1/chat/completions", chat)
    assert status == 400, body


@pytest.mark.parametrize("text", ["😀¹", "x²", "😀 😀"])
@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_odd_text_to_hibari_is_spoken_or_400_never_500(server: ServerProcess, text: str, fmt: str) -> None:
    with server.client() as http:
        response = http.post(
            "/v1/audio/speech", json={"model": "hibari", "input": text, "voice": "heart", "response_format": fmt}
        )
    if text == "😀 😀":  # nothing to say: a 400 before the answer starts, not an empty 200
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "unspeakable_input"
    else:  # "😀¹" reads "1" (it raised inside hibari's lexicon before)
        assert response.status_code == 200, response.text
        assert len(response.content) > 2000


def add_model(server: ServerProcess, model_id: str, **fields: str) -> None:
    with server.client() as http:
        response = http.post("/v1/models", json={"id": model_id, **fields})
    assert response.status_code == 201, response.text


def test_missing_library_is_one_503_naming_the_package(server: ServerProcess) -> None:
    add_model(
        server, "needs-lib", task="embeddings", backend="tests.support.backends:NeedsMissingLibrary", source="none"
    )
    with server.client() as http:
        response = http.post("/v1/embeddings", json={"model": "needs-lib", "input": "hello"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "dependency_missing"
    assert "modelhost_absent_library" in error["message"]
    assert "install" in error["message"]
    assert "Traceback" not in error["message"]
    assert " | " not in error["message"]  # no worker log tail
    assert "retry-after" not in response.headers


def test_missing_model_path_fails_fast_without_retry_after(server: ServerProcess) -> None:
    add_model(server, "no-such-path", task="embeddings", backend="onnx", source="/nonexistent/model/model.onnx")
    started = time.monotonic()
    with server.client() as http:
        response = http.post("/v1/embeddings", json={"model": "no-such-path", "input": "hello"})
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_files_missing"
    assert "/nonexistent/model/model.onnx" in response.json()["error"]["message"]
    assert "retry-after" not in response.headers


def test_uncached_hub_id_offline_fails_fast_naming_what_to_do(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    ).start()
    try:
        add_model(server, "hub-model", task="embeddings", backend="sentence-transformers", source="org/not-cached")
        started = time.monotonic()
        with server.client() as http:
            response = http.post("/v1/embeddings", json={"model": "hub-model", "input": "hello"})
        assert time.monotonic() - started < 5  # no silent retries
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "model_not_found"
        assert "huggingface-cli download org/not-cached" in error["message"]
        assert "retry-after" not in response.headers
    finally:
        server.stop()
