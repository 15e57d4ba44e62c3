// modelhost dashboard: a small vanilla ES module, no build step. It talks only to the public API.
const KEY_STORAGE = "modelhost.apiKey";
const COLORS = ["#2f6fdf", "#d9480f", "#1f9d55", "#ae3ec9", "#e0a100", "#0c8599", "#c2255c", "#5c940d"];
const STATES = { STARTING: "loading", READY: "warm", BUSY: "busy" };
const PRESENTATION_STAGES = ["processing_slides", "synthesizing_audio", "assembling_video"];
const TERMINAL = new Set(["completed", "failed", "cancelled"]);

let session = { role: "inference", keys_required: false };
let timers = [];
let aborts = [];

// ---------------------------------------------------------------------------------------------- helpers
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "style") Object.assign(el.style, value); // CSSOM: allowed by the page's CSP, unlike style=""
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders() {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function request(path, options = {}) {
  const signal = options.signal;
  const response = await fetch(path, { ...options, signal, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let code;
    try {
      const body = await response.json();
      message = body.error?.message || message;
      code = body.error?.code;
    } catch { /* not JSON */ }
    throw new ApiError(response.status, message, code);
  }
  return response;
}

async function api(path, options = {}) {
  const response = await request(path, options);
  if (response.status === 204) return null;
  return response.json();
}

function postJson(path, body, method = "POST") {
  return api(path, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function toast(message, kind = "info") {
  const shown = [...document.querySelectorAll("#toasts .toast")].some((t) => t.textContent === message);
  if (shown) return; // a poll that keeps failing says so once, not every second
  const el = h("div", { class: `toast ${kind}` }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

function reportError(error) {
  if (error?.name === "AbortError") return;
  toast(error?.message || String(error), "error");
}

function every(ms, fn) {
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    try { await fn(); } catch (error) { reportError(error); } finally { running = false; }
  };
  run();
  timers.push(setInterval(run, ms));
}

function abortable() {
  const controller = new AbortController();
  aborts.push(controller);
  return controller.signal;
}

const fmtBytes = (n) => (n == null ? "–" : n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`);
const fmtTime = (s) => {
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
};
const fmtDate = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

async function models(task) {
  const body = await api(`/v1/models?task=${encodeURIComponent(task)}`);
  return body.data.map((m) => m.id);
}

function modelSelect(name, task, preferred) {
  const select = h("select", { name, required: true }); // empty until the models arrive: no submit before
  models(task).then((ids) => {
    for (const id of ids) select.append(h("option", { value: id, selected: id === preferred }, id));
  }).catch(reportError);
  return select;
}

async function blobUrl(path) {
  const response = await request(path);
  return URL.createObjectURL(await response.blob());
}

async function download(path, filename) {
  const url = await blobUrl(path);
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function artifactLinks(job) {
  return h("span", { class: "links" }, job.artifacts.map((a) =>
    h("button", { class: "link", type: "button", "data-artifact": a.name,
      onclick: () => download(a.url, a.name).catch(reportError) }, a.name)));
}

/** Follow a job's server-sent events (fetch, so the key header travels); resolve with the finished job. */
async function followJob(jobId, onEvent, signal) {
  try {
    const response = await request(`/v1/jobs/${jobId}/events`, { signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (data) onEvent(JSON.parse(data));
      }
    }
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    // The stream broke: fall back to polling below.
  }
  for (;;) {
    const job = await api(`/v1/jobs/${jobId}`, { signal });
    onEvent(job);
    if (TERMINAL.has(job.status)) return job;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function jobProgress(stages = null) {
  const status = h("span", { class: "job-status" }, "submitted");
  const bar = h("progress", { max: 1, value: 0 });
  const stageLine = h("div", { class: "stages" });
  const errorLine = h("p", { class: "error-text job-error" });
  const stageOf = (name) => stageLine.querySelector(`[data-stage="${name}"]`);
  for (const name of stages || []) stageLine.append(h("span", { class: "stage", "data-stage": name }, name.replaceAll("_", " ")));
  const el = h("div", { class: "panel job-progress" }, h("div", {}, "Status: ", status, " ", bar, " ",
    h("span", { class: "stage-now muted" })), stageLine, errorLine);
  const update = (event) => {
    status.textContent = event.status;
    status.className = `job-status status-${event.status}`;
    el.dataset.status = event.status;
    bar.value = event.progress ?? 0;
    el.querySelector(".stage-now").textContent = event.stage ? `stage: ${event.stage}` : "";
    if (event.stage && !stageOf(event.stage)) {
      stageLine.append(h("span", { class: "stage", "data-stage": event.stage }, event.stage.replaceAll("_", " ")));
    }
    let passed = true;
    for (const node of stageLine.children) {
      const name = node.dataset.stage;
      const now = name === event.stage && !TERMINAL.has(event.status);
      if (name === event.stage) passed = false;
      node.classList.toggle("now", now);
      node.classList.toggle("done", passed || (name === event.stage && event.status === "completed"));
    }
    errorLine.textContent = event.error ? event.error.message : "";
  };
  return { el, update };
}

// ---------------------------------------------------------------------------------------------- pages
async function overviewPage(root) {
  const cards = h("div", { class: "cards" });
  const body = h("div");
  root.append(h("h1", {}, "Overview"), cards, body);
  const card = (label, value, id) => h("div", { class: "card", id }, h("b", {}, value), label);
  every(1000, async () => {
    const [health, catalog] = await Promise.all([api("/api/health"), api("/v1/models")]);
    const workers = new Map(health.workers.map((w) => [w.model, w]));
    const memory = health.workers.reduce((sum, w) => sum + (w.rss_bytes || 0), 0);
    const queued = Object.values(health.queue_depth || {}).reduce((a, b) => a + b, 0);
    const lock = health.gpu_lock || {};
    cards.replaceChildren(
      card("models in the catalog", catalog.data.length, "card-models"),
      card("workers running", health.workers.length, "card-workers"),
      card("worker memory", fmtBytes(health.memory ? health.memory.used_bytes : memory)
        + (health.memory && health.memory.budget_bytes ? ` of ${fmtBytes(health.memory.budget_bytes)}` : ""), "card-memory"),
      card(`GPU lock (${health.gpu_policy})`, lock.held ? `held by ${lock.holder || "?"}` : "free", "card-gpu"),
      card("queue depth", queued, "card-queue"),
      card("version", health.version, "card-version"),
    );
    const byTask = new Map();
    for (const model of catalog.data) {
      if (!byTask.has(model.task)) byTask.set(model.task, []);
      byTask.get(model.task).push(model);
    }
    const rows = [];
    for (const [task, list] of [...byTask.entries()].sort()) {
      rows.push(h("tr", { class: "group", "data-task": task }, h("th", { colspan: 7 }, task)));
      for (const model of list) {
        const worker = workers.get(model.id);
        const state = worker ? STATES[worker.state] || worker.state.toLowerCase() : "cold";
        let countdown = "–";
        if (worker && worker.idle_timeout > 0 && worker.in_flight === 0 && state === "warm") {
          countdown = `${Math.max(0, worker.idle_timeout - worker.idle_seconds).toFixed(0)} s`;
        } else if (worker && worker.idle_timeout < 0) countdown = "never";
        const actions = h("span", { class: "admin-only" },
          state === "cold" ? h("button", { type: "button", class: "warm-up", onclick: () => warmUp(model.id) }, "Warm up") : null,
          worker ? h("button", { type: "button", class: "danger stop", onclick: () => stopWorker(model.id) }, "Stop") : null);
        rows.push(h("tr", { "data-model": model.id, "data-state": state },
          h("td", {}, h("b", {}, model.id), h("div", { class: "muted" }, `${model.backend} · ${model.device}`)),
          h("td", {}, h("span", { class: `state state-${state}` }, state)),
          h("td", { class: "num" }, worker ? fmtBytes(worker.rss_bytes) : "–"),
          h("td", { class: "num" }, countdown),
          h("td", { class: "num" }, worker ? worker.requests : "–"),
          h("td", { class: "num" }, worker ? worker.queued + worker.in_flight : "–"),
          h("td", {}, actions)));
      }
    }
    const heads = [["model", ""], ["state", ""], ["memory", "num"], ["unloads in", "num"], ["requests", "num"], ["queue", "num"], ["", ""]];
    const sections = [h("table", { class: "models" },
      h("thead", {}, h("tr", {}, heads.map(([t, c]) => h("th", { class: c || null }, t)))), h("tbody", {}, rows))];
    body.replaceChildren(...sections);
  });
}

function warmUp(modelId) {
  toast(`warming up ${modelId}…`);
  postJson(`/v1/workers/${encodeURIComponent(modelId)}`, { wait: true })
    .then(() => toast(`${modelId} is warm`)).catch(reportError);
}

function stopWorker(modelId) {
  api(`/v1/workers/${encodeURIComponent(modelId)}`, { method: "DELETE" })
    .then(() => toast(`${modelId} stopped`)).catch(reportError);
}

async function jobsPage(root) {
  const kind = h("select", { name: "kind" }, h("option", { value: "" }, "all kinds"),
    ["meeting-transcription", "presentation-video", "speaker-enrollment"].map((k) => h("option", { value: k }, k)));
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any status"),
    ["pending", "running", "completed", "failed", "cancelled"].map((s) => h("option", { value: s }, s)));
  const table = h("div");
  root.append(h("h1", {}, "Jobs"), h("div", { class: "panel" }, "Filter: ", kind, " ", status), table);
  const refresh = async () => {
    const query = new URLSearchParams({ limit: "100" });
    if (kind.value) query.set("kind", kind.value);
    if (status.value) query.set("status", status.value);
    const page = await api(`/v1/jobs?${query}`);
    const rows = page.data.map((job) => h("tr", { "data-job": job.id, "data-status": job.status },
      h("td", {}, h("code", {}, job.id.slice(0, 12))),
      h("td", {}, openLink(job)),
      h("td", { class: `status-${job.status}` }, job.status, job.error ? h("div", { class: "error-text" }, job.error.message) : null),
      h("td", {}, job.stage || "–"),
      h("td", {}, h("progress", { max: 1, value: job.progress })),
      h("td", {}, fmtDate(job.created_at)),
      h("td", {}, artifactLinks(job)),
      h("td", {},
        TERMINAL.has(job.status) ? null : h("button", { type: "button", class: "secondary",
          onclick: () => api(`/v1/jobs/${job.id}/cancel`, { method: "POST" }).then(refresh).catch(reportError) }, "Cancel"),
        " ",
        h("button", { type: "button", class: "danger",
          onclick: () => api(`/v1/jobs/${job.id}`, { method: "DELETE" }).then(refresh).catch(reportError) }, "Delete"))));
    table.replaceChildren(
      h("p", { class: "muted" }, `${page.total} job(s)`),
      h("table", {}, h("thead", {}, h("tr", {}, ["id", "kind", "status", "stage", "progress", "created", "artifacts", ""]
        .map((t) => h("th", {}, t)))), h("tbody", {}, rows)));
  };
  kind.addEventListener("change", () => refresh().catch(reportError));
  status.addEventListener("change", () => refresh().catch(reportError));
  every(2000, refresh);
}

function openLink(job) {
  const page = { "meeting-transcription": "meetings", "presentation-video": "presentations" }[job.kind];
  return page ? h("a", { href: `#/${page}?job=${job.id}` }, job.kind) : job.kind;
}

// -- meetings
async function meetingsPage(root, params) {
  const file = h("input", { type: "file", name: "file", accept: "audio/*,video/*" });
  const recordButton = h("button", { type: "button", class: "secondary" }, "Record from microphone");
  let recorded = null;
  const form = h("form", { class: "grid", id: "meeting-form" },
    h("label", {}, "Recording"), h("span", {}, file, " or ", recordButton, h("span", { class: "muted rec-state" })),
    h("label", {}, "Speakers"), h("input", { type: "number", name: "num_speakers", min: 1, max: 64, placeholder: "detect" }),
    h("label", {}, "Language"), h("input", { name: "language", placeholder: "detect (e.g. en)", maxlength: 20 }),
    h("label", {}, "Model"), modelSelect("model", "speech-recognition", "whisper-tiny.en"),
    h("label", {}, "Identify"), h("label", {}, h("input", { type: "checkbox", name: "identify", checked: true }), " name enrolled speakers"),
    h("span", { class: "actions" }, h("button", { type: "submit" }, "Transcribe")));
  const out = h("div", { id: "meeting-result" });
  root.append(h("h1", {}, "Meetings"), h("div", { class: "panel" }, form), out);

  let recorder = null;
  recordButton.addEventListener("click", async () => {
    try {
      if (recorder) { recorder.stop(); return; }
      if (!navigator.mediaDevices) throw new Error("the microphone needs this page on localhost or behind HTTPS");
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.ondataavailable = (e) => chunks.push(e.data);
      recorder.onstop = () => {
        stream.getTracks().forEach((t) => t.stop());
        recorded = new File(chunks, "recording.webm", { type: recorder.mimeType || "audio/webm" });
        recorder = null;
        recordButton.textContent = "Record again";
        form.querySelector(".rec-state").textContent = ` recorded ${(recorded.size / 1024).toFixed(0)} KiB`;
      };
      recorder.start();
      recordButton.textContent = "Stop recording";
    } catch (error) { reportError(error); }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const audio = file.files[0] || recorded;
    if (!audio) { toast("choose a recording first", "error"); return; }
    const data = new FormData();
    data.append("file", audio, audio.name);
    const fields = new FormData(form);
    for (const name of ["num_speakers", "language", "model"]) if (fields.get(name)) data.append(name, fields.get(name));
    data.append("identify", fields.get("identify") ? "true" : "false");
    try {
      const job = await api("/v1/jobs/meeting-transcription", { method: "POST", body: data });
      history.replaceState(null, "", `#/meetings?job=${job.id}`);
      await showMeeting(out, job.id, URL.createObjectURL(audio));
    } catch (error) { reportError(error); }
  });
  if (params.get("job")) showMeeting(out, params.get("job"), null).catch(reportError);
}

async function showMeeting(out, jobId, audioUrl) {
  const progress = jobProgress(["decode", "transcribe", "diarize", "identify", "align", "render"]);
  out.replaceChildren(h("h2", {}, `Job ${jobId}`), progress.el);
  const job = await followJob(jobId, progress.update, abortable());
  progress.update(job);
  if (job.status !== "completed") return;
  const transcript = job.result;
  const colors = new Map(transcript.speakers.map((s, i) => [s.label, COLORS[i % COLORS.length]]));
  const nameOf = (s) => s.name || s.external_id || s.speaker || s.label;
  // Opened from the upload: the local file; opened later (Jobs page, a link): the job's audio.ogg artifact.
  const recording = job.artifacts.find((a) => a.media_type.startsWith("audio/"));
  if (!audioUrl && recording) audioUrl = await blobUrl(recording.url);
  const player = audioUrl ? h("audio", { controls: true, src: audioUrl, id: "meeting-audio", preload: "auto" })
    : h("p", { class: "muted" }, "(this job kept no audio)");
  const legend = h("div", { class: "legend" }, transcript.speakers.map((s) => h("span", { "data-speaker": s.label },
    h("span", { class: "swatch", style: { background: colors.get(s.label) } }),
    `${nameOf(s)} · ${fmtTime(s.talk_time)}`, s.score != null ? ` (match ${s.score.toFixed(2)})` : "")));
  const turns = h("div", { class: "transcript" }, transcript.segments.map((seg) => h("div", {
    class: "turn", style: { borderColor: colors.get(seg.speaker) || "#999" }, "data-speaker": seg.speaker,
    "data-name": seg.name || "", "data-start": seg.start,
    onclick: () => { if (player.play) { player.currentTime = seg.start; player.play().catch(() => {}); } },
  }, h("span", { class: "muted" }, fmtTime(seg.start)),
  h("span", { class: "who", style: { color: colors.get(seg.speaker) || "inherit" } }, nameOf(seg)),
  h("span", {}, seg.text))));
  out.append(h("div", { class: "panel" },
    h("p", {}, `${fmtTime(transcript.duration)} · language ${transcript.language || "?"} · ${transcript.speakers.length} speaker(s)`),
    player, h("h2", {}, "Speakers"), legend, h("h2", {}, "Transcript"), turns,
    h("h2", {}, "Downloads"), artifactLinks(job)));
}

// -- presentations
async function presentationsPage(root, params) {
  const form = h("form", { class: "grid", id: "presentation-form" },
    h("label", {}, "Deck (.pptx)"), h("input", { type: "file", name: "file", accept: ".pptx", required: true }),
    h("label", {}, "Reference voice"), h("input", { type: "file", name: "voice_sample", accept: "audio/*" }),
    h("label", {}, "TTS model"), modelSelect("model", "text-to-speech", "hibari"),
    h("label", {}, "Voice"), h("input", { name: "voice", placeholder: "model default" }),
    h("label", {}, "Silent slide (s)"), h("input", { type: "number", name: "silence_seconds", value: 1, step: 0.1, min: 0 }),
    h("span", { class: "actions" }, h("button", { type: "submit" }, "Make the video")));
  const out = h("div", { id: "presentation-result" });
  root.append(h("h1", {}, "Presentations"),
    h("p", { class: "muted" }, "The speaker notes of each slide are read aloud; the video shows the slides with subtitles."),
    h("div", { class: "panel" }, form), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const voice = data.get("voice_sample");
    if (!voice || !voice.size) data.delete("voice_sample");
    if (!data.get("voice")) data.delete("voice");
    try {
      const job = await api("/v1/jobs/presentation-video", { method: "POST", body: data });
      history.replaceState(null, "", `#/presentations?job=${job.id}`);
      await showPresentation(out, job.id);
    } catch (error) { reportError(error); }
  });
  if (params.get("job")) showPresentation(out, params.get("job")).catch(reportError);
}

async function showPresentation(out, jobId) {
  const progress = jobProgress(PRESENTATION_STAGES);
  out.replaceChildren(h("h2", {}, `Job ${jobId}`), progress.el);
  const job = await followJob(jobId, progress.update, abortable());
  progress.update(job);
  if (job.status !== "completed") return;
  const video = job.artifacts.find((a) => a.media_type.startsWith("video/"));
  const subtitles = job.artifacts.find((a) => a.name.endsWith(".vtt"));
  const player = h("video", { controls: true, id: "presentation-video", preload: "auto" });
  if (video) player.src = await blobUrl(video.url);
  if (subtitles) {
    player.append(h("track", { kind: "subtitles", label: "Notes", srclang: "en", default: true, src: await blobUrl(subtitles.url) }));
  }
  out.append(h("div", { class: "panel" }, player, h("h2", {}, "Artifacts"), artifactLinks(job)));
}

// -- speakers
async function speakersPage(root) {
  const enroll = h("form", { class: "grid", id: "enroll-form" },
    h("label", {}, "Name"), h("input", { name: "name", required: true }),
    h("label", {}, "External id"), h("input", { name: "external_id", required: true, placeholder: "e.g. employee number" }),
    h("label", {}, "Voice samples"), h("input", { type: "file", name: "files", multiple: true, accept: "audio/*", required: true }),
    h("span", { class: "actions" }, h("button", { type: "submit" }, "Enroll")));
  const identify = h("form", { class: "grid", id: "identify-form" },
    h("label", {}, "Clip"), h("input", { type: "file", name: "file", accept: "audio/*", required: true }),
    h("span", { class: "actions" }, h("button", { type: "submit" }, "Identify")));
  const identified = h("div", { id: "identify-result" });
  const status = h("div");
  const list = h("div", { id: "speaker-list" });
  root.append(h("h1", {}, "Speakers"), h("h2", {}, "Enroll a person"), h("div", { class: "panel" }, enroll, status),
    h("h2", {}, "Enrolled"), list, h("h2", {}, "Identify a clip"), h("div", { class: "panel" }, identify, identified));
  const refresh = async () => {
    const page = await api("/v1/speakers?limit=1000");
    list.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ["external id", "name", "status", "samples", "model", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, page.data.map((s) => h("tr", { "data-speaker": s.external_id, "data-status": s.status },
        h("td", {}, s.external_id), h("td", {}, s.name), h("td", {}, s.status),
        h("td", { class: "num" }, s.samples ?? s.num_samples ?? "–"), h("td", {}, s.model || "–"),
        h("td", {}, h("button", { type: "button", class: "danger", onclick: () =>
          api(`/v1/speakers/${encodeURIComponent(s.external_id)}`, { method: "DELETE" }).then(refresh).catch(reportError) }, "Delete")))))));
  };
  enroll.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(enroll);
    const data = new FormData();
    for (const sample of enroll.querySelector("[name=files]").files) data.append("files", sample, sample.name);
    data.append("metadata", JSON.stringify({ external_id: fields.get("external_id"), name: fields.get("name") }));
    try {
      const job = await api("/v1/speakers", { method: "POST", body: data });
      const progress = jobProgress();
      status.replaceChildren(progress.el);
      await refresh();
      const done = await followJob(job.id, progress.update, abortable());
      progress.update(done);
      await refresh();
      if (done.status === "completed") { toast(`${fields.get("name")} enrolled`); enroll.reset(); }
    } catch (error) { reportError(error); }
  });
  identify.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const result = await api("/v1/speakers/identify", { method: "POST", body: new FormData(identify) });
      identified.replaceChildren(
        h("p", {}, result.speaker ? h("b", { id: "identified" }, `${result.speaker.name} (${result.speaker.external_id})`) : "nobody enrolled matches",
          ` · threshold ${result.threshold}`),
        h("ul", {}, result.matches.map((m) => h("li", {}, `${m.name} (${m.external_id}): ${m.score.toFixed(3)}`))));
    } catch (error) { reportError(error); }
  });
  every(5000, refresh);
}

