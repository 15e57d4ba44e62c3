"""The ``presentation-video`` pipeline: a .pptx whose speaker notes are the script → a narrated MP4.

Steps (the job's ``stage``): ``processing_slides`` (notes with python-pptx; LibreOffice → PDF → PNG per visible
slide) → ``synthesizing_audio`` (one TTS request per sentence group, all slides fanned out through the
coordinator; each slide recorded with ``ctx.once`` so a restarted job only redoes unfinished slides; optionally
re-voiced toward a reference recording) → ``assembling_video`` (one ffmpeg pass, subtitles from the measured
audio). Artifacts: ``video.mp4``, ``subtitles.srt``, ``subtitles.vtt``, ``notes.json``, ``slides-NN.png``,
``audio-NN.wav`` (artifact names cannot hold ``/``, so ``slides/NN.png`` became ``slides-NN.png``).

Params (``modelhost.api.routes.presentations`` validates them): ``model``, ``voice``, ``silence_seconds``,
``width``, ``height``, ``voice_conversion_model``, ``reference_voice`` (a registered voice) and the optional
input ``voice_sample``. The work happens in private temporary folders that are removed whatever happens
(failure, cancellation); everything a later step needs is an artifact or a recorded output.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from modelhost.errors import InvalidRequest, NotFound
from modelhost.jobs import inference
from modelhost.jobs.pipeline import TRANSFERS_AT_ONCE, Pipeline, StepContext, bounded_gather
from modelhost.media import presentation as media
from modelhost.media.slides import DeckError, Slide
from modelhost.media.voices import VoiceStore

KIND = "presentation-video"
PIPELINE = Pipeline(KIND, description="a .pptx with speaker notes → a narrated MP4 with subtitles")
STAGES = media.STAGES


def options_of(params: dict[str, Any], max_slides: int = 200) -> media.VideoOptions:
    return media.VideoOptions(
        silence_seconds=float(params.get("silence_seconds", 1.0)),
        width=params.get("width"),
        height=params.get("height"),
        max_slides=max_slides,
    )


def _deck_failure(exc: DeckError) -> InvalidRequest:
    return InvalidRequest(exc.message, param="file", code=exc.code)


def _slide_name(prefix: str, index: int, count: int, suffix: str) -> str:
    return f"{prefix}-{media.slide_file_name(index, count, suffix)}"


@PIPELINE.step("processing_slides", weight=2)
async def processing_slides(ctx: StepContext) -> dict[str, Any]:
    options = options_of(ctx.params, int(ctx.params.get("max_slides", 200)))
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="modelhost-presentation-"))
    try:
        pptx = work / "deck.pptx"
        async with ctx.input_path("file") as source:
            await asyncio.to_thread(shutil.copyfile, source, pptx)
        try:
            deck = await media.processing_slides(pptx, work, options)
        except DeckError as exc:
            raise _deck_failure(exc) from exc
        count = len(deck.slides)
        notes: dict[str, Any] = json.loads((work / "notes.json").read_text(encoding="utf-8"))
        await ctx.put_artifacts(
            *(
                (_slide_name("slides", i, count, ".png"), work / "slides" / media.slide_file_name(i, count, ".png"),
                 "image/png")
                for i in range(count)
            ),
            ("notes.json", json.dumps(notes, indent=2).encode("utf-8"), "application/json"),
        )  # fmt: skip
        await ctx.progress(1.0)
        return notes
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


async def _reference(ctx: StepContext) -> tuple[str, bytes, str] | None:
    inputs = ctx.params.get("inputs", {})
    if "voice_sample" in inputs:
        info = ctx.input_info("voice_sample")
        return str(info["filename"]), await ctx.read_input("voice_sample"), str(info["content_type"])
    name = ctx.params.get("reference_voice")
    if not name:
        return None
    reference = VoiceStore.under(ctx.deps.settings.data_dir).reference(str(name))
    if reference is None:  # deleted after the job was accepted
        raise NotFound(f"no reference voice named {name!r}", param="reference_voice")
    return reference


@PIPELINE.step("synthesizing_audio", weight=6)
async def synthesizing_audio(ctx: StepContext) -> dict[str, Any]:
    notes = ctx.outputs["processing_slides"]
    slides = [Slide(**slide) for slide in notes["slides"]]
    count = len(slides)
    options = options_of(ctx.params)
    model = str(ctx.params.get("model") or inference.DEFAULT_TTS_MODEL)
    voice = ctx.params.get("voice")
    reference = await _reference(ctx)
    converter = str(ctx.params.get("voice_conversion_model") or inference.DEFAULT_VOICE_CONVERSION_MODEL)
    limit = asyncio.Semaphore(max(1, options.tts_concurrency))
    done = 0

    async def synthesize(text: str) -> bytes:
        return await inference.synthesize_speech(ctx.deps, text, model=model, voice=voice)

    async def convert(audio: bytes) -> bytes:
        assert reference is not None
        return await inference.convert_voice(ctx.deps, audio, reference, model=converter)

    async def narrate(index: int) -> dict[str, Any]:
        data, timing = await media.narrate_slide(
            slides[index], synthesize, options, convert if reference is not None else None, limit
        )
        await ctx.put_artifact(_slide_name("audio", index, count, ".wav"), data, "audio/wav")
        return timing

    async def slide(index: int) -> dict[str, Any]:
        nonlocal done
        timing = await ctx.once(f"slide-{index + 1}", lambda: narrate(index))
        done += 1
        await ctx.progress(done / count)
        return timing

    timings = await ctx.gather(*(slide(i) for i in range(count)))
    return {"slides": timings, "reference_voice": reference is not None}


@PIPELINE.step("assembling_video", weight=2)
async def assembling_video(ctx: StepContext) -> dict[str, Any]:
    notes = ctx.outputs["processing_slides"]
    timings = ctx.outputs["synthesizing_audio"]["slides"]
    count = len(notes["slides"])
    options = options_of(ctx.params)
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="modelhost-presentation-"))
    try:
        (work / "slides").mkdir()
        (work / "audio").mkdir()
        (work / "notes.json").write_text(json.dumps(notes), encoding="utf-8")

        async def fetch(key: str, target: Path) -> None:
            async with ctx.blobs.local_path(key) as path:
                await asyncio.to_thread(shutil.copyfile, path, target)

        fetches = []
        keys = await ctx.artifact_keys()
        for index in range(count):
            for prefix, folder, suffix in (("slides", "slides", ".png"), ("audio", "audio", ".wav")):
                key = keys[_slide_name(prefix, index, count, suffix)]
                fetches.append(fetch(key, work / folder / media.slide_file_name(index, count, suffix)))
            timing_path = work / "audio" / media.slide_file_name(index, count, ".json")
            timing_path.write_text(json.dumps(timings[index]), encoding="utf-8")
        await bounded_gather(fetches, TRANSFERS_AT_ONCE)  # round trips to S3 on a cluster: several at once
        ctx.check_cancelled()
        try:
            summary = await media.assembling_video(work, options)
        except DeckError as exc:
            raise _deck_failure(exc) from exc
        final_notes = {**notes, "durations": summary["slide_durations"], "timings": timings}
        await ctx.put_artifacts(
            ("video.mp4", work / "video.mp4", "video/mp4"),
            ("subtitles.srt", work / "subtitles.srt", "application/x-subrip"),
            ("subtitles.vtt", work / "subtitles.vtt", "text/vtt"),
            ("notes.json", json.dumps(final_notes, indent=2).encode("utf-8"), "application/json"),
        )
        await ctx.progress(1.0)
        return {**summary, "reference_voice": ctx.outputs["synthesizing_audio"]["reference_voice"]}
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
