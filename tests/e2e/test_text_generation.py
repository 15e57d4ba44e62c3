"""Text generation through a real server: the packaged Gemma 3 270M on llama-cpp-python and a tiny random Llama
built here on transformers, with the official openai client (streaming and not) and raw HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import APIError, BadRequestError, NotFoundError, OpenAI

from tests.support.server import ServerProcess
from tests.support.tiny_models import build_tiny_llama

GEMMA = "gemma-3-270m"
TINY = "test-tiny-llama"
PROMPT = "The three primary colors are"
USER = [{"role": "user", "content": "x"}]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def tiny(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    with server.client() as http:
        created = http.post(
            "/v1/models",
            json={"id": TINY, "task": "text-generation", "backend": "transformers-causal-lm", "source": str(path)},
        )
        assert created.status_code == 201, created.text
        yield TINY
        http.delete(f"/v1/models/{TINY}")


def sse_events(response: httpx.Response) -> list[Any]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


# -- Gemma 3 270M (llama.cpp) -----------------------------------------------------------------------------------
def test_gemma_completion_text_and_usage(client: OpenAI) -> None:
    response = client.completions.create(model=GEMMA, prompt=PROMPT, max_tokens=24, temperature=0)
    choice = response.choices[0]
    assert choice.text.strip()
    assert choice.finish_reason in ("length", "stop")
    usage = response.usage
    assert usage is not None
    assert 3 <= usage.prompt_tokens <= 12
    assert 1 <= usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 24
    assert response.model == GEMMA


def test_gemma_streaming_equals_non_streaming_at_temperature_0(client: OpenAI) -> None:
    whole = client.completions.create(model=GEMMA, prompt=PROMPT, max_tokens=32, temperature=0)
    stream = client.completions.create(
        model=GEMMA, prompt=PROMPT, max_tokens=32, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    texts, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            texts.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert len(texts) > 5  # really streamed, token by token
    assert "".join(texts) == whole.choices[0].text
    assert finish == whole.choices[0].finish_reason
    assert usage is not None
    assert whole.usage is not None
    assert usage.model_dump() == whole.usage.model_dump()


def test_gemma_chat_streaming_equals_non_streaming(client: OpenAI) -> None:
    messages: Any = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a large animal that lives in the sea."},
    ]
    whole = client.chat.completions.create(model=GEMMA, messages=messages, max_tokens=30, temperature=0)
    content = whole.choices[0].message.content
    assert content
    assert content.strip()
    assert whole.choices[0].message.role == "assistant"
    assert whole.usage is not None
    assert whole.usage.prompt_tokens > 10
    parts, roles = [], []
    for chunk in client.chat.completions.create(
        model=GEMMA, messages=messages, max_tokens=30, temperature=0, stream=True
    ):
        delta = chunk.choices[0].delta
        roles.append(delta.role)
        parts.append(delta.content or "")
    assert roles[0] == "assistant"
    assert "".join(parts) == content


def test_gemma_stop_sequence_is_respected(client: OpenAI) -> None:
    free = client.completions.create(model=GEMMA, prompt=PROMPT, max_tokens=30, temperature=0).choices[0].text
    words = free.split()
    assert len(words) >= 4, free
    stop = words[2]
    cut = client.completions.create(model=GEMMA, prompt=PROMPT, max_tokens=30, temperature=0, stop=[stop, "@@@"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == free[: free.index(stop)]
    assert stop not in cut.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=GEMMA, prompt=PROMPT, max_tokens=30, temperature=0, stop=stop, stream=True
        )
    )
    assert streamed == cut.choices[0].text


def test_gemma_seed_reproducible_at_temperature(client: OpenAI) -> None:
    def sample(seed: int) -> str:
        response = client.completions.create(
            model=GEMMA, prompt="Once upon a time", max_tokens=24, temperature=0.9, top_p=0.95, seed=seed
        )
        return response.choices[0].text

    first = sample(1234)
    assert sample(1234) == first
    assert any(sample(seed) != first for seed in (1, 2, 3))


def test_gemma_chat_wrong_role_order_is_400(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as info:
        client.chat.completions.create(
            model=GEMMA,
            messages=[{"role": "assistant", "content": "Hi"}, {"role": "assistant", "content": "Hi again"}],
            max_tokens=5,
        )
    assert info.value.status_code == 400
    assert "alternate" in str(info.value)


# -- tiny random Llama (transformers) ---------------------------------------------------------------------------
def test_tiny_llama_chat_and_completion(client: OpenAI, tiny: str) -> None:
    chat = client.chat.completions.create(
        model=tiny, messages=[{"role": "user", "content": "Hello world"}], max_tokens=12, temperature=0, seed=1
    )
    assert chat.usage is not None
    assert chat.usage.completion_tokens <= 12
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    assert isinstance(chat.choices[0].message.content, str)
    text = client.completions.create(model=tiny, prompt="Hello world", max_tokens=16, temperature=0)
    streamed = client.completions.create(model=tiny, prompt="Hello world", max_tokens=16, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text.choices[0].text
    fixed = client.completions.create(
        model=tiny, prompt="Hello", max_tokens=40, temperature=1.0, seed=7, extra_body={"ignore_eos": True}
    )
    assert fixed.usage is not None
    assert fixed.usage.completion_tokens == 40
    assert fixed.choices[0].finish_reason == "length"
    again = client.completions.create(
        model=tiny, prompt="Hello", max_tokens=40, temperature=1.0, seed=7, extra_body={"ignore_eos": True}
    )
    assert again.choices[0].text == fixed.choices[0].text


def test_raw_sse_format(server: ServerProcess, tiny: str) -> None:
    body = {
        "model": tiny,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 8,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    with server.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == tiny for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    assert all(c["usage"] is None for c in chunks[:-1])


@pytest.fixture(scope="module")
def broken(server: ServerProcess) -> Iterator[str]:
    """The shared token loop over a model that raises after 5 tokens (tests/support/backends.py)."""
    with server.client() as http:
        created = http.post(
            "/v1/models",
            json={
                "id": "broken-textgen",
                "task": "text-generation",
                "backend": "tests.support.backends:BrokenTextGenerator",
                "source": "none",
            },
        )
        assert created.status_code == 201, created.text
        yield "broken-textgen"
        http.delete("/v1/models/broken-textgen")


def test_a_failure_mid_stream_makes_the_openai_client_raise(client: OpenAI, server: ServerProcess, broken: str) -> None:
    """After the first token the status is sent: the failure is a last ``error`` event, on which the official
    client raises APIError with the message and code (an aborted transfer would be APIConnectionError, without
    either), and no [DONE] follows."""
    received: list[str] = []

    def read_chat() -> None:
        for chunk in client.chat.completions.create(model=broken, messages=USER, max_tokens=20, stream=True):
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(APIError) as chat_error:
        read_chat()
    assert "".join(received) == "abcde"
    assert chat_error.value.code == "inference_failed"
    assert "RuntimeError" in chat_error.value.message
    texts: list[str] = []

    def read_completion() -> None:
        for piece in client.completions.create(model=broken, prompt="x", max_tokens=20, stream=True):
            texts.append(piece.choices[0].text)

    with pytest.raises(APIError) as completion_error:
        read_completion()
    assert "".join(texts) == "abcde"
    assert completion_error.value.code == "inference_failed"

    body = {"model": broken, "messages": USER, "max_tokens": 20, "stream": True}
    with server.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = sse_events(response)  # the transfer itself ends cleanly
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "inference_failed"
    assert set(events[-1]["error"]) == {"message", "type", "param", "code"}
    assert all("choices" in event for event in events[:-1])
    assert "text stream of broken-textgen failed after the answer started" in server.log_path.read_text()


def test_client_disconnect_stops_generation(server: ServerProcess, tiny: str) -> None:
    max_tokens = 4000  # ~10 s for the tiny model if nobody stopped it
    body = {"model": tiny, "prompt": "Hello", "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    with server.client() as http:
        http.post("/v1/completions", json={"model": tiny, "prompt": "warm up", "max_tokens": 1})
        before = http.get(f"/v1/workers/{tiny}/info").json()["backend_info"]
        with http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            for n, _line in enumerate(response.iter_lines()):
                if n >= 6:
                    break
        closed = time.monotonic()

        def stopped() -> dict[str, Any] | None:
            info = http.get(f"/v1/workers/{tiny}/info").json()
            backend = info["backend_info"]
            if info["in_flight"] == 0 and backend["generations"] > before["generations"]:
                return dict(backend)
            return None

        assert server.wait_for(stopped, timeout=10), "the worker kept generating after the client left"
        waited = time.monotonic() - closed
        backend = stopped()
    assert backend is not None
    assert backend["generations_cancelled"] == before["generations_cancelled"] + 1
    assert backend["last_generation"]["finish_reason"] == "cancelled"
    assert backend["last_generation"]["completion_tokens"] < max_tokens // 4
    assert waited < 5


# -- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", {"model": GEMMA, "messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"model": GEMMA, "messages": [{"role": "robot", "content": "x"}]}, 400, None),
        ("/v1/chat/completions", {"model": GEMMA, "messages": [{"role": "tool", "content": "x"}]}, 400, None),
        ("/v1/chat/completions", {"model": GEMMA, "messages": [{"role": "user"}]}, 400, None),
        ("/v1/chat/completions", {"model": GEMMA, "messages": "hi"}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"model": GEMMA, "messages": USER, "max_tokens": 0},
            400,
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            {"model": GEMMA, "messages": USER, "max_tokens": -5},
            400,
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            {"model": GEMMA, "messages": USER, "temperature": 3},
            400,
            "temperature",
        ),
        ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "n": 2}, 400, "n"),
        (
            "/v1/chat/completions",
            {"model": "no-such-model", "messages": USER},
            404,
            "model",
        ),
        (
            "/v1/chat/completions",
            {"model": "all-minilm-l6-v2", "messages": USER},
            404,
            "model",
        ),
        ("/v1/completions", {"model": GEMMA, "prompt": ""}, 400, "prompt"),
        ("/v1/completions", {"model": GEMMA, "prompt": ["a", "b"]}, 400, "prompt"),
        ("/v1/completions", {"model": GEMMA, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/completions", {"model": GEMMA, "prompt": "x", "stop": ["", "a"]}, 400, "stop"),
        ("/v1/completions", {"model": GEMMA}, 400, "prompt"),
        ("/v1/completions", {"model": "hibari", "prompt": "x"}, 404, "model"),
    ],
)
def test_bad_input_is_4xx_envelope(
    server: ServerProcess, path: str, body: dict[str, Any], status: int, param: str | None
) -> None:
    with server.client() as http:
        response = http.post(path, json=body)
        streamed = http.post(path, json={**body, "stream": True})
    for r in (response, streamed):
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["message"]
        if param:
            assert error["param"].startswith(param)


def test_prompt_longer_than_context_is_400_streaming_too(server: ServerProcess, tiny: str) -> None:
    prompt = "Hello world " * 3000  # > 4096 tokens for the tiny tokenizer
    with server.client() as http:
        for stream in (False, True):
            response = http.post("/v1/completions", json={"model": tiny, "prompt": prompt, "stream": stream})
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "context_length_exceeded"


def test_openai_client_errors(client: OpenAI) -> None:
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="nope", messages=USER)
    with pytest.raises(BadRequestError):
        client.chat.completions.create(model=GEMMA, messages=[], stream=True)


def test_serve_process_never_loads_llama_cpp(server: ServerProcess) -> None:
    assert server.health()["ml_modules_loaded"] == []
    assert server.process is not None
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "libllama" not in maps
    assert "libggml" not in maps