// -- playground
async function playgroundPage(root) {
  root.append(h("h1", {}, "Playground"));
  // chat
  const chatLog = h("div", { class: "chat", id: "chat-log" });
  const chatModel = modelSelect("model", "text-generation");
  const chatInput = h("textarea", { name: "message", placeholder: "Say something…" });
  const messages = [];
  const chat = h("form", {}, chatLog, chatInput, h("p", {}, chatModel, " ", h("button", { type: "submit" }, "Send"),
    " ", h("button", { type: "button", class: "secondary", onclick: () => { messages.length = 0; chatLog.replaceChildren(); } }, "Clear")));
  chat.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!chatInput.value.trim()) return;
    messages.push({ role: "user", content: chatInput.value });
    chatLog.append(h("div", { class: "msg user" }, chatInput.value));
    chatInput.value = "";
    const answer = h("div", { class: "msg assistant" });
    chatLog.append(answer);
    try {
      const response = await request("/v1/chat/completions", {
        method: "POST", headers: { "Content-Type": "application/json" }, signal: abortable(),
        body: JSON.stringify({ model: chatModel.value, messages, stream: true, max_tokens: 256 }),
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split("\n");
        buffer = lines.pop();
        for (const line of lines) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          answer.textContent += chunk.choices?.[0]?.delta?.content || "";
        }
      }
      messages.push({ role: "assistant", content: answer.textContent });
    } catch (error) { reportError(error); }
  });
  // speech → text
  const sttOut = h("p", { id: "stt-result" });
  const stt = h("form", { class: "grid" },
    h("label", {}, "Audio"), h("input", { type: "file", name: "file", accept: "audio/*,video/*", required: true }),
    h("label", {}, "Model"), modelSelect("model", "speech-recognition", "whisper-tiny.en"),
    h("span", { class: "actions" }, h("button", { type: "submit" }, "Transcribe")));
  stt.addEventListener("submit", async (event) => {
    event.preventDefault();
    sttOut.textContent = "…";
    try { sttOut.textContent = (await api("/v1/audio/transcriptions", { method: "POST", body: new FormData(stt) })).text; } catch (error) { sttOut.textContent = ""; reportError(error); }
  });
  // text → speech
  const ttsOut = h("div", { id: "tts-result" });
  const tts = h("form", { class: "grid" },
    h("label", {}, "Text"), h("textarea", { name: "input", required: true }, "Hello from modelhost."),
    h("label", {}, "Model"), modelSelect("model", "text-to-speech", "hibari"),
    h("label", {}, "Voice"), h("input", { name: "voice", placeholder: "model default" }),
    h("span", { class: "actions" }, h("button", { type: "submit" }, "Speak")));
  tts.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = Object.fromEntries(new FormData(tts));
    const body = { model: fields.model, input: fields.input, response_format: "wav" };
    if (fields.voice) body.voice = fields.voice;
    try {
      const response = await request("/v1/audio/speech", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      ttsOut.replaceChildren(h("audio", { controls: true, autoplay: true, src: URL.createObjectURL(await response.blob()) }));
    } catch (error) { reportError(error); }
  });
  // embeddings similarity
  const simOut = h("p", { id: "similarity" });
  const sim = h("form", { class: "grid" },
    h("label", {}, "Text A"), h("input", { name: "a", value: "A cat sits on the mat." }),
    h("label", {}, "Text B"), h("input", { name: "b", value: "A kitten is resting on a rug." }),
    h("label", {}, "Model"), modelSelect("model", "embeddings", "all-minilm-l6-v2-onnx"),
    h("span", { class: "actions" }, h("button", { type: "submit" }, "Compare")));
  sim.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = Object.fromEntries(new FormData(sim));
    try {
      const body = await postJson("/v1/embeddings", { model: fields.model, input: [fields.a, fields.b] });
      const [x, y] = body.data.map((d) => d.embedding);
      const dot = x.reduce((s, v, i) => s + v * y[i], 0);
      const norm = (v) => Math.sqrt(v.reduce((s, a) => s + a * a, 0));
      simOut.textContent = `cosine similarity ${(dot / (norm(x) * norm(y))).toFixed(3)}`;
    } catch (error) { reportError(error); }
  });
  root.append(h("h2", {}, "Chat (streamed)"), h("div", { class: "panel" }, chat),
    h("h2", {}, "Speech → text"), h("div", { class: "panel" }, stt, sttOut),
    h("h2", {}, "Text → speech"), h("div", { class: "panel" }, tts, ttsOut),
    h("h2", {}, "Embeddings similarity"), h("div", { class: "panel" }, sim, simOut));
}

