"""Text generation (``POST /v1/chat/completions`` and ``POST /v1/completions``, OpenAI-compatible).

Both requests refuse unknown fields and the OpenAI ones this server does not implement when they would change the
answer (``logit_bias``, ``best_of``, ``n`` > 1, ``logprobs``, ``tools``, ``suffix``…): a 400, never silently
ignored. A backend receives either request (``GenerationRequest``) and reads it through ``prompt_text``,
``chat_messages``, ``stop_sequences`` and ``max_new_tokens``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from modelhost.schemas.base import StrictTaskModel, TaskModel, invalid

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP = 16
INT32_MAX = 2**31 - 1


class ContentPart(TaskModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(TaskModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatMessage:
        if self.role not in ROLES:
            roles = ", ".join(ROLES)
            raise invalid("unsupported_role", f"role {self.role!r} is not supported; use one of {roles}", param="role")
        if self.content is None:
            raise invalid("missing_content", "a message needs 'content'", param="content")
        if isinstance(self.content, list) and any(p.type != "text" or p.text is None for p in self.content):
            raise invalid("unsupported_content", "only text content parts are supported", param="content")
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content)
        return self.content or ""


class StreamOptions(TaskModel):
    include_usage: bool = False


class _Sampling(StrictTaskModel):
    model: str = Field(description="a text-generation model id (GET /v1/models?task=text-generation)")
    max_tokens: int | None = Field(
        None, le=INT32_MAX, description="most tokens to generate (default 256, capped by the context)"
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
    logprobs: bool | int | None = Field(None, description="not supported (refused when set)")
    top_logprobs: int | None = Field(None, description="not supported (refused when set)")
    logit_bias: dict[str, float] | None = Field(None, description="not supported (refused when not empty)")
    user: str | None = None
    metadata: dict[str, str] | None = Field(None, description="accepted and ignored")
    store: bool | None = Field(None, description="accepted and ignored (nothing is stored)")
    service_tier: str | None = Field(None, description="accepted and ignored")
    ignore_eos: bool = Field(False, description="not OpenAI (as in vLLM): generate past end-of-text, up to max_tokens")

    @field_validator("max_tokens")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise invalid("invalid_parameter", "max_tokens must be at least 1")
        return value

    @field_validator("n")
    @classmethod
    def _one(cls, value: int) -> int:
        if value != 1:
            raise invalid("unsupported_parameter", "only n=1 is supported")
        return value

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | int | None) -> bool | int | None:
        if value:
            raise invalid("unsupported_parameter", "logprobs are not supported")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise invalid("unsupported_parameter", "logit_bias is not supported")
        return value

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise invalid("invalid_parameter", f"stop must hold 1 to {MAX_STOP} non-empty strings")
        return value

    @property
    def stop_sequences(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(None, le=INT32_MAX, description="the newer name of max_tokens")
    response_format: dict[str, Any] | None = Field(None, description="only {'type': 'text'}")
    tools: list[Any] | None = Field(None, description="not supported (refused when not empty)")
    tool_choice: str | dict[str, Any] | None = Field(None, description="only 'none' or 'auto' without tools")
    parallel_tool_calls: bool | None = Field(None, description="accepted and ignored (no tools)")

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if not value:
            raise invalid("empty_messages", "'messages' must hold at least one message")
        return value

    @field_validator("max_completion_tokens")
    @classmethod
    def _positive_completion(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise invalid("invalid_parameter", "max_completion_tokens must be at least 1")
        return value

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise invalid("unsupported_parameter", "tools are not supported")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_choice(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value not in (None, "none", "auto"):
            raise invalid("unsupported_parameter", "tools are not supported")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and value.get("type", "text") != "text":
            raise invalid("unsupported_parameter", "only response_format type 'text' is supported")
        return value

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def chat_messages(self) -> list[dict[str, str]]:
        """``{"role", "content"}`` dicts for a chat template (``developer`` is a ``system`` message)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in self.messages]


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = Field(None, description="not supported (fill-in-the-middle; refused when set)")
    best_of: int | None = Field(None, description="only 1 is supported")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        prompts = [value] if isinstance(value, str) else value
        if len(prompts) != 1:
            raise invalid("invalid_parameter", "send exactly one prompt (a string)")
        if not prompts[0]:
            raise invalid("empty_prompt", "'prompt' must not be empty")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise invalid("unsupported_parameter", "suffix (fill-in-the-middle) is not supported")
        return value

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise invalid("unsupported_parameter", "only best_of=1 is supported")
        return value

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


#: What a text-generation backend receives: a chat or a plain completion request.
GenerationRequest = ChatCompletionRequest | CompletionRequest


class GenerationResult(TaskModel):
    """A whole answer (``infer``), or a streamed piece (``infer_stream``): the last piece carries the finish reason
    and the token counts."""

    text: str = ""
    finish_reason: Literal["stop", "length", "cancelled"] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
