"""The ``meeting-transcription`` pipeline: who said what, by name.

Params: ``MeetingParams`` (ASR model, language, speaker counts, identify); input ``file`` (any audio or video).
Steps (each a recorded stage):

1. ``decode`` — ffmpeg → 16 kHz mono 16-bit PCM (a work blob); plans chunks of at most ``meeting_chunk_seconds``
   (and at most ``worker_request_timeout_seconds`` of audio) cut at the quietest 50 ms of the last 5 s before
   each limit.
2. ``transcribe`` — ASR with word timestamps, one worker call per chunk (recorded per chunk, progress per chunk):
   the first chunk alone (its detected language holds for the rest), then the others in one ``ctx.gather`` (at most
   ``CONCURRENCY`` requests at once here, a Celery chord on a cluster); with a given language, all in one gather.
3. ``diarize`` — the diarizer per chunk, all chunks in one ``ctx.gather`` (recorded per chunk, progress per
   chunk); with several chunks, chunk speakers are then joined in chunk order into meeting speakers by
   the cosine of their voiceprints (``LINK_SIMILARITY``), then merged most-similar-first down to a given
   ``num_speakers`` / ``max_speakers``.
4. ``identify`` — per speaker: up to ``IDENTIFY_SECONDS`` of their longest turns → the speaker-embedding model →
   Qdrant candidates → one joint assignment (no person twice, best total score); below the threshold a speaker
   stays ``SPEAKER_nn``.
5. ``align`` — each word goes to the turn it overlaps most; segments break on speaker change and sentence end.
6. ``render`` — artifacts ``transcript.json``, ``.srt``, ``.vtt`` (names as cue voices), ``.txt``, and
   ``audio.ogg`` (the decoded recording, 16 kHz mono Opus, for players); the result.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

from modelhost.errors import InvalidRequest, StorageFull, UnsupportedMediaType, tool_reason, tool_reports_disk_full
from modelhost.jobs import inference
from modelhost.jobs.pipeline import Pipeline, StepContext, bounded_gather
from modelhost.jobs.transcript import (
    Turn,
    assign_speakers,
    build_segments,
    cosine,
    merge_closest,
    talk_times,
    to_srt,
    to_text,
    to_vtt,
    weighted_mean,
)
from modelhost.media.cuts import pcm16_energies, quietest_centre
from modelhost.schemas.jobs import MeetingTranscript

KIND = "meeting-transcription"
PIPELINE = Pipeline(KIND, description="transcribe a meeting recording with speaker names")

SAMPLE_RATE = 16_000
PCM = "audio.pcm"  # work blob: 16 kHz mono s16le
AUDIO_ARTIFACT = "audio.ogg"
CUT_SEARCH_SECONDS = 5.0
CUT_FRAME = 800  # samples (50 ms)
# Chunk speakers whose voiceprints are at least this similar are one meeting speaker (same-voice clips measure
# 0.90–0.96, different voices 0.50–0.74 with resemblyzer: tests/e2e/test_audio_speakers.py).
LINK_SIMILARITY = 0.8
IDENTIFY_SECONDS = 30.0
CANDIDATES = 5
# Chunk requests of one job in flight at once on one machine (a cluster runs its chord items as the nodes' Celery
# threads allow): enough to keep a worker's queue full, few enough that a long meeting's chunks do not all sit in
# memory and in the model's queue at once.
CONCURRENCY = 4


def wav_bytes(pcm: bytes) -> bytes:
    """16 kHz mono 16-bit PCM → a WAV file."""
    header = b"RIFF" + struct.pack("<I", len(pcm) + 36) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16) + b"data"
    return header + struct.pack("<I", len(pcm)) + pcm


async def _read_pcm(ctx: StepContext, first: int, last: int) -> bytes:
    """Samples [first, last) of the decoded audio (fewer past its end, none when ``last <= first``): only those
    bytes are read (a ranged GET on S3, not the whole recording)."""
    return await asyncio.to_thread(ctx.blobs.read_range, ctx.work_key(PCM), first * 2, max(0, last - first) * 2)


def _quietest(pcm: bytes, offset: int) -> int:
    """The sample index (``offset`` + position) at the centre of the quietest 50 ms frame of ``pcm`` (its end when
    it holds no whole frame)."""
    centre = quietest_centre(pcm16_energies(pcm, CUT_FRAME), CUT_FRAME)
    return offset + (len(pcm) // 2 if centre is None else centre)


async def _ffmpeg(*args: str, into: Path, what: str) -> tuple[int, str]:
    """Run ffmpeg quietly with ``args``, writing ``into`` (``what``, for the error); its exit status and error output.
    A full disk there is ``StorageFull`` whatever the exit status: ffmpeg exits 0 when only its last write (the
    trailer) fails, leaving a cut or empty file. Cancelled: ffmpeg is killed too."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InvalidRequest("ffmpeg is not installed on the server", code="ffmpeg_missing")
    process = await asyncio.create_subprocess_exec(
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *args, str(into),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, output = await process.communicate()
    finally:
        if process.returncode is None:  # cancelled: do not leave ffmpeg running
            process.kill()
            await process.wait()
    errors = output.decode("utf-8", "replace")
    if tool_reports_disk_full(errors):  # the server's disk, not the upload
        raise StorageFull.in_folder(into.parent, what, tool_reason(errors, "no space left", [*args, into]))
    return process.returncode or 0, errors


@PIPELINE.step("decode", weight=1)
async def decode(ctx: StepContext) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="modelhost-decode-") as folder:
        target = Path(folder) / "audio.pcm"  # a file, not a pipe: hours of audio never sit in memory
        async with ctx.input_path("file") as source:
            returncode, errors = await _ffmpeg(
                "-i", str(source), "-vn", "-f", "s16le", "-acodec", "pcm_s16le", "-ac", "1", "-ar", str(SAMPLE_RATE),
                into=target, what="the decoded audio",
            )  # fmt: skip
        if returncode != 0:
            reason = tool_reason(errors, f"ffmpeg exited with {returncode}", [source])
            raise UnsupportedMediaType(
                f"the uploaded file could not be decoded as audio: {reason}", param="file", code="invalid_audio"
            )
        samples = target.stat().st_size // 2
        if samples < SAMPLE_RATE // 10:
            raise InvalidRequest("the uploaded file holds no audio (or less than 0.1 s)", param="file", code="no_audio")
        await ctx.put_work(PCM, target)
    return {"duration": round(samples / SAMPLE_RATE, 3), "samples": samples, "chunks": await _plan(ctx, samples)}