// -- settings
async function settingsPage(root) {
  const body = await api("/v1/settings");
  const admin = session.role === "admin";
  const inputs = new Map();
  const rows = Object.entries(body.settings).map(([name, value]) => {
    let input;
    if (typeof value === "boolean") {
      input = h("select", { name, disabled: !admin }, h("option", { value: "true", selected: value }, "true"), h("option", { value: "false", selected: !value }, "false"));
    } else {
      input = h("input", { name, value: value ?? "", type: typeof value === "number" ? "number" : "text", step: "any", disabled: !admin });
    }
    inputs.set(name, { input, value });
    return h("div", { class: "setting", "data-setting": name }, h("code", {}, name), input, h("span", { class: "muted" }, body.descriptions[name] || ""));
  });
  const save = h("button", { type: "button", class: "admin-only", id: "save-settings" }, "Save changes");
  save.addEventListener("click", async () => {
    const changes = {};
    for (const [name, { input, value }] of inputs) {
      let next = input.value;
      if (typeof value === "boolean") next = next === "true";
      else if (typeof value === "number") next = Number(next);
      else if (value === null && next === "") next = null;
      if (next !== value) changes[name] = next;
    }
    if (!Object.keys(changes).length) { toast("nothing changed"); return; }
    try {
      await postJson("/v1/settings", changes, "PATCH");
      toast(`saved: ${Object.keys(changes).join(", ")}`);
      route();
    } catch (error) { reportError(error); }
  });
  root.append(h("h1", {}, "Settings"),
    h("p", { class: "muted" }, admin ? "Runtime settings take effect at once." : "Read-only: changing settings needs an admin key."),
    h("div", { class: "panel" }, rows, h("p", {}, save)));
}

