"""``POST /v1/embeddings`` (OpenAI-compatible), with a lean path for the common request.

``EmbeddingsFastPath`` (pure ASGI, the end of the app's hot path: ``modelhost.api.app.ModelhostApp``) answers a
JSON body that validates without Starlette's routing or FastAPI's request layer (dependency solving, body field
machinery, response classes): the same ``EmbeddingRequest`` validation, the same limits, the same coordinator call
and the same answer bytes. A request it does not take — another content type, a body that is not JSON or does not
validate — goes on to the FastAPI route below with its body replayed, so every validation error is answered
exactly as the route answers it.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from fastapi import APIRouter, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhost.api.composition import Services
from modelhost.api.deps import CatalogDep, CoordinatorDep, RuntimeDep
from modelhost.api.errors import INFERENCE_ERRORS, error_responses, modelhost_error_body, unexpected_error_body
from modelhost.catalog.aliases import resolve_model_or_raise
from modelhost.catalog.store import Catalog
from modelhost.coordinator.coordinator import Coordinator
from modelhost.errors import InvalidRequest, ModelhostError
from modelhost.media.vectors import float32_values
from modelhost.runtime_settings import RuntimeSettingsStore
from modelhost.schemas.embeddings import EmbeddingRequest, EmbeddingResult

router = APIRouter(tags=["embeddings"])
PATH = "/v1/embeddings"


def _check_limits(request: EmbeddingRequest, max_inputs: int, max_chars: int) -> None:
    """The runtime limits (settings that change while the server runs); the schema checked everything else."""
    texts = request.texts
    if len(texts) > max_inputs:
        raise InvalidRequest(
            f"'input' has {len(texts)} items; at most {max_inputs} per request (embeddings_max_inputs)",
            param="input",
            code="too_many_inputs",
        )
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise InvalidRequest(
                f"input[{i}] has {len(text)} characters; at most {max_chars} (embeddings_max_input_chars)",
                param="input",
                code="input_too_long",
            )


async def embed(
    request: EmbeddingRequest, catalog: Catalog, coordinator: Coordinator, runtime: RuntimeSettingsStore
) -> bytes:
    """The answer's JSON for a validated request (both paths)."""
    settings = runtime.current
    _check_limits(request, settings.embeddings_max_inputs, settings.embeddings_max_input_chars)
    model = resolve_model_or_raise(catalog, "embeddings", request.model)
    raw, count, dim, tokens = _result(await coordinator.infer(model, request.model_dump()))
    data: list[dict[str, Any]] = []
    if request.encoding_format == "base64":  # what OpenAI's client asks for by default: the same bytes, in base64
        row_bytes = dim * 4
        for i in range(count):
            chunk = raw[i * row_bytes : (i + 1) * row_bytes]
            data.append({"object": "embedding", "index": i, "embedding": base64.b64encode(chunk).decode("ascii")})
    else:
        values = float32_values(raw)
        for i in range(count):
            data.append({"object": "embedding", "index": i, "embedding": values[i * dim : (i + 1) * dim]})
    body = {
        "object": "list",
        "data": data,
        "model": model.id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return orjson.dumps(body)


def _result(value: dict[str, Any]) -> tuple[bytes, int, int, int]:
    """The worker's answer as ``EmbeddingResult``'s fields: little-endian float32 rows (sent by the worker as a
    binary frame), count, dim, prompt tokens. Values of exactly the fields' types (what the built-in backends send)
    are taken as they are — what validation would give, without building the model; anything else goes through
    ``EmbeddingResult``'s validation, as before (coerced, or a validation error: 500)."""
    raw, count, dim, tokens = (
        value.get("embeddings"),
        value.get("count"),
        value.get("dim"),
        value.get("prompt_tokens", 0),
    )
    if type(raw) is bytes and type(count) is int and type(dim) is int and type(tokens) is int:
        return raw, count, dim, tokens
    result = EmbeddingResult.model_validate(value)
    return result.embeddings, result.count, result.dim, result.prompt_tokens


@router.post(PATH, summary="Create embeddings (OpenAI-compatible)", responses=error_responses(*INFERENCE_ERRORS))
async def create_embeddings(
    request: EmbeddingRequest, catalog: CatalogDep, coordinator: CoordinatorDep, runtime: RuntimeDep
) -> Response:
    return Response(await embed(request, catalog, coordinator, runtime), media_type="application/json")


class EmbeddingsFastPath:
    """Pure ASGI: ``POST /v1/embeddings`` with a JSON body that validates, answered without the FastAPI layer.
    Installed behind the metrics, access and body-limit middleware (which therefore still apply); ``app`` is the
    application below its middleware; ``route`` is the FastAPI route, recorded in the scope as routing would (metrics
    label requests by it)."""

    def __init__(self, app: ASGIApp, route: Any = None) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" or not is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            parsed = orjson.loads(body)
            request = EmbeddingRequest.model_validate(parsed) if isinstance(parsed, dict) else None
        except Exception:  # not JSON, not valid, or anything unexpected: the route answers it, behind error handlers
            request = None
        if request is None:  # the route answers it (and its error) exactly as before
            await self.app(scope, _replay(body, receive), send)
            return
        if self.route is not None:
            scope["route"] = self.route
        services: Services = scope["app"].state.services
        status, headers = 200, {}
        try:
            answer = await embed(request, services.catalog, services.coordinator, services.runtime)
        except ModelhostError as exc:
            status, headers, answer = exc.status_code, exc.headers, orjson.dumps(modelhost_error_body(exc))
        except Exception as exc:
            status, answer = 500, orjson.dumps(unexpected_error_body(exc))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", b"application/json"),
                    *((name.lower().encode(), value.encode()) for name, value in headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def is_json(scope: Scope) -> bool:
    """Whether the request's content type is ``application/json``."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value).split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