async def _plan(ctx: StepContext, samples: int) -> list[list[int]]:
    """Chunks of at most ``meeting_chunk_seconds`` — and no longer than one worker request may take, counting one
    second of work per second of audio — each cut at the quietest 50 ms of the last 5 s before its limit."""
    runtime = ctx.deps.runtime.current
    seconds = min(runtime.meeting_chunk_seconds, runtime.worker_request_timeout_seconds)
    limit = max(int(seconds * SAMPLE_RATE), int(2 * CUT_SEARCH_SECONDS * SAMPLE_RATE))
    window = int(CUT_SEARCH_SECONDS * SAMPLE_RATE)
    chunks: list[list[int]] = []
    start = 0
    while samples - start > limit:
        low = start + limit - window
        cut = _quietest(await _read_pcm(ctx, low, start + limit), low)
        chunks.append([start, cut])
        start = cut
    chunks.append([start, samples])
    return chunks


def _chunks(ctx: StepContext) -> list[list[int]]:
    chunks: list[list[int]] = ctx.outputs["decode"]["chunks"]
    return chunks


async def _transcribe_chunk(ctx: StepContext, first: int, last: int, language: str | None) -> dict[str, Any]:
    """ASR of samples [first, last) → its language and its words, timestamps on the meeting's clock."""
    audio = wav_bytes(await _read_pcm(ctx, first, last))
    result = await inference.transcribe(ctx.deps, audio, model=ctx.params["model"], language=language)
    offset = first / SAMPLE_RATE
    return {
        "language": result.get("language"),
        "words": [
            {"word": w["word"], "start": round(w["start"] + offset, 3), "end": round(w["end"] + offset, 3)}
            for w in result.get("words", [])
        ],
    }


@PIPELINE.step("transcribe", weight=6)
async def transcribe(ctx: StepContext) -> dict[str, Any]:
    chunks = _chunks(ctx)
    given: str | None = ctx.params.get("language")
    done = 0

    async def chunk(index: int, language: str | None) -> dict[str, Any]:
        nonlocal done
        first, last = chunks[index]
        part: dict[str, Any] = await ctx.once(f"chunk-{index}", lambda: _transcribe_chunk(ctx, first, last, language))
        done += 1
        await ctx.progress(done / len(chunks))
        return part

    # The first chunk runs alone unless the language was given: the language it detects holds for the others. The
    # others depend on nothing but that: one fan-out (concurrent requests here, a chord over the nodes on a
    # cluster). Before the gather only the recorded first chunk runs: deterministic, and cheap when replayed.
    head = [] if given and len(chunks) > 1 else [await chunk(0, given)]
    language = given or (head[0]["language"] if head else None)
    parts = head + await ctx.gather(*(chunk(i, language) for i in range(len(head), len(chunks))), limit=CONCURRENCY)
    if language is None:  # nothing detected in the first chunk (no speech): the first language any chunk found
        language = next((p["language"] for p in parts if p["language"]), None)
    return {"language": language, "words": [word for part in parts for word in part["words"]]}


