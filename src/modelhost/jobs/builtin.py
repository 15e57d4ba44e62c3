"""The pipelines every server runs. Add a pipeline kind here (one import, one list entry)."""

from __future__ import annotations

from modelhost.jobs.pipeline import Pipeline


def builtin_pipelines() -> list[Pipeline]:
    from modelhost.jobs.meeting import PIPELINE as meeting_transcription
    from modelhost.jobs.presentation import PIPELINE as presentation_video
    from modelhost.speakers.enrollment import PIPELINE as speaker_enrollment

    return [meeting_transcription, speaker_enrollment, presentation_video]
