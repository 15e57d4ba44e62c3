"""Embeddings through a real server and real MiniLM workers, with the official openai client."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from tests.support.server import ServerProcess

MODELS = ["all-minilm-l6-v2", "all-minilm-l6-v2-onnx"]
FORBIDDEN_LIBS = ("libtorch", "onnxruntime", "libctranslate2", "libllama")


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
def openai_client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_openai_client_real_embeddings(openai_client: OpenAI, model: str) -> None:
    texts = [
        "The cat sits on the mat.",
        "A cat is sitting on a mat.",
        "Quarterly revenue fell by ten percent.",
    ]
    response = openai_client.embeddings.create(model=model, input=texts)  # the client asks for base64
    vectors = [d.embedding for d in response.data]
    assert [d.index for d in response.data] == [0, 1, 2]
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors)
    paraphrase, unrelated = cos(vectors[0], vectors[1]), cos(vectors[0], vectors[2])
    assert paraphrase > 0.8 > 0.3 > unrelated
    assert response.model == model
    assert response.usage.prompt_tokens == response.usage.total_tokens > len(texts)


def test_float_and_base64_agree_and_backends_agree(openai_client: OpenAI, server: ServerProcess) -> None:
    text = "modelhost serves many models behind one API"
    with server.client() as http:
        floats = http.post("/v1/embeddings", json={"model": MODELS[0], "input": text}).json()
        b64 = http.post("/v1/embeddings", json={"model": MODELS[0], "input": text, "encoding_format": "base64"}).json()
    vector = floats["data"][0]["embedding"]
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(vector, abs=1e-7)
    onnx = openai_client.embeddings.create(model=MODELS[1], input=text).data[0].embedding
    assert cos(vector, onnx) > 0.99  # int8 ONNX export of the same model


def test_dimensions(server: ServerProcess) -> None:
    with server.client() as http:
        same = http.post("/v1/embeddings", json={"model": MODELS[0], "input": "x", "dimensions": 384})
        assert same.status_code == 200
        assert len(same.json()["data"][0]["embedding"]) == 384
        refused = http.post("/v1/embeddings", json={"model": MODELS[0], "input": "x", "dimensions": 64})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "dimensions"
        assert "matryoshka" in refused.json()["error"]["message"]
        too_big = http.post("/v1/embeddings", json={"model": MODELS[0], "input": "x", "dimensions": 1000})
        assert too_big.status_code == 400


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": MODELS[0], "input": []}, 400, "input"),
        ({"model": MODELS[0], "input": ""}, 400, "input"),
        ({"model": MODELS[0], "input": ["ok", ""]}, 400, "input"),
        ({"model": MODELS[0], "input": 42}, 400, "input"),
        ({"model": MODELS[0], "input": [1, "a"]}, 400, "input"),
        ({"model": MODELS[0], "input": {"text": "a"}}, 400, "input"),
        ({"model": MODELS[0], "input": [[1, 2, 3]]}, 400, "input"),
        ({"model": MODELS[0]}, 400, "input"),
        ({"input": "hello"}, 400, "model"),
        ({"model": MODELS[0], "input": "a", "encoding_format": "hex"}, 400, "encoding_format"),
        ({"model": MODELS[0], "input": "a", "dimensions": 0}, 400, "dimensions"),
        ({"model": "no-such-model", "input": "a"}, 404, "model"),
        ({"model": MODELS[0], "input": ["a"] * 2049}, 400, "input"),
        ({"model": MODELS[0], "input": "word " * 30_000}, 400, "input"),
    ],
)
def test_bad_input_is_a_4xx_envelope(server: ServerProcess, body: dict[str, object], status: int, param: str) -> None:
    with server.client() as http:
        response = http.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    assert error["type"]
    assert error["param"] == param


def test_malformed_json_and_wrong_content(server: ServerProcess) -> None:
    with server.client() as http:
        broken = http.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
        assert broken.status_code == 400
        assert broken.json()["error"]["message"] == "request body is not valid JSON"
        text = http.post("/v1/embeddings", content=b"hello", headers={"content-type": "text/plain"})
        assert 400 <= text.status_code < 500
        assert "error" in text.json()
        unknown = http.get("/v1/nothing-here")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["type"] == "not_found_error"


def test_unknown_model_names_known_ones(openai_client: OpenAI) -> None:
    with pytest.raises(NotFoundError) as info:
        openai_client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert "all-minilm-l6-v2" in info.value.message
    with pytest.raises(BadRequestError):
        openai_client.embeddings.create(model=MODELS[0], input=[])
    # a validation error (a wrong type, a value out of range) is a 400 too, as OpenAI answers: BadRequestError
    with pytest.raises(BadRequestError) as wrong:
        openai_client.embeddings.create(model=MODELS[0], input="hi", dimensions=0)
    assert wrong.value.status_code == 400
    body = wrong.value.body
    assert isinstance(body, dict)
    assert body.get("param", body.get("error", {}).get("param")) == "dimensions"


def test_serve_process_never_loads_model_libraries(openai_client: OpenAI, server: ServerProcess) -> None:
    for model in MODELS:
        openai_client.embeddings.create(model=model, input=["load the model libraries somewhere"])
    health = server.health()
    assert health["ml_modules_loaded"] == []
    assert server.process is not None
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert not [lib for lib in FORBIDDEN_LIBS if lib in maps]
    # ...while the workers did load them
    worker_pid = server.worker(MODELS[0])["pid"]  # type: ignore[index]
    assert "libtorch" in Path(f"/proc/{worker_pid}/maps").read_text()


def test_32_concurrent_clients_no_errors_one_worker(own_server: ServerProcess) -> None:
    clients, per_client = 32, 150
    sentences = [f"sentence number {i} about topic {i % 7}" for i in range(per_client)]

    async def one_client(http: httpx.AsyncClient, errors: list[str]) -> int:
        done = 0
        for text in sentences:
            response = await http.post("/v1/embeddings", json={"model": MODELS[0], "input": text})
            if response.status_code != 200 or len(response.json()["data"][0]["embedding"]) != 384:
                errors.append(f"{response.status_code} {response.text[:200]}")
            done += 1
        return done

    async def run() -> tuple[int, list[str]]:
        errors: list[str] = []
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=own_server.url, timeout=300, limits=limits) as http:
            counts = await asyncio.gather(*(one_client(http, errors) for _ in range(clients)))
        return sum(counts), errors

    total, errors = asyncio.run(run())
    assert total == clients * per_client
    assert errors == []
    worker = own_server.worker(MODELS[0])
    assert worker is not None
    assert worker["spawns"] == 1
    assert worker["requests"] == clients * per_client
    with own_server.client() as http:
        info = http.get(f"/v1/workers/{MODELS[0]}/info").json()
        metrics = http.get("/metrics").text
    assert info["batching"]["max_size"] > 1  # concurrent requests were merged into batches
    assert f'modelhost_worker_spawns_total{{model="{MODELS[0]}"}} 1.0' in metrics