// -- key entry
function keyPage(root, message) {
  const input = h("input", { type: "password", name: "key", size: 40, autocomplete: "off" });
  const form = h("form", { class: "grid", id: "key-form" }, h("label", {}, "API key"), input,
    h("span", { class: "actions" }, h("button", { type: "submit" }, "Use this key")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(KEY_STORAGE, input.value.trim());
    start();
  });
  root.replaceChildren(h("h1", {}, "Sign in"), h("p", {}, message), h("div", { class: "panel" }, form),
    h("p", { class: "muted" }, "The key is kept in this browser (localStorage) and sent as a Bearer token."));
}

// ---------------------------------------------------------------------------------------------- routing
const PAGES = {
  overview: overviewPage, jobs: jobsPage, meetings: meetingsPage, presentations: presentationsPage,
  speakers: speakersPage, playground: playgroundPage, settings: settingsPage,
};

function route() {
  for (const timer of timers) clearInterval(timer);
  for (const controller of aborts) controller.abort();
  timers = [];
  aborts = [];
  const [path, query] = (location.hash.replace(/^#\/?/, "") || "overview").split("?");
  const name = PAGES[path] ? path : "overview";
  for (const link of document.querySelectorAll("header nav a")) link.classList.toggle("active", link.getAttribute("href") === `#/${name}`);
  const root = document.getElementById("page");
  root.replaceChildren();
  root.dataset.page = name;
  Promise.resolve(PAGES[name](root, new URLSearchParams(query || ""))).catch(reportError);
}

async function start() {
  const who = document.getElementById("who");
  try {
    session = await api("/api/session");
  } catch (error) {
    if (error.status === 401) {
      localStorage.removeItem(KEY_STORAGE);
      keyPage(document.getElementById("page"), error.message);
      return;
    }
    throw error;
  }
  document.body.classList.toggle("role-admin", session.role === "admin");
  who.replaceChildren(`${session.role} access`, session.keys_required
    ? h("button", { type: "button", class: "link", style: { marginLeft: ".6rem", color: "#c9d3e6" },
      onclick: () => { localStorage.removeItem(KEY_STORAGE); start(); } }, "forget key") : "");
  route();
}

window.addEventListener("hashchange", route);
start().catch(reportError);
