"""The ``speaker-enrollment`` pipeline: embed every sample, check it holds enough speech, average, store.

Params: ``external_id``, ``model`` (speaker-embedding model); inputs ``sample-0``, ``sample-1``…
Steps: ``embed`` (one speaker-embedding call per sample, recorded one by one) → ``store`` (average with the
samples already enrolled, normalise, upsert into Qdrant; the speaker becomes ``ready``). A failed or cancelled
enrollment marks a new speaker ``failed`` (an enrolled one keeps its voiceprint).
"""

from __future__ import annotations

import asyncio
from typing import Any

from modelhost.errors import InvalidRequest, ModelhostError
from modelhost.jobs import inference
from modelhost.jobs.pipeline import Pipeline, StepContext
from modelhost.speakers.directory import pack, unpack

KIND = "speaker-enrollment"
PIPELINE = Pipeline(KIND, description="embed, check and average voice samples into an enrolled speaker's voiceprint")


def sample_names(params: dict[str, Any]) -> list[str]:
    return sorted(params["inputs"], key=lambda name: int(name.rsplit("-", 1)[1]))


@PIPELINE.step("embed", weight=4)
async def embed(ctx: StepContext) -> list[str]:
    names = sample_names(ctx.params)
    minimum = ctx.deps.runtime.current.speaker_min_speech_seconds
    done = 0

    async def one(name: str) -> str:
        nonlocal done
        info = ctx.input_info(name)

        async def call() -> dict[str, Any]:
            audio = await ctx.read_input(name)
            try:
                print_ = await inference.embed_speaker(ctx.deps, audio, model=ctx.params["model"])
            except ModelhostError as exc:
                if exc.status_code >= 500:
                    raise
                exc.message = f"sample {info['filename']!r}: {exc.message}"
                exc.args = (exc.message,)
                raise
            return {"vector": pack(print_.vector) if print_.vector else None, "speech": print_.speech_duration}

        measured = await ctx.once(name, call)
        if measured["vector"] is None or measured["speech"] < minimum:
            raise InvalidRequest(
                f"sample {info['filename']!r} holds {measured['speech']:.2f} s of speech; "
                f"at least {minimum:g} s is needed for a voiceprint",
                param="files",
                code="too_little_speech",
            )
        done += 1
        await ctx.progress(done / len(names))
        return str(measured["vector"])

    return await ctx.gather(*(one(name) for name in names), limit=2)


@PIPELINE.step("store", weight=1)
async def store(ctx: StepContext) -> dict[str, Any]:
    vectors = [unpack(v) for v in ctx.outputs["embed"]]
    speaker = await asyncio.to_thread(ctx.deps.speakers.add_voiceprints, ctx.params["external_id"], vectors, ctx.job_id)
    return {"external_id": speaker.external_id, "samples": speaker.samples, "model": speaker.model}


@PIPELINE.on_end
async def mark_failed(ctx: StepContext, status: str, error: dict[str, Any] | None) -> None:
    if status == "completed":
        return
    reason = error or {"message": "enrollment cancelled", "type": "cancelled", "param": None, "code": "cancelled"}
    await asyncio.to_thread(ctx.deps.speakers.fail, ctx.params["external_id"], reason)
