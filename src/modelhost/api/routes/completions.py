"""OpenAI-compatible text generation: ``POST /v1/chat/completions`` and ``POST /v1/completions``.

Both stream as server-sent events (``data: {...}`` … ``data: [DONE]``) with ``"stream": true``. The first chunk is
read from the worker before the answer starts, so bad input (a prompt over the context, a chat template that
refuses the roles) is still a 4xx; an error after that arrives as a last ``data: {"error": …}`` event, never
followed by ``data: [DONE]``: OpenAI's own API does this, and its official Python client raises ``APIError`` (with
the message and code) on such an event, while an aborted transfer would surface as ``APIConnectionError`` without
either — or, for SSE clients that stop at a closed connection, as a shorter answer that looks complete. A client
that disconnects closes the worker stream, which stops generation between two tokens.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import INFERENCE_ERRORS, error_responses
from modelhost.catalog.aliases import resolve_model_or_raise
from modelhost.catalog.schemas import ModelEntry
from modelhost.errors import ModelhostError, error_envelope
from modelhost.schemas.text_generation import ChatCompletionRequest, CompletionRequest

log = logging.getLogger(__name__)
router = APIRouter(tags=["text generation"])

TASK = "text-generation"


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
        except ModelhostError as exc:  # the status line is sent: the error is the last event, never [DONE]
            log.error("text stream of %s failed after the answer started (%s: %s)", model.id, exc.code, exc)
            yield _sse(exc.envelope())
        except Exception:
            log.exception("text stream of %s failed after the answer started", model.id)
            yield _sse(error_envelope("internal server error", "server_error", code="internal_error"))
        finally:
            close = getattr(chunks, "aclose", None)  # an async generator: closing it stops the worker's generation
            if close is not None:
                await close()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post(
    "/v1/chat/completions",
    summary="Chat completion (OpenAI-compatible; streams with stream=true)",
    responses=error_responses(*INFERENCE_ERRORS),
)
async def create_chat_completion(
    request: ChatCompletionRequest, catalog: CatalogDep, coordinator: CoordinatorDep
) -> Response:
    payload = request.model_dump()
    model = resolve_model_or_raise(catalog, TASK, request.model)
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

        first_delta = [{"role": "assistant", "content": ""}]
        return await _stream(coordinator, model, payload, chunk, request.include_usage, first_delta)

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
    responses=error_responses(*INFERENCE_ERRORS),
)
async def create_completion(request: CompletionRequest, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    payload = request.model_dump()
    model = resolve_model_or_raise(catalog, TASK, request.model)
    completion_id, created = "cmpl-" + uuid.uuid4().hex, int(time.time())
    echo = request.prompt_text if request.echo else ""

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

        prefix = [{"content": echo}] if echo else []
        return await _stream(coordinator, model, payload, chunk, request.include_usage, prefix)

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
