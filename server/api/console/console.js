// avatarfarm operator console: plain JS, no build step.
// The key lives in sessionStorage and goes only into Authorization headers, never URLs,
// so the MJPEG preview is fetched with fetch() and its multipart parts decoded here.
"use strict";

const KEY_STORE = "avatarfarm.key";
let selected = null;
let previewAbort = null;
let poseTimer = null;

const $ = (sel) => document.querySelector(sel);

function key() { return sessionStorage.getItem(KEY_STORE) || ""; }

function status(text) { $("#status").textContent = text; }

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + key() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) {
    let message = res.status + "";
    try { const err = (await res.json()).error; message = err.message + (err.field ? " (" + err.field + ")" : ""); } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return res.status === 204 ? null : res.json();
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

async function refresh() {
  if (!key()) { status("enter an API key"); return; }
  let sessions;
  try { sessions = await api("GET", "/v1/sessions"); } catch (e) { status(e.message); return; }
  status(sessions.length + " session(s)");
  const body = $("#sessions tbody");
  body.replaceChildren();
  for (const s of sessions) {
    const row = document.createElement("tr");
    row.dataset.id = s.id;
    row.dataset.state = s.state;
    if (s.id === selected) row.className = "selected";
    cell(row, s.id);
    cell(row, s.state + (s.error ? ": " + s.error.message : ""), "state-" + s.state);
    cell(row, s.video.width + "x" + s.video.height + " @ " + s.stats.fps);
    cell(row, s.stats.frames_rendered + " (" + s.stats.frames_dropped + ")");
    cell(row, s.outputs.map((o) => o.url + " " + o.state).join(", ") || "—");
    const actions = cell(row, "");
    if (["starting", "live", "standby"].includes(s.state)) {
      const stop = document.createElement("button");
      stop.textContent = "Stop";
      stop.className = "stop";
      stop.onclick = async (ev) => {
        ev.stopPropagation();
        try { await api("DELETE", "/v1/sessions/" + s.id); } catch (e) { status(e.message); }
        refresh();
      };
      actions.appendChild(stop);
    }
    row.onclick = () => select(s.id);
    body.appendChild(row);
  }
}

function select(id) {
  selected = id;
  $("#preview-id").textContent = id;
  document.querySelectorAll("#sessions tbody tr").forEach((tr) => {
    tr.className = tr.dataset.id === id ? "selected" : "";
  });
  startPreview(id);
}

// MJPEG over fetch: parts are "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: N\r\n\r\n<N bytes>\r\n".
async function startPreview(id) {
  if (previewAbort) previewAbort.abort();
  previewAbort = new AbortController();
  const img = $("#preview");
  let res;
  try {
    res = await fetch("/v1/sessions/" + id + "/preview.mjpg", {
      headers: { Authorization: "Bearer " + key() }, signal: previewAbort.signal,
    });
  } catch (e) { return; }
  if (!res.ok) { status("preview: HTTP " + res.status); return; }
  const reader = res.body.getReader();
  let buf = new Uint8Array(0);
  const decoder = new TextDecoder("latin1");
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf); joined.set(value, buf.length);
      buf = joined;
      for (;;) {
        const head = decoder.decode(buf.subarray(0, Math.min(buf.length, 256)));
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) break;
        const match = /Content-Length: (\d+)/i.exec(head.slice(0, end));
        if (!match) { buf = new Uint8Array(0); break; }
        const start = end + 4, length = parseInt(match[1], 10);
        if (buf.length < start + length + 2) break;
        const jpeg = buf.slice(start, start + length);
        buf = buf.slice(start + length + 2);
        const old = img.src;
        img.src = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
        img.dataset.frames = String(parseInt(img.dataset.frames, 10) + 1);
        if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      }
    }
  } catch (e) { /* aborted: another session was selected */ }
}

function sendPose() {
  if (!selected) return;
  const expressions = {};
  document.querySelectorAll("#sliders input[data-expr]").forEach((input) => {
    expressions[input.dataset.expr] = parseFloat(input.value);
  });
  const yaw = parseFloat($("#yaw").value);
  api("PUT", "/v1/sessions/" + selected + "/pose", { expressions, head: { yaw, pitch: 0, roll: 0 } })
    .catch((e) => status(e.message));
}

function schedulePose() {  // at most ~10 PUTs a second while a slider moves
  if (poseTimer) return;
  poseTimer = setTimeout(() => { poseTimer = null; sendPose(); }, 100);
}

async function create(ev) {
  ev.preventDefault();
  const output = $("#c-output").value.trim();
  const body = {
    video: {
      width: parseInt($("#c-width").value, 10), height: parseInt($("#c-height").value, 10),
      fps: parseInt($("#c-fps").value, 10), encoder: $("#c-encoder").value,
    },
    scene: { background: $("#c-bg").value },
    outputs: output ? [{ url: output }] : [],
    driver: { idle: $("#c-idle").checked },
  };
  try {
    const s = await api("POST", "/v1/sessions", body);
    status("created " + s.id);
    await refresh();
    select(s.id);
  } catch (e) { status(e.message); }
}

function init() {
  $("#key").value = key();
  $("#key-form").onsubmit = (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("#key").value.trim());
    refresh();
  };
  $("#create-form").onsubmit = create;
  document.querySelectorAll("#sliders input").forEach((input) => {
    input.addEventListener("input", schedulePose);
  });
  refresh();
  setInterval(refresh, 2000);
}

init();
