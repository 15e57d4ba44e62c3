"""What every schema shares: the base model, typed validation errors, and how a validation failure is described."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

#: The error ``code`` of a validation failure that names no code of its own.
DEFAULT_CODE = "invalid_parameter"
_CODES_BY_TYPE = {
    "extra_forbidden": "unsupported_parameter",
    "missing": "missing_parameter",
    "json_invalid": "invalid_json",
    "string_unicode": "invalid_unicode",
}
_WHERE = ("body", "query", "path", "form", "header", "cookie")
_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "bytes"}


class TaskModel(BaseModel):
    """A request or result of a task. Unknown fields are ignored unless a model forbids them. Text must be valid
    Unicode: JSON can carry a lone surrogate (``"\\ud800"``), which no tokenizer or encoder takes (400, not 500)."""

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any, info: ValidationInfo) -> Any:
        if not _is_valid_text(value):
            raise invalid("invalid_unicode", f"{info.field_name} holds a lone surrogate: not valid Unicode text")
        return value


class StrictTaskModel(TaskModel):
    """A request whose unknown fields are refused (400 ``unsupported_parameter``) rather than ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class FormModel(TaskModel):
    """A request sent as a multipart form: an empty field counts as not given (HTML forms send empty strings)."""

    @model_validator(mode="before")
    @classmethod
    def _drop_empty_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != ""}
        return data


def invalid(code: str, message: str, *, param: str | None = None) -> PydanticCustomError:
    """Raise this from a validator: the answer is a 400 with this ``code`` and ``message`` as written; ``param``
    names the field when the validator checks the whole model (a field validator's field is known already)."""
    return PydanticCustomError("modelhost", message, {"code": code, "param": param})


def _is_valid_text(value: Any) -> bool:
    if isinstance(value, str):
        if value.isascii():
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, list | tuple):
        return all(_is_valid_text(item) for item in value)
    if isinstance(value, dict):
        return all(_is_valid_text(k) and _is_valid_text(v) for k, v in value.items())
    return True


def _is_type_tag(part: object) -> bool:
    """Pydantic names the union member in an error's location (``input.list[str].0``): not a parameter."""
    tags = ("list[", "dict[", "tuple[", "set[", "function-", "literal[")
    return isinstance(part, str) and (part in _TYPE_TAGS or part.startswith(tags))


def _param_of(error: Any) -> str | None:
    """The parameter a validation error is about (``messages.0.content``), without where the value was (body,
    query, form) and without pydantic's names of union members."""
    parts = list(error.get("loc", ()))
    if parts and parts[0] in _WHERE:
        parts = parts[1:]  # where the value was; only the first item (a body field may be named "query")
    return ".".join(str(p) for p in parts if not _is_type_tag(p)) or None


def describe_errors(errors: Sequence[Any]) -> tuple[str, str | None, str]:
    """Pydantic (or FastAPI) validation errors → ``(message, param, code)`` for the error envelope."""
    if not errors:
        return "invalid request", None, DEFAULT_CODE
    first = errors[0]
    param = _param_of(first)
    kind = first.get("type")
    context = first.get("ctx") or {}
    code = context.get("code") or _CODES_BY_TYPE.get(kind, DEFAULT_CODE)
    if context.get("param"):  # a model validator names the field, inside the model's own location
        param = f"{param}.{context['param']}" if param else str(context["param"])
    msg = str(first.get("msg", "invalid value"))
    if kind == "json_invalid":
        return "request body is not valid JSON", None, code
    if kind == "missing":
        return f"missing required parameter {param!r}", param, code
    if kind == "extra_forbidden":
        return f"unsupported parameter {param!r}: this server does not implement it", param, code
    extra = ""
    if len(errors) > 1:  # name where the others are, so that one round trip can fix them all
        others = sorted({name for error in errors[1:] if (name := _param_of(error))} - {param})
        where = f": {', '.join(repr(name) for name in others[:5])}{', …' if len(others) > 5 else ''}" if others else ""
        extra = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''}{where})"
    if kind == "modelhost":
        return msg + extra, param, code
    return (f"{param}: {msg}" if param else msg) + extra, param, code