@PIPELINE.step("diarize", weight=3)
async def diarize(ctx: StepContext) -> dict[str, Any]:
    chunks = _chunks(ctx)
    num: int | None = ctx.params.get("num_speakers")
    low: int | None = ctx.params.get("min_speakers")
    high: int | None = ctx.params.get("max_speakers")
    if len(chunks) > 1:  # a chunk may hold fewer speakers than the meeting: only the upper bound holds per chunk
        num, low, high = None, None, num or high
    done = 0

    async def chunk(index: int) -> dict[str, Any]:
        nonlocal done
        first, last = chunks[index]

        async def call() -> dict[str, Any]:
            audio = wav_bytes(await _read_pcm(ctx, first, last))
            result = await inference.diarize(ctx.deps, audio, num_speakers=num, min_speakers=low, max_speakers=high)
            offset = first / SAMPLE_RATE
            return {
                "segments": [[s["start"] + offset, s["end"] + offset, s["speaker"]] for s in result["segments"]],
                "speakers": result["speakers"],
            }

        part: dict[str, Any] = await ctx.once(f"chunk-{index}", call)
        done += 1
        await ctx.progress(done / len(chunks))
        return part

    # Chunks are diarized independently (one fan-out); only the linking of their speakers below is in order.
    parts = (
        [await chunk(0)] if len(chunks) == 1 else await ctx.gather(*map(chunk, range(len(chunks))), limit=CONCURRENCY)
    )
    turns: list[tuple[float, float, int]] = []
    voices: list[tuple[list[float], float]] = []  # meeting speakers: (mean voiceprint, seconds)
    for part in parts:
        mapping: dict[str, int] = {}
        for speaker in part["speakers"]:
            vector = speaker.get("embedding")
            weight = float(speaker.get("duration") or 0.0)
            best, best_score = None, LINK_SIMILARITY
            for number, (embedding, _) in enumerate(voices):
                if vector and embedding and number not in mapping.values():
                    score = cosine(vector, embedding)
                    if score >= best_score:
                        best, best_score = number, score
            if best is None or len(chunks) == 1:
                voices.append((vector or [], weight))
                best = len(voices) - 1
            else:
                embedding, seconds = voices[best]
                voices[best] = (weighted_mean(embedding, seconds, vector, weight), seconds + weight)
            mapping[speaker["speaker"]] = best
        turns.extend((float(s), float(e), mapping[label]) for s, e, label in part["segments"])
    # Chunks may split one person in two; a given count (or upper bound) holds for the whole meeting.
    bound = ctx.params.get("num_speakers") or ctx.params.get("max_speakers")
    owner = merge_closest(voices, bound) if bound and len(chunks) > 1 else list(range(len(voices)))
    merged = sorted((s, e, owner[number]) for s, e, number in turns)
    # Labels in order of first appearance over the whole meeting.
    order: dict[int, str] = {}
    for _, _, number in merged:
        order.setdefault(number, f"SPEAKER_{len(order):02d}")
    return {"turns": [[s, e, order[number]] for s, e, number in merged]}


def _turns(ctx: StepContext) -> list[Turn]:
    return [(float(s), float(e), str(label)) for s, e, label in ctx.outputs["diarize"]["turns"]]


