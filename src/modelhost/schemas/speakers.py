"""Speakers: enrollment metadata, a speaker as the API shows it, identification results."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelhost.schemas.jobs import ErrorBody

SpeakerStatus = Literal["pending", "ready", "failed"]


class SpeakerMetadata(BaseModel):
    """The ``metadata`` form field of ``POST /v1/speakers`` (JSON). Fields beyond these are kept as given."""

    model_config = ConfigDict(extra="allow")

    external_id: str = Field(
        min_length=1, max_length=200, pattern=r"^[^/\s][^/]*$", description="the caller's unique id for the person"
    )
    name: str | None = Field(None, max_length=500, description="the name transcripts show")


class SpeakerPatch(BaseModel):
    """``PATCH /v1/speakers/{external_id}``: a new name and/or fields merged into the metadata."""

    model_config = ConfigDict(extra="allow")

    name: str | None = Field(None, max_length=500)


class SpeakerView(BaseModel):
    external_id: str
    name: str | None
    metadata: dict[str, Any]
    status: SpeakerStatus
    samples: int = Field(description="number of samples averaged into the voiceprint")
    model: str = Field(description="the speaker-embedding model that made the voiceprint")
    job_id: str | None = Field(None, description="the last enrollment job")
    error: ErrorBody | None = None
    created_at: datetime
    updated_at: datetime


class SpeakerPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[SpeakerView]
    total: int
    limit: int
    offset: int


class SpeakerMatch(BaseModel):
    external_id: str
    name: str | None
    score: float = Field(description="cosine similarity of the voiceprints, -1..1")


class IdentifyResult(BaseModel):
    model: str
    matches: list[SpeakerMatch]
    speaker: SpeakerMatch | None = Field(description="the best match at or above the threshold, else null")
    threshold: float
