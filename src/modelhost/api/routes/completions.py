"""OpenAI-compatible text generation: ``POST /v1/chat/completions`` and ``POST /v1/completions``.

Both stream as server-sent events (``data: {...}`` … ``data: [DONE]``) with ``"stream": true``. The first chunk is
read from the worker before the answer starts, so bad input (a prompt over the context, a chat template that
refuses the roles) is still a 4xx; an error after that arrives as a ``data: {"error": …}`` event. A client that
disconnects closes the worker stream, which stops generation between two tokens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import error_responses
from modelhost.catalog.models import ModelEntry
from modelhost.errors import InvalidRequest, ModelhostError

router = APIRouter(tags=["text generation"])

TASK = "text-generation"
ROLES = ("system", "developer", "user", "assistant")
MAX_STOP = 16


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model: str = Field(description="a text-generation model id (GET /v1/models?task=text-generation)")
    max_tokens: int | None = Field(
        None, le=2**31 - 1, description="most tokens to generate (default 256, capped by the context)"
    )
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy; default 1")
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = Field(None, description=f"up to {MAX_STOP} sequences that end the text")
    seed: int | None = Field(
        None, ge=-(2**63), le=2**63 - 1, description="same seed, prompt and parameters → same text"
    )
    n: int = Field(1, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    logprobs: bool | int | None = None
    user: str | None = None
    ignore_eos: bool = Field(False, description="not OpenAI (as in vLLM): generate past end-of-text, up to max_tokens")


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(None, le=2**31 - 1, description="the newer name of max_tokens")
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None


def _sampling_payload(request: _Sampling, max_tokens: int | None) -> dict[str, Any]:
    if max_tokens is not None and max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
    if request.n != 1:
        raise InvalidRequest("only n=1 is supported", param="n")
    if request.logprobs:
        raise InvalidRequest("logprobs are not supported", param="logprobs")
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > MAX_STOP or any(not s for s in stop):
        raise InvalidRequest(f"stop must hold 1 to {MAX_STOP} non-empty strings", param="stop")
    return {
        "max_tokens": max_tokens,
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "stop": stop,
        "seed": request.seed,
        "frequency_penalty": request.frequency_penalty,
        "presence_penalty": request.presence_penalty,
        "ignore_eos": request.ignore_eos,
    }


def _messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    if not messages:
        raise InvalidRequest("'messages' must hold at least one message", param="messages", code="empty_messages")
    out = []
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role {message.role!r} is not supported; use one of {', '.join(ROLES)}",
                param=f"messages[{i}].role",
            )
        content = message.content
        if isinstance(content, list):
            if any(part.type != "text" or part.text is None for part in content):
                raise InvalidRequest(
                    f"messages[{i}].content: only text parts are supported", param=f"messages[{i}].content"
                )
            content = "".join(part.text or "" for part in content)
        if content is None:
            raise InvalidRequest(f"messages[{i}].content is required", param=f"messages[{i}].content")
        out.append({"role": "system" if message.role == "developer" else message.role, "content": content})
    return out


def _usage(result: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(result.get("prompt_tokens", 0)), int(result.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _stream(
    coordinator: CoordinatorDep,
    model: ModelEntry,
    payload: dict[str, Any],
    make_chunk: Any,
    include_usage: bool,
    prefix: list[dict[str, Any]],
) -> StreamingResponse:
    # text generation streams JSON chunks (never bytes)
    chunks = cast("AsyncIterator[dict[str, Any]]", coordinator.infer_stream(model, payload))
    try:  # the first chunk comes before the answer starts, so bad input is still a 4xx
        first: dict[str, Any] | None = await anext(chunks)
    except StopAsyncIteration:
        first = None

    async def body() -> AsyncIterator[bytes]:
        try:
            for delta in prefix:
                yield _sse(make_chunk(delta, None, include_usage))
            item = first
            while item is not None:
                finish = item.get("finish_reason")
                if item.get("text") or finish is None:
                    yield _sse(make_chunk({"content": item.get("text", "")}, None, include_usage))
                if finish is not None:
                    yield _sse(make_chunk({}, finish, include_usage))
                    if include_usage:
                        yield _sse({**make_chunk({}, None, False), "choices": [], "usage": _usage(item)})
                    break
                item = await anext(chunks, None)
            yield b"data: [DONE]\n\n"
        except ModelhostError as exc:
            yield _sse(exc.envelope())
        finally:
            close = getattr(chunks, "aclose", None)  # an async generator: closing it stops the worker's generation
            if close is not None:
                await close()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post(
    "/v1/chat/completions",
    summary="Chat completion (OpenAI-compatible; streams with stream=true)",
    responses=error_responses(400, 404, 422, 429, 502, 503, 504),
)
async def create_chat_completion(
    request: ChatCompletionRequest, catalog: CatalogDep, coordinator: CoordinatorDep
) -> Response:
    max_tokens = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    payload = _sampling_payload(request, max_tokens)
    if request.tools:
        raise InvalidRequest("tools are not supported", param="tools")
    if request.response_format and request.response_format.get("type", "text") != "text":
        raise InvalidRequest("only response_format type 'text' is supported", param="response_format")
    payload["messages"] = _messages(request.messages)
    model = catalog.get_for_task_or_raise(TASK, request.model)
    completion_id, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())

    if request.stream:

        def chunk(delta: dict[str, Any], finish: str | None, with_usage: bool) -> dict[str, Any]:
            body: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model.id,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if with_usage:
                body["usage"] = None
            return body

        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        first_delta = [{"role": "assistant", "content": ""}]
        return await _stream(coordinator, model, payload, chunk, include_usage, first_delta)

    result = await coordinator.infer(model, payload)
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model.id,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result["text"], "refusal": None},
                "logprobs": None,
                "finish_reason": result["finish_reason"],
            }
        ],
        "usage": _usage(result),
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.post(
    "/v1/completions",
    summary="Text completion (OpenAI-compatible legacy API; streams with stream=true)",
    responses=error_responses(400, 404, 422, 429, 502, 503, 504),
)
async def create_completion(request: CompletionRequest, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    payload = _sampling_payload(request, request.max_tokens)
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    if len(prompts) != 1:
        raise InvalidRequest("send exactly one prompt (a string)", param="prompt")
    if not prompts[0]:
        raise InvalidRequest("'prompt' must not be empty", param="prompt", code="empty_prompt")
    if request.suffix:
        raise InvalidRequest("suffix (fill-in-the-middle) is not supported", param="suffix")
    payload["prompt"] = prompts[0]
    model = catalog.get_for_task_or_raise(TASK, request.model)
    completion_id, created = "cmpl-" + uuid.uuid4().hex, int(time.time())
    echo = prompts[0] if request.echo else ""

    if request.stream:

        def chunk(delta: dict[str, Any], finish: str | None, with_usage: bool) -> dict[str, Any]:
            body: dict[str, Any] = {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model.id,
                "system_fingerprint": None,
                "choices": [{"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}],
            }
            if with_usage:
                body["usage"] = None
            return body

        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        prefix = [{"content": echo}] if echo else []
        return await _stream(coordinator, model, payload, chunk, include_usage, prefix)

    result = await coordinator.infer(model, payload)
    body = {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model.id,
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "text": echo + result["text"], "logprobs": None, "finish_reason": result["finish_reason"]}
        ],
        "usage": _usage(result),
    }
    return Response(orjson.dumps(body), media_type="application/json")