@PIPELINE.step("identify", weight=1)
async def identify(ctx: StepContext) -> dict[str, Any]:
    turns = _turns(ctx)
    labels = sorted({label for _, _, label in turns})
    if not ctx.params.get("identify", True) or not labels:
        return {"model": None, "speakers": {}}
    model = inference.DEFAULT_SPEAKER_MODEL
    threshold = ctx.deps.runtime.current.speaker_identify_threshold
    if not await asyncio.to_thread(ctx.deps.speakers.has_voiceprints, model):
        return {"model": model, "threshold": threshold, "speakers": {}}  # nobody enrolled: no voiceprints to make
    candidates: dict[str, list[tuple[str, float]]] = {}
    names: dict[str, str | None] = {}
    for index, label in enumerate(labels):
        mine = sorted((t for t in turns if t[2] == label), key=lambda t: t[0] - t[1])  # longest first
        picked, total = [], 0.0
        for start, end, _ in mine:
            if total >= IDENTIFY_SECONDS:
                break
            length = min(end - start, IDENTIFY_SECONDS - total)
            picked.append((start, start + length))
            total += length

        async def call(picked: list[tuple[float, float]] = picked) -> dict[str, Any]:
            pcm = b"".join(
                [await _read_pcm(ctx, int(s * SAMPLE_RATE), int(e * SAMPLE_RATE)) for s, e in sorted(picked)]
            )
            voiceprint = await inference.embed_speaker(ctx.deps, wav_bytes(pcm), model=model)
            if voiceprint.vector is None:
                return {"matches": []}
            matches = await asyncio.to_thread(ctx.deps.speakers.search, voiceprint.model, voiceprint.vector, CANDIDATES)
            return {"matches": [[m.external_id, m.name, m.score] for m in matches]}

        found = await ctx.once(f"speaker-{label}", call)
        candidates[label] = [(str(m[0]), float(m[2])) for m in found["matches"]]
        names.update({str(m[0]): m[1] for m in found["matches"]})
        await ctx.progress((index + 1) / len(labels))
    assigned = assign_speakers(candidates, threshold)
    speakers = {
        label: None if pick is None else {"external_id": pick[0], "name": names.get(pick[0]), "score": pick[1]}
        for label, pick in assigned.items()
    }
    return {"model": model, "threshold": threshold, "speakers": speakers, "candidates": candidates}


@PIPELINE.step("align", weight=0.5)
async def align(ctx: StepContext) -> dict[str, Any]:
    turns = _turns(ctx)
    identified: dict[str, dict[str, Any] | None] = ctx.outputs["identify"]["speakers"]
    segments = build_segments(ctx.outputs["transcribe"]["words"], turns, fallback="SPEAKER_00")
    for segment in segments:
        who = identified.get(segment["speaker"]) or {}
        segment["external_id"] = who.get("external_id")
        segment["name"] = who.get("name")
    times = talk_times(turns)
    labels = sorted(set(times) | {s["speaker"] for s in segments})
    speakers = []
    for label in labels:
        who = identified.get(label) or {}
        speakers.append(
            {
                "label": label,
                "external_id": who.get("external_id"),
                "name": who.get("name"),
                "score": who.get("score"),
                "talk_time": times.get(label, 0.0),
            }
        )
    transcript = MeetingTranscript.model_validate(
        {
            "duration": ctx.outputs["decode"]["duration"],
            "language": ctx.outputs["transcribe"]["language"],
            "speakers": speakers,
            "segments": segments,
        }
    )
    return transcript.model_dump(mode="json")


@PIPELINE.step("render", weight=0.5)
async def render(ctx: StepContext) -> dict[str, Any]:
    transcript: dict[str, Any] = ctx.outputs["align"]
    segments = transcript["segments"]
    body = json.dumps(transcript, ensure_ascii=False, indent=2).encode()
    # At once: each is a blob write and a database row (round trips to S3 and PostgreSQL on a cluster), and the
    # audio's encoding runs in ffmpeg meanwhile.
    await bounded_gather(
        [
            ctx.put_artifacts(
                ("transcript.json", body, "application/json"),
                ("transcript.srt", to_srt(segments).encode(), "application/x-subrip; charset=utf-8"),
                ("transcript.vtt", to_vtt(segments).encode(), "text/vtt; charset=utf-8"),
                ("transcript.txt", to_text(segments).encode(), "text/plain; charset=utf-8"),
            ),
            _put_audio(ctx),
        ],
        None,
    )
    return transcript


async def _put_audio(ctx: StepContext) -> None:
    """The recording as the transcript heard it (16 kHz mono, Opus at 24 kbit/s: ~11 MB an hour) for players
    such as the dashboard's, whose timestamps then match the transcript's."""
    with tempfile.TemporaryDirectory(prefix="modelhost-render-") as folder:
        target = Path(folder) / AUDIO_ARTIFACT
        async with ctx.work_path(PCM) as pcm:
            returncode, errors = await _ffmpeg(
                "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", str(pcm),
                "-c:a", "libopus", "-b:a", "24k", "-f", "ogg",
                into=target, what="the meeting audio",
            )  # fmt: skip
        if returncode != 0:
            raise RuntimeError(f"ffmpeg could not encode the meeting audio: {errors[-300:]}")
        await ctx.put_artifact(AUDIO_ARTIFACT, target, "audio/ogg")
