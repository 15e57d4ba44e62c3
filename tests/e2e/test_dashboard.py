"""The web dashboard in a real browser: Playwright driving Debian's chromium (no browser download) against a real
server with real workers. Every page is screenshotted (``DASHBOARD_SCREENSHOTS`` picks the folder; the pytest tmp
dir otherwise); no console error and no request to anything but 127.0.0.1 is allowed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.audio import flite_wav
from tests.support.decks import SlideSpec, build_deck
from tests.support.diarization import conversation
from tests.support.server import ServerProcess

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and shutil.which("ffmpeg") and shutil.which("flite")),
    reason="needs chromium, ffmpeg and flite: run scripts/system-deps.sh",
)
ADMIN_KEY, INFERENCE_KEY = "admin-key-for-the-dashboard-test", "inference-key-for-the-dashboard-test"
LINES = (
    "Good morning, thanks for joining the planning call today.",
    "Happy to be here. Shall we start with the budget?",
    "Yes. The new office will cost more than we expected.",
    "How much more are we talking about, roughly?",
    "Then we should ask for three quotes before we decide.",
    "That works for me. Who will write to the suppliers?",
)
ENROLL_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call the office before noon on Monday.",
    "We need three more chairs for the meeting room.",
)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path_factory.mktemp("dashboard-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def dash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("dashboard")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt…
                "--use-fake-device-for-media-stream",  # …and feed it chromium's test tone
            ],
        )
        yield chromium
        chromium.close()


class Watched:
    """A page whose console errors, uncaught exceptions and non-local requests are recorded."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base_url)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.allowed_errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.context.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname != "127.0.0.1":
            self.foreign.append(url)
            route.abort()
            return
        route.continue_()

    def check(self) -> None:
        errors = [e for e in self.errors if not any(a in e for a in self.allowed_errors)]
        assert errors == [], errors
        assert self.foreign == [], self.foreign
        self.context.close()


@pytest.fixture
def watched(browser: Any, dash_server: ServerProcess) -> Iterator[Watched]:
    page = Watched(browser, dash_server.url)
    yield page
    page.check()


def wait_until_done(progress: Any, timeout_ms: int) -> None:
    """Wait for the job shown in ``progress`` to end, then require that it completed (failing with its error)."""
    playwright_sync.expect(progress).to_have_attribute(
        "data-status", re.compile("completed|failed|cancelled"), timeout=timeout_ms
    )
    status = progress.get_attribute("data-status")
    assert status == "completed", f"{status}: {progress.locator('.job-error').text_content()}"


