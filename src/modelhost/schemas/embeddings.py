"""Text embeddings (``POST /v1/embeddings``, OpenAI-compatible)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from modelhost.schemas.base import TaskModel, invalid


class EmbeddingRequest(TaskModel):
    model: str = Field(description="an embeddings model id (GET /v1/models)")
    input: str | list[str] | list[int] | list[list[int]] = Field(description="a string or a list of strings")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="truncate to this size (models marked matryoshka)")
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _texts_only(cls, value: str | list[str] | list[int] | list[list[int]]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise invalid("empty_input", "'input' must not be empty")
        if not all(isinstance(item, str) for item in items):
            raise invalid(
                "unsupported_input", "token-id input is not supported: send text (a string or a list of strings)"
            )
        for i, text in enumerate(items):
            if not text:
                raise invalid("empty_input", f"input[{i}] is an empty string")
        return value  # type: ignore[return-value]  # every item checked to be a str above

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)  # type: ignore[arg-type]


class EmbeddingResult(TaskModel):
    """What a worker answers: raw little-endian float32 rows, so the serve process never formats numbers."""

    embeddings: str = Field(description="base64 of count × dim little-endian float32")
    count: int
    dim: int
    prompt_tokens: int = 0
