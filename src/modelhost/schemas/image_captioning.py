"""Image captioning (``POST /v1/images/captions``, native multipart form)."""

from __future__ import annotations

from pydantic import Field

from modelhost.schemas.base import FormModel, TaskModel

DEFAULT_MAX_TOKENS = 30


class CaptionRequest(FormModel):
    model: str = Field(description="an image-captioning model id (GET /v1/models?task=image-captioning)")
    prompt: str | None = Field(
        None, max_length=2000, description="text the caption starts with (conditional captioning)"
    )
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=512, description="most tokens in the caption")


class CaptionResult(TaskModel):
    caption: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