def shot(page: Any, folder: Path, name: str) -> None:
    page.wait_for_timeout(300)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_overview_lists_the_catalog_and_shows_a_worker_turning_warm(
    watched: Watched, dash_server: ServerProcess, screenshots: Path
) -> None:
    expect = playwright_sync.expect
    page = watched.page
    page.goto("/")
    catalog = [m["id"] for m in httpx.get(dash_server.url + "/v1/models").json()["data"]]
    for model in catalog:
        expect(page.locator(f'tr[data-model="{model}"]')).to_have_count(1)
    row = page.locator('tr[data-model="all-minilm-l6-v2-onnx"]')
    expect(row).to_have_attribute("data-state", "cold")
    answer = httpx.post(
        dash_server.url + "/v1/embeddings", json={"model": "all-minilm-l6-v2-onnx", "input": "hello"}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    expect(row).to_have_attribute("data-state", "warm", timeout=10_000)
    expect(row.locator("td").nth(4)).to_have_text("1")  # requests served
    # Warm up and stop from the page (admin on loopback): the new POST /v1/workers/{id} route.
    vad = page.locator('tr[data-model="silero-vad"]')
    vad.locator("button.warm-up").click()
    expect(vad).to_have_attribute("data-state", "warm", timeout=60_000)
    expect(page.locator("#card-workers b")).to_have_text("2")
    shot(page, screenshots, "overview")
    vad.locator("button.stop").click()
    expect(vad).to_have_attribute("data-state", "cold", timeout=15_000)


def test_meeting_transcript_names_a_speaker_enrolled_on_the_speakers_page(
    watched: Watched, screenshots: Path, tmp_path: Path
) -> None:
    expect = playwright_sync.expect
    page = watched.page
    samples = [flite_wav(text, "slt", tmp_path / f"slt-{i}.wav") for i, text in enumerate(ENROLL_SENTENCES)]
    page.goto("/#/speakers")
    form = page.locator("#enroll-form")
    form.locator("[name=name]").fill("Ada Lovelace")
    form.locator("[name=external_id]").fill("ada")
    form.locator("[name=files]").set_input_files([str(p) for p in samples])
    form.locator("button[type=submit]").click()
    expect(page.locator('#speaker-list tr[data-speaker="ada"]')).to_have_attribute(
        "data-status", "ready", timeout=120_000
    )
    identify = page.locator("#identify-form")
    identify.locator("[name=file]").set_input_files(str(flite_wav(LINES[0], "slt", tmp_path / "clip.wav")))
    identify.locator("button[type=submit]").click()
    expect(page.locator("#identified")).to_contain_text("Ada Lovelace", timeout=60_000)
    shot(page, screenshots, "speakers")

    recording, _ = conversation(list(zip(("slt", "rms") * 3, LINES, strict=False)), 0.5, tmp_path, "meeting")
    page.goto("/#/meetings")
    meeting = page.locator("#meeting-form")
    record = meeting.get_by_role("button", name="Record from microphone")
    record.click()
    expect(meeting.get_by_role("button", name="Stop recording")).to_be_visible()
    page.wait_for_timeout(1000)
    meeting.get_by_role("button", name="Stop recording").click()
    expect(meeting.locator(".rec-state")).to_contain_text("recorded")
    meeting.locator("[name=file]").set_input_files(str(recording))
    meeting.locator("[name=num_speakers]").fill("2")
    meeting.locator("button[type=submit]").click()
    wait_until_done(page.locator("#meeting-result .job-progress"), 240_000)
    named = page.locator('.turn[data-name="Ada Lovelace"]')
    expect(named.first).to_be_visible()
    assert named.count() >= 2
    assert page.locator(".turn").count() >= 4
    turn = page.locator(".turn").nth(2)
    start = float(turn.get_attribute("data-start") or 0)
    turn.click()
    page.wait_for_function(
        "s => { const a = document.querySelector('#meeting-result audio'); return a && a.currentTime >= s; }",
        arg=start,
        timeout=10_000,
    )
    for name in ("transcript.json", "transcript.srt", "transcript.vtt", "transcript.txt", "audio.ogg"):
        expect(page.locator(f'#meeting-result [data-artifact="{name}"]')).to_have_count(1)
    with page.expect_download() as download:
        page.locator('#meeting-result [data-artifact="transcript.json"]').click()
    body = json.loads(Path(download.value.path()).read_text())
    assert any(s["name"] == "Ada Lovelace" for s in body["speakers"])
    page.evaluate("document.querySelector('#meeting-result audio').pause()")
    shot(page, screenshots, "meetings")

    # Opened again from the Jobs page (no local file now): the player plays the job's audio.ogg artifact.
    job_id = page.evaluate("location.hash").split("job=", 1)[1]
    page.goto("/#/jobs")
    page.locator(f'tr[data-job="{job_id}"] a').click()
    expect(page.locator("#meeting-result audio")).to_have_count(1, timeout=60_000)
    page.wait_for_function(
        "() => { const a = document.querySelector('#meeting-result audio'); return a && a.duration > 10; }",
        timeout=30_000,
    )
    later = page.locator(".turn").nth(3)
    start = float(later.get_attribute("data-start") or 0)
    later.click()
    page.wait_for_function(
        "s => { const a = document.querySelector('#meeting-result audio'); return a && a.currentTime >= s; }",
        arg=start,
        timeout=10_000,
    )
    page.evaluate("document.querySelector('#meeting-result audio').pause()")


@pytest.mark.skipif(not (shutil.which("soffice") and shutil.which("pdftoppm")), reason="needs LibreOffice, poppler")
def test_presentation_ends_with_a_playable_video_with_subtitles(
    watched: Watched, screenshots: Path, tmp_path: Path
) -> None:
    expect = playwright_sync.expect
    page = watched.page
    deck = build_deck(
        tmp_path / "deck.pptx",
        (
            SlideSpec("Welcome", "Hello and welcome to the quarterly review.", (200, 40, 40), body="Agenda"),
            SlideSpec("Goodbye", "Thank you for listening.", (40, 40, 200), body="Questions?"),
        ),
    )
    page.goto("/#/presentations")
    form = page.locator("#presentation-form")
    form.locator("[name=file]").set_input_files(str(deck))
    form.locator("button[type=submit]").click()
    progress = page.locator("#presentation-result .job-progress")
    wait_until_done(progress, 300_000)
    for stage in ("processing_slides", "synthesizing_audio", "assembling_video"):
        expect(progress.locator(f'.stage[data-stage="{stage}"]')).to_have_class("stage done")
    video = page.locator("#presentation-video")
    expect(video).to_have_count(1)
    expect(video.locator("track")).to_have_count(1)
    page.wait_for_function("() => document.querySelector('#presentation-video').readyState >= 2", timeout=20_000)
    page.evaluate("() => { const v = document.querySelector('#presentation-video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('#presentation-video').currentTime > 0.5", timeout=20_000)
    assert page.evaluate("() => document.querySelector('#presentation-video').duration") > 2
    page.evaluate("() => document.querySelector('#presentation-video').pause()")
    shot(page, screenshots, "presentations")


def test_jobs_playground_and_settings_pages(
    watched: Watched, dash_server: ServerProcess, screenshots: Path, tmp_path: Path
) -> None:
    expect = playwright_sync.expect
    page = watched.page
    client = dash_server.client()
    sample = flite_wav(ENROLL_SENTENCES[0], "rms", tmp_path / "rms.wav")
    enrolled = client.post(
        "/v1/speakers",
        files={"files": ("rms.wav", sample.read_bytes(), "audio/wav")},
        data={"metadata": json.dumps({"external_id": "grace", "name": "Grace Hopper"})},
    )
    assert enrolled.status_code == 202, enrolled.text
    job_id = enrolled.json()["id"]
    page.goto("/#/jobs")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_have_attribute("data-status", "completed", timeout=120_000)
    page.locator("select[name=kind]").select_option("presentation-video")
    expect(row).to_have_count(0)
    page.locator("select[name=kind]").select_option("speaker-enrollment")
    expect(row).to_have_count(1)
    for kind in page.locator("#page tbody tr td:nth-child(2)").all_text_contents():
        assert kind == "speaker-enrollment"
    shot(page, screenshots, "jobs")

    page.goto("/#/playground")
    # the model list arrives after the page: compare once it is there (before, the form does not submit)
    expect(page.locator("form:has(button:text('Compare')) select[name=model]")).to_have_value("all-minilm-l6-v2-onnx")
    page.get_by_role("button", name="Compare").click()
    expect(page.locator("#similarity")).to_contain_text("cosine similarity", timeout=60_000)
    stt = page.locator("form:has(button:text('Transcribe'))")
    stt.locator("[name=file]").set_input_files(str(sample))
    stt.locator("button[type=submit]").click()
    expect(page.locator("#stt-result")).to_contain_text("fox", timeout=60_000)
    page.get_by_role("button", name="Speak").click()
    expect(page.locator("#tts-result audio")).to_have_count(1, timeout=60_000)
    page.locator("textarea[name=message]").fill("The capital of France is")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#chat-log .msg.assistant")).to_have_text(re.compile(r"\w"), timeout=60_000)  # streamed
    shot(page, screenshots, "playground")

    page.goto("/#/settings")
    row = page.locator('[data-setting="worker_idle_timeout_seconds"]')
    expect(row).to_contain_text("idle")
    row.locator("input").fill("45")
    page.locator("#save-settings").click()
    expect(page.locator("#toasts")).to_contain_text("saved: worker_idle_timeout_seconds")
    expect(page.locator('[data-setting="worker_idle_timeout_seconds"] input')).to_have_value("45")
    assert client.get("/v1/settings").json()["settings"]["worker_idle_timeout_seconds"] == 45
    client.patch("/v1/settings", json={"worker_idle_timeout_seconds": 60})
    shot(page, screenshots, "settings")


def test_with_keys_the_page_asks_once_and_hides_admin_actions_from_an_inference_key(
    browser: Any, tmp_path: Path
) -> None:
    expect = playwright_sync.expect
    env = {"MODELHOST_API_KEYS": json.dumps([INFERENCE_KEY]), "MODELHOST_ADMIN_API_KEYS": json.dumps([ADMIN_KEY])}
    proc = ServerProcess(tmp_path / "data", env=env).start()
    try:
        watched = Watched(browser, proc.url)
        watched.allowed_errors.append("401")  # the one probe that tells the page a key is needed
        page = watched.page
        page.goto("/")
        page.locator("#key-form [name=key]").fill(INFERENCE_KEY)
        page.locator("#key-form button").click()
        row = page.locator('tr[data-model="silero-vad"]')
        expect(row).to_have_attribute("data-state", "cold")
        expect(row.locator("button.warm-up")).to_be_hidden()
        expect(page.locator("#who")).to_contain_text("inference")
        page.goto("/#/settings")
        expect(page.locator("#save-settings")).to_be_hidden()
        expect(page.locator('[data-setting="gpu_policy"] :is(input,select)')).to_be_disabled()
        page.reload()  # the key is remembered
        expect(page.locator("#who")).to_contain_text("inference")
        page.get_by_role("button", name="forget key").click()
        page.locator("#key-form [name=key]").fill(ADMIN_KEY)
        page.locator("#key-form button").click()
        expect(page.locator("#who")).to_contain_text("admin")
        page.goto("/#/settings")
        expect(page.locator("#save-settings")).to_be_visible()
        watched.check()
    finally:
        proc.stop()
