"""The API's contract, in-process (no worker starts: every request here is refused before one is needed):
the OpenAPI document, the multipart forms, one answer per mistake, the body limit, offline docs and aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelhost.api.app import create_app
from modelhost.catalog.aliases import resolve_model_or_raise
from modelhost.config import Settings

UPLOAD_ROUTES = {
    "/v1/audio/transcriptions": {"model": "whisper-tiny.en"},
    "/v1/audio/translations": {"model": "whisper-base"},
    "/v1/audio/vad": {},
    "/v1/audio/embeddings": {},
    "/v1/audio/diarization": {},
    "/v1/ocr": {},
    "/v1/images/captions": {"model": "vit-gpt2"},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), max_request_bytes=64 * 1024)
    with TestClient(create_app(settings), base_url="http://localhost") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def openapi(client: TestClient) -> dict[str, Any]:
    schema: dict[str, Any] = client.get("/openapi.json").json()
    return schema


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["code"]  # every error has a code
    return error


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


# -- the OpenAPI document ------------------------------------------------------------------------------------------
#: POST routes that run no model (so never answer 404 for a model or 503 for a worker).
NO_MODEL_POSTS = {"/v1/models", "/v1/audio/voices", "/v1/jobs/{job_id}/cancel"}


def test_every_operation_documents_its_body_and_its_errors(openapi: dict[str, Any]) -> None:
    assert openapi["paths"]
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "422" not in responses, f"{method} {path}: validation errors are 400"
            if method in ("post", "put", "patch") and not path.endswith(("/stop", "/cancel")):
                assert "requestBody" in operation, f"{method} {path} has no documented request body"
                assert "400" in responses, f"{method} {path} does not document 400"
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    content = response["content"]["application/json"]["schema"]
                    assert "error" in content["properties"], f"{method} {path} {status} is not the envelope"
            queued = "202" in responses  # a job: the model runs later, never in this request
            if path.startswith("/v1/") and method == "post" and path not in NO_MODEL_POSTS and not queued:
                assert {"400", "404", "503"} <= set(responses), f"{method} {path}: {sorted(responses)}"
            if "multipart/form-data" in operation.get("requestBody", {}).get("content", {}):
                # the form parser spools the upload, the coordinator copies it: a full disk is 507 storage_full
                assert "507" in responses, f"{method} {path} takes an upload and does not document 507"


@pytest.mark.parametrize("path", sorted(UPLOAD_ROUTES))
def test_upload_routes_are_multipart_forms_with_every_field(openapi: dict[str, Any], path: str) -> None:
    operation = openapi["paths"][path]["post"]
    assert "415" in operation["responses"]
    body = operation["requestBody"]["content"]
    assert list(body) == ["multipart/form-data"]
    form = resolve(openapi, body["multipart/form-data"]["schema"])
    fields = form["properties"]
    assert "file" in form["required"]
    assert fields["file"]["type"] == "string"  # a file input in Swagger UI
    assert "model" in fields
    assert all(field.get("description") or name == "response_format" for name, field in fields.items()), fields


def test_transcription_form_has_openai_fields(openapi: dict[str, Any]) -> None:
    body = openapi["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]["multipart/form-data"]
    fields = resolve(openapi, body["schema"])["properties"]
    assert {"model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]"} <= set(fields)
    assert fields["temperature"]["maximum"] == 1.0


# -- forms: one answer per mistake ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(UPLOAD_ROUTES))
def test_empty_and_missing_uploads_answer_alike_on_every_route(client: TestClient, path: str) -> None:
    fields = UPLOAD_ROUTES[path]
    empty = client.post(path, data=fields, files={"file": ("empty.bin", b"", "application/octet-stream")})
    assert error_of(empty, 400)["code"] == "empty_file"
    missing = client.post(path, data=fields)
    error = error_of(missing, 400)
    assert (error["code"], error["param"]) == ("missing_file", "file")
    as_json = client.post(path, json=fields)
    assert error_of(as_json, 400)["code"] in ("missing_file", "missing_parameter")


@pytest.mark.parametrize(
    ("path", "fields", "param", "code"),
    [
        ("/v1/audio/vad", {"threshold": "2"}, "threshold", "invalid_parameter"),
        ("/v1/audio/vad", {"min_speech_duration_ms": "soon"}, "min_speech_duration_ms", "invalid_parameter"),
        ("/v1/audio/diarization", {"num_speakers": "0"}, "num_speakers", "invalid_parameter"),
        ("/v1/audio/diarization", {"num_speakers": "2", "min_speakers": "1"}, "num_speakers", "invalid_parameter"),
        ("/v1/audio/diarization", {"min_speakers": "3", "max_speakers": "2"}, "min_speakers", "invalid_parameter"),
        ("/v1/audio/diarization", {"response_format": "csv"}, "response_format", "invalid_parameter"),
        ("/v1/audio/embeddings", {"vad_threshold": "1.5"}, "vad_threshold", "invalid_parameter"),
        ("/v1/images/captions", {"model": "vit-gpt2", "max_tokens": "0"}, "max_tokens", "invalid_parameter"),
        ("/v1/images/captions", {}, "model", "missing_parameter"),
        ("/v1/audio/transcriptions", {"model": "whisper-1", "response_format": "xml"}, "response_format", None),
        ("/v1/audio/transcriptions", {"model": "whisper-1", "temperature": "1.5"}, "temperature", None),
        ("/v1/audio/transcriptions", {"model": "whisper-1", "stream": "true"}, "stream", "unsupported_parameter"),
        ("/v1/audio/transcriptions", {"model": "whisper-1", "timestamp_granularities[]": "char"}, None, None),
    ],
)
def test_bad_form_fields_are_400_naming_the_field(
    client: TestClient, path: str, fields: dict[str, str], param: str | None, code: str | None
) -> None:
    response = client.post(path, data=fields, files={"file": ("a.wav", b"RIFF....", "audio/wav")})
    error = error_of(response, 400)
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_empty_form_fields_count_as_not_given(client: TestClient) -> None:
    # Browsers send empty strings for fields left blank; they must not be parse errors. The unknown model proves
    # the fields were accepted (validation passed; the model lookup answered).
    response = client.post(
        "/v1/audio/diarization",
        data={"model": "nope", "num_speakers": "", "threshold": ""},
        files={"file": ("a.wav", b"RIFF....", "audio/wav")},
    )
    assert error_of(response, 404)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("path", "body", "param", "code"),
    [
        ("/v1/embeddings", {"model": "m", "input": []}, "input", "empty_input"),
        ("/v1/embeddings", {"model": "m", "input": [[1, 2]]}, "input", "unsupported_input"),
        ("/v1/embeddings", {"model": "m", "input": "a", "dimensions": 0}, "dimensions", "invalid_parameter"),
        ("/v1/rerank", {"query": " ", "documents": ["d"]}, "query", "empty_input"),
        ("/v1/rerank", {"query": "q", "documents": []}, "documents", "empty_input"),
        ("/v1/rerank", {"query": "q", "documents": ["a", {"title": "b"}]}, "documents.1", "invalid_parameter"),
        ("/v1/rerank", {"query": "q", "documents": [7]}, "documents.0", "invalid_parameter"),
        ("/v1/chat/completions", {"model": "m", "messages": []}, "messages", "empty_messages"),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "tool", "content": "x"}]}, None, None),
        ("/v1/completions", {"model": "m", "prompt": ""}, "prompt", "empty_prompt"),
        ("/v1/completions", {"model": "m", "prompt": "x", "logit_bias": {"50256": -100}}, "logit_bias", None),
        ("/v1/completions", {"model": "m", "prompt": "x", "best_of": 2}, "best_of", "unsupported_parameter"),
        ("/v1/completions", {"model": "m", "prompt": "x", "mirostat": 2}, "mirostat", "unsupported_parameter"),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n", None),
        ("/v1/audio/speech", {"model": "tts-1", "input": "   "}, "input", "empty_input"),
        ("/v1/audio/speech", {"model": "tts-1", "input": "hi", "speed": 9}, "speed", "invalid_parameter"),
    ],
)
def test_bad_json_fields_are_400_with_a_code(
    client: TestClient, path: str, body: dict[str, Any], param: str | None, code: str | None
) -> None:
    error = error_of(client.post(path, json=body), 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_several_problems_are_named_in_one_answer(client: TestClient) -> None:
    """The first problem is the error's ``param``; the message names where the others are, so that one round trip
    can fix them all."""
    message = {"role": "user", "content": "x"}
    tool = {"type": "function", "function": {"name": "f"}}
    body = {"model": "m", "messages": [message], "logprobs": True, "top_logprobs": 2, "tools": [tool]}
    error = error_of(client.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == "logprobs"
    assert error["message"].endswith("(and 2 more problems: 'tools', 'top_logprobs')"), error["message"]
    two = error_of(client.post("/v1/chat/completions", json={**body, "tools": None, "logprobs": None}), 400)
    assert two["param"] == "top_logprobs"
    assert "more problem" not in two["message"]
    one_more = error_of(client.post("/v1/audio/speech", json={"model": "tts-1", "input": " ", "speed": 9}), 400)
    assert one_more["message"].endswith("(and 1 more problem: 'speed')"), one_more["message"]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/embeddings", r'{"model": "all-minilm-l6-v2", "input": ["fine", "\ud800"]}'),
        ("/v1/chat/completions", r'{"model": "gemma-3-270m", "messages": [{"role": "user", "content": "a\ud800"}]}'),
        ("/v1/audio/speech", r'{"model": "hibari", "input": "\udfff"}'),
    ],
)
def test_a_lone_surrogate_is_400_not_500(client: TestClient, path: str, raw: str) -> None:
    response = client.post(path, content=raw.encode(), headers={"content-type": "application/json"})
    assert error_of(response, 400)["code"] == "invalid_unicode"


def test_not_json_unknown_route_and_wrong_method_have_codes(client: TestClient) -> None:
    broken = client.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert error_of(broken, 400)["code"] == "invalid_json"
    assert error_of(client.get("/v1/nothing"), 404)["code"] == "not_found"
    assert error_of(client.get("/v1/embeddings"), 405)["code"] == "method_not_allowed"


# -- limits --------------------------------------------------------------------------------------------------------
def test_chunked_bodies_over_the_limit_are_413_json_and_multipart(client: TestClient) -> None:
    def json_body() -> Iterator[bytes]:
        yield b'{"model": "all-minilm-l6-v2", "input": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    def multipart_body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(100):
            yield b"x" * 1024
        yield b"\r\n--b--\r\n"

    chunked = client.post("/v1/embeddings", content=json_body(), headers={"content-type": "application/json"})
    assert error_of(chunked, 413)["code"] == "payload_too_large"
    form = client.post("/v1/ocr", content=multipart_body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert error_of(form, 413)["code"] == "payload_too_large"


# -- docs and aliases ----------------------------------------------------------------------------------------------
def test_docs_are_served_from_the_package_and_root_is_the_dashboard(client: TestClient) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 200
    assert "/ui/app.js" in root.text  # the dashboard (docs/dashboard.md)
    page = client.get("/docs")
    assert page.status_code == 200
    assert "http://" not in page.text
    assert "https://" not in page.text  # nothing from a CDN
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        served = client.get(f"/docs/static/{asset}")
        assert served.status_code == 200
        assert len(served.content) > 10_000


def test_openai_aliases_are_listed_and_resolve_to_the_same_entry(client: TestClient) -> None:
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed["whisper-1"]["alias_of"] == "whisper-base"
    assert listed["tts-1"]["alias_of"] == listed["tts-1-hd"]["alias_of"] == "hibari"
    assert listed["gpt-4o-mini-tts"]["alias_of"] == "hibari"
    assert listed["gpt-4o-transcribe"]["alias_of"] == listed["gpt-4o-mini-transcribe"]["alias_of"] == "whisper-base"
    assert client.get("/v1/models/whisper-1").json()["alias_of"] == "whisper-base"
    only_tts = {m["id"] for m in client.get("/v1/models", params={"task": "text-to-speech"}).json()["data"]}
    assert {"tts-1", "tts-1-hd"} <= only_tts
    assert "whisper-1" not in only_tts
    catalog = client.app.state.services.catalog  # type: ignore[attr-defined]
    whisper = resolve_model_or_raise(catalog, "speech-recognition", "whisper-1")
    assert whisper is resolve_model_or_raise(catalog, "speech-recognition", "whisper-base")  # one entry: one worker
    wrong_task = client.post("/v1/embeddings", json={"model": "whisper-1", "input": "x"})
    assert error_of(wrong_task, 404)["code"] == "model_not_found"
