"""Optical character recognition (``POST /v1/ocr``, native multipart form)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from modelhost.schemas.base import FormModel, TaskModel

DEFAULT_OCR_MODEL = "rapidocr"


class OcrRequest(FormModel):
    model: str = Field(DEFAULT_OCR_MODEL, description="an OCR model id (GET /v1/models?task=ocr)")


class OcrPage(TaskModel):
    width: int
    height: int
    lines: list[dict[str, Any]] = Field(description="{text, confidence, box} in reading order")


class OcrResult(TaskModel):
    text: str
    pages: list[OcrPage]
