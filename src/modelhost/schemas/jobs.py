"""Jobs: what ``/v1/jobs`` answers (a job, its artifacts, a page of jobs, a server-sent event)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class ErrorBody(BaseModel):
    """The fields of the API's error envelope (a failed job keeps the error that ended it)."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ArtifactView(BaseModel):
    name: str
    media_type: str
    size: int
    sha256: str
    url: str = Field(description="where to download it: GET /v1/jobs/{id}/artifacts/{name}")


class JobView(BaseModel):
    id: str
    kind: str
    status: JobStatus
    stage: str | None = Field(None, description="the pipeline step running now (the last one, once it ended)")
    progress: float = Field(ge=0, le=1)
    error: ErrorBody | None = None
    result: Any = None
    attempts: int = Field(description="how many times the job was started (resumes after a restart count)")
    artifacts: list[ArtifactView] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobView]
    total: int
    limit: int
    offset: int


class JobEvent(BaseModel):
    """One server-sent event: ``event:`` is ``status``, ``stage`` or ``progress``; ``data`` is this snapshot."""

    id: str
    kind: str
    status: JobStatus
    stage: str | None
    progress: float
    error: ErrorBody | None = None


class MeetingParams(BaseModel):
    """The form fields of ``POST /v1/jobs/meeting-transcription`` besides ``file``."""

    model: str = Field("whisper-tiny.en", description="speech-recognition model")
    language: str | None = Field(None, max_length=20, description="spoken language (ISO 639-1); detected when unset")
    num_speakers: int | None = Field(None, ge=1, le=64, description="exact number of speakers, when known")
    min_speakers: int | None = Field(None, ge=1, le=64)
    max_speakers: int | None = Field(None, ge=1, le=64)
    identify: bool = Field(True, description="name the speakers that match enrolled voiceprints")

    @model_validator(mode="after")
    def _counts(self) -> MeetingParams:
        if self.num_speakers is not None and (self.min_speakers is not None or self.max_speakers is not None):
            raise ValueError("give either num_speakers or min_speakers/max_speakers, not both")
        if self.min_speakers is not None and self.max_speakers is not None and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must not exceed max_speakers")
        return self


class Word(BaseModel):
    word: str
    start: float
    end: float


class MeetingSpeaker(BaseModel):
    label: str = Field(description="SPEAKER_00, SPEAKER_01… in order of first appearance")
    external_id: str | None
    name: str | None
    score: float | None = Field(description="cosine score of the match (null when not identified)")
    talk_time: float = Field(description="seconds this speaker talks")


class MeetingSegment(BaseModel):
    start: float
    end: float
    speaker: str
    external_id: str | None
    name: str | None
    text: str
    words: list[Word]


class MeetingTranscript(BaseModel):
    """The result of a meeting-transcription job (also its ``transcript.json`` artifact)."""

    duration: float
    language: str | None
    speakers: list[MeetingSpeaker]
    segments: list[MeetingSegment]
