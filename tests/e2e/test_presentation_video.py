"""Presentation → narrated video through a real server: real LibreOffice, pdftoppm, ffmpeg, hibari TTS workers,
world-vc for the reference voice and whisper tiny.en to hear the result back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.audio import word_errors
from tests.support.decks import (
    STANDARD_DECK,
    SlideSpec,
    audio_peak,
    build_deck,
    build_empty_deck,
    mean_abs_difference,
    probe,
    small_rgb,
    video_frames,
)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.skipif(
    not (shutil.which("soffice") and shutil.which("pdftoppm") and shutil.which("ffmpeg")),
    reason="needs LibreOffice, poppler-utils and ffmpeg: run scripts/system-deps.sh",
)
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
STAGES = ["processing_slides", "synthesizing_audio", "assembling_video"]
TEMP_PREFIXES = ("modelhost-presentation-", "modelhost-lo-", "modelhost-pdf-", "modelhost-video-")
LONG_DECK = tuple(
    SlideSpec(f"Topic {i}", text, color)
    for i, (text, color) in enumerate(
        [
            ("Our first topic is the budget for next year.", (200, 40, 40)),
            ("The second topic covers hiring in the spring.", (40, 160, 40)),
            ("Third, we look at the new office in the city.", (40, 40, 200)),
            ("Fourth, the travel policy changes in March.", (220, 200, 40)),
            ("Finally, questions and answers from the team.", (160, 40, 160)),
        ],
        start=1,
    )
)


def submit(http: httpx.Client, deck: Path, **fields: Any) -> httpx.Response:
    files: dict[str, Any] = {"file": (deck.name, deck.read_bytes(), PPTX)}
    if "voice_sample" in fields:
        sample: Path = fields.pop("voice_sample")
        files["voice_sample"] = (sample.name, sample.read_bytes(), "audio/wav")
    return http.post("/v1/jobs/presentation-video", files=files, data={k: str(v) for k, v in fields.items()})


def wait(http: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {timeout} s: {job}")


def stages_from_events(http: httpx.Client, job_id: str) -> list[str]:
    seen: list[str] = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=300) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                stage = json.loads(line[6:]).get("stage")
                if stage and (not seen or seen[-1] != stage):
                    seen.append(stage)
    return seen


def artifact(http: httpx.Client, job_id: str, name: str, target: Path) -> Path:
    response = http.get(f"/v1/jobs/{job_id}/artifacts/{name}")
    assert response.status_code == 200, (name, response.text)
    target.write_bytes(response.content)
    return target


def span_audio(video: Path, start: float, end: float) -> bytes:
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-ss", f"{start:.3f}", "-to", f"{end:.3f}", "-i", str(video)]
    args += ["-vn", "-ac", "1", "-ar", "16000", "-f", "wav", "pipe:1"]
    return subprocess.run(args, check=True, capture_output=True).stdout


def leftover_temp(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIXES)]


@pytest.fixture(scope="module")
def decks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("decks")
    standard = build_deck(folder / "standard.pptx")
    corrupt = folder / "corrupt.pptx"
    corrupt.write_bytes(standard.read_bytes()[:3000])
    locked = folder / "locked.pptx"
    locked.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512)  # what an encrypted .pptx looks like
    text = folder / "notes.pptx"
    text.write_text("not a deck")
    return {
        "standard": standard,
        "long": build_deck(folder / "long.pptx", LONG_DECK),
        "empty": build_empty_deck(folder / "empty.pptx"),
        "corrupt": corrupt,
        "locked": locked,
        "text": text,
    }


def test_narrated_video_matches_slides_notes_and_audio(
    server: ServerProcess, decks: dict[str, Path], tmp_path: Path
) -> None:
    with server.client(timeout=300) as http:
        created = submit(http, decks["standard"], silence_seconds=0.8, width=640)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert created.headers["location"] == f"/v1/jobs/{job_id}"
        assert stages_from_events(http, job_id) == STAGES
        job = wait(http, job_id)
        assert job["status"] == "completed", job
        result = job["result"]
        assert result["slides"] == 4
        assert result["hidden_slides"] == [3]
        assert (result["width"], result["height"]) == (640, 360)
        names = {a["name"] for a in job["artifacts"]}
        expected = {"video.mp4", "subtitles.srt", "subtitles.vtt", "notes.json"}
        expected |= {f"slides-0{i}.png" for i in range(1, 5)} | {f"audio-0{i}.wav" for i in range(1, 5)}
        assert names == expected

        video = artifact(http, job_id, "video.mp4", tmp_path / "video.mp4")
        info = probe(video)
        streams = {s["codec_type"]: s for s in info["streams"]}  # type: ignore[attr-defined]
        assert streams["video"]["codec_name"] == "h264"
        assert streams["audio"]["codec_name"] == "aac"
        durations = result["slide_durations"]
        assert durations[1] == pytest.approx(0.8, abs=0.001)
        assert durations[2] == pytest.approx(0.8, abs=0.001)
        assert float(info["format"]["duration"]) == pytest.approx(sum(durations), abs=0.1)  # type: ignore[index]

        pngs = [artifact(http, job_id, f"slides-0{i}.png", tmp_path / f"{i}.png") for i in range(1, 5)]
        images = [small_rgb(png) for png in pngs]
        frames = video_frames(video)
        visible = [spec for spec in STANDARD_DECK if not spec.hidden]
        start = 0.0
        for index, (seconds, spec) in enumerate(zip(durations, visible, strict=True)):
            frame = frames[int((start + seconds / 2) * result["fps"])]
            differences = [mean_abs_difference(frame, image) for image in images]
            assert min(range(4), key=differences.__getitem__) == index, differences
            assert differences[index] < 8, differences
            if spec.notes in ("", "[SILENCE]", None):
                assert audio_peak(video, start + 0.05, start + seconds - 0.05) < 0.01
            else:
                heard = http.post(
                    "/v1/audio/transcriptions",
                    data={"model": "whisper-tiny.en"},
                    files={"file": ("span.wav", span_audio(video, start, start + seconds), "audio/wav")},
                )
                assert heard.status_code == 200, heard.text
                errors, words = word_errors(str(spec.notes), heard.json()["text"])
                assert errors / words <= 0.2, (spec.notes, heard.json()["text"])
            start += seconds

        srt = http.get(f"/v1/jobs/{job_id}/artifacts/subtitles.srt").text
        assert "Hello and welcome to the quarterly review." in srt
        assert "hidden" not in srt
        vtt = http.get(f"/v1/jobs/{job_id}/artifacts/subtitles.vtt").text
        assert vtt.startswith("WEBVTT")
        notes = http.get(f"/v1/jobs/{job_id}/artifacts/notes.json").json()
        assert notes["hidden_slides"] == [3]
        assert [s["silent"] for s in notes["slides"]] == [False, True, True, False]


def test_bad_decks_are_refused_at_submission(server: ServerProcess, decks: dict[str, Path]) -> None:
    with server.client() as http:
        cases = {"text": (415, "invalid_presentation"), "locked": (400, "encrypted_or_legacy_presentation")}
        cases |= {"empty": (400, "empty_presentation"), "corrupt": (400, "invalid_presentation")}
        for name, (status, code) in cases.items():
            response = submit(http, decks[name])
            assert response.status_code == status, (name, response.text)
            assert response.json()["error"]["code"] == code, name
            assert response.json()["error"]["param"] == "file"
        unknown = submit(http, decks["standard"], model="no-such-tts")
        assert unknown.status_code == 404
        bad = submit(http, decks["standard"], silence_seconds=-1)
        assert bad.status_code == 400
        missing_voice = submit(http, decks["standard"], reference_voice="nobody")
        assert missing_voice.status_code == 404


def test_reference_voice_sample(server: ServerProcess, decks: dict[str, Path], tmp_path: Path) -> None:
    sample = tmp_path / "rms.wav"
    subprocess.run(
        [
            "flite",
            "-voice",
            "rms",
            "-t",
            "Please call the office before noon on Monday, we need more chairs.",
            "-o",
            str(sample),
        ],
        check=True,
    )
    with server.client(timeout=300) as http:
        created = submit(http, decks["standard"], voice_sample=sample, width=320)
        assert created.status_code == 202, created.text
        job = wait(http, created.json()["id"])
        assert job["status"] == "completed", job
        assert job["result"]["reference_voice"] is True
        video = artifact(http, job["id"], "video.mp4", tmp_path / "v.mp4")
        assert float(probe(video)["format"]["duration"]) == pytest.approx(  # type: ignore[index]
            sum(job["result"]["slide_durations"]), abs=0.1
        )


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = ServerProcess(
        tmp_path / "data",
        env={
            "TMPDIR": str(temp),
            "MODELHOST_PRESENTATION_MAX_SLIDES": "5",
            "MODELHOST_PRESENTATION_MAX_BYTES": "500000",
        },
    )
    proc.start()
    yield proc, temp
    proc.stop()


def test_kill_9_while_synthesizing_resumes_and_cancel_leaves_nothing(
    restartable: tuple[ServerProcess, Path], decks: dict[str, Path], tmp_path: Path
) -> None:
    server, temp = restartable
    with server.client(timeout=120) as http:
        too_many = submit(http, build_deck(tmp_path / "six.pptx", (*LONG_DECK, LONG_DECK[0])))
        assert too_many.status_code == 413
        assert too_many.json()["error"]["code"] == "too_many_slides"
        huge = tmp_path / "huge.pptx"
        huge.write_bytes(b"PK\x03\x04" + b"\x00" * 600_000)
        too_big = submit(http, huge)
        assert too_big.status_code == 413
        assert too_big.json()["error"]["param"] == "file"
        job_id = submit(http, decks["long"], width=320).json()["id"]
        assert server.wait_for(
            lambda: http.get(f"/v1/jobs/{job_id}").json()["stage"] == "synthesizing_audio", timeout=120, interval=0.02
        )
    assert server.process is not None
    server.process.kill()  # kill -9: no shutdown, no cleanup
    server.process.wait()
    server.start()
    with server.client(timeout=300) as http:
        job = wait(http, job_id)
        assert job["status"] == "completed", job
        assert job["attempts"] >= 2
        assert job["result"]["slides"] == 5
        video = artifact(http, job_id, "video.mp4", tmp_path / "resumed.mp4")
        assert float(probe(video)["format"]["duration"]) == pytest.approx(  # type: ignore[index]
            sum(job["result"]["slide_durations"]), abs=0.1
        )

        cancelled_id = submit(http, decks["long"], width=320).json()["id"]
        assert server.wait_for(
            lambda: http.get(f"/v1/jobs/{cancelled_id}").json()["stage"] is not None, timeout=60, interval=0.02
        )
        assert http.post(f"/v1/jobs/{cancelled_id}/cancel").status_code == 200
        job = wait(http, cancelled_id)
        assert job["status"] == "cancelled"
        assert server.wait_for(lambda: not leftover_temp(temp), timeout=30), leftover_temp(temp)
        assert server.wait_for(lambda: not http.get(f"/v1/jobs/{cancelled_id}").json()["artifacts"], timeout=30)


def test_docs_python_snippet_runs(
    server: ServerProcess, decks: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import io
    import re

    from tests.support.server import REPO_ROOT

    document = (REPO_ROOT / "docs" / "presentation-video.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", document, flags=re.S)
    shutil.copyfile(decks["standard"], tmp_path / "deck.pptx")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet.replace("http://127.0.0.1:8000", server.url), {})  # noqa: S102 - our own docs
    assert out.getvalue().split() == ["completed", "assembling_video", "4"]
    assert probe(tmp_path / "video.mp4")["streams"]
