"""Presentation video: the parameters of ``POST /v1/jobs/presentation-video`` (shared by the route and the job)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PresentationParams(BaseModel):
    model: str = Field("hibari", description="text-to-speech model that reads the notes")
    voice: str | None = Field(None, description="a voice of that model (default: the model's default voice)")
    silence_seconds: float = Field(1.0, ge=0.1, le=60, description="length of a slide with no notes or [SILENCE]")
    width: int | None = Field(None, ge=16, le=3840, description="video width (default 1280, or from height)")
    height: int | None = Field(None, ge=16, le=2160, description="video height (default: the deck's aspect ratio)")
    reference_voice: str | None = Field(None, description="speak in a voice registered with POST /v1/audio/voices")
    voice_conversion_model: str = Field("world-vc", description="voice-conversion model for a reference voice")
    max_slides: int = Field(200, ge=1, description="set by the server (presentation_max_slides)")
