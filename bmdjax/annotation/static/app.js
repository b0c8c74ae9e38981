// bmdjax annotate: the page. Talks only to the local server (server.py).
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

const app = {
  queue: [],        // [{image, flagged, min_confidence, status}] in review order
  study: null,      // the open study (server's /api/study answer)
  points: [],       // [[x, y]] * 16, image pixels
  touched: [],      // moved by the annotator (confidence 1 from then on)
  selected: 0,
  cursor: null,     // last mouse position, image pixels
  view: null,       // {x, y, w, h}: the SVG viewBox
  checking: false,
  recheck: false,
  dirty: false,
};
window.bmdjaxAnnotate = app;  // for tests and the console

// ------------------------------------------------------------------ server
async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const res = await fetch(path, opts);
  let data = {};
  try { data = await res.json(); } catch (e) { data = {error: res.statusText}; }
  return {status: res.status, data};
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind || "info";
}

// ------------------------------------------------------------------ queue
async function loadQueue() {
  const {status, data} = await api("/api/queue");
  if (status !== 200) { say(data.error || "cannot read the queue", "error"); return; }
  app.queue = data.studies;
  $("progress").textContent = `${data.annotated} / ${data.total} annotated`;
  const list = $("queue"), names = $("study-names");
  list.replaceChildren(); names.replaceChildren();
  for (const s of app.queue) {
    const li = document.createElement("li");
    li.textContent = s.image + " ";
    li.dataset.image = s.image;
    if (s.min_confidence !== null) {
      const c = document.createElement("span");
      c.className = "qconf";
      c.textContent = `min conf ${s.min_confidence.toFixed(2)}`;
      li.appendChild(c);
    }
    if (s.flagged) li.classList.add("flagged");
    if (s.status) { li.classList.add("done"); li.title = s.status; }
    if (app.study && s.image === app.study.image) li.classList.add("current");
    li.addEventListener("click", () => openStudy(s.image));
    list.appendChild(li);
    const o = document.createElement("option");
    o.value = s.image;
    names.appendChild(o);
  }
}

function queueIndex() {
  return app.study ? app.queue.findIndex((s) => s.image === app.study.image) : -1;
}

function step(delta) {
  if (!app.queue.length) return;
  const i = queueIndex();
  const j = Math.min(Math.max(i + delta, 0), app.queue.length - 1);
  if (j !== i) openStudy(app.queue[j].image);
}

function nextPending() {
  const i = queueIndex();
  const order = app.queue.slice(i + 1).concat(app.queue.slice(0, Math.max(i, 0)));
  return order.find((s) => !s.status);
}

// ------------------------------------------------------------------ study
async function openStudy(image) {
  const {status, data} = await api("/api/study?image=" + encodeURIComponent(image));
  if (status !== 200) { say(`${image}: ${data.error || "not found"}`, "error"); return false; }
  app.study = data;
  app.points = data.landmarks.map((p) => [p[0], p[1]]);
  app.touched = app.points.map(() => false);
  app.selected = 0;
  app.dirty = false;
  history.replaceState(null, "", "#" + encodeURIComponent(image));
  $("study-name").textContent = data.image;
  const badge = $("study-status");
  const flagged = data.prefill_flags.length > 0;
  badge.textContent = data.status || (flagged ? "flagged" : "not annotated");
  badge.className = "badge " + (data.status || (flagged ? "flagged" : ""));
  $("study-source").textContent = `points: ${data.source}` +
      (data.status === "unusable" ? ` | unusable: ${data.reason}` : "");
  $("study-note").textContent = flagged && !data.status
      ? "Flagged: " + data.prefill_flags.join("; ") : (data.note || "");
  const film = $("film");
  film.setAttribute("width", data.width);
  film.setAttribute("height", data.height);
  film.setAttribute("href", "/api/image?image=" + encodeURIComponent(image));
  fit();
  buildLandmarkList();
  draw();
  showChecks(data.flags, data.rois);
  for (const li of $("queue").children) li.classList.toggle("current", li.dataset.image === image);
  say("", "info");
  return true;
}

function confidenceOf(i) {
  if (app.touched[i]) return 1;
  const c = app.study.confidence;
  return c ? c[i] : null;
}

function colourOf(i) {
  if (app.touched[i]) return "#f5f5f5";
  const c = confidenceOf(i);
  if (c === null || c === undefined) return "#4fc3f7";
  return c >= 0.8 ? "#43a047" : c >= 0.5 ? "#ffb300" : "#e53935";
}

function buildLandmarkList() {
  const ol = $("landmark-list");
  ol.replaceChildren();
  app.study.names.forEach((name, i) => {
    const li = document.createElement("li");
    li.textContent = name;
    const c = confidenceOf(i);
    if (c !== null && c !== undefined) {
      const s = document.createElement("span");
      s.className = "conf";
      s.textContent = app.touched[i] ? "moved" : c.toFixed(2);
      li.appendChild(s);
    }
    li.addEventListener("click", () => select(i));
    ol.appendChild(li);
  });
  select(app.selected);
}

function select(i) {
  app.selected = (i + 16) % 16;
  [...$("landmark-list").children].forEach((li, k) => li.classList.toggle("selected", k === app.selected));
  draw();
}

// ------------------------------------------------------------------ drawing
function unit() {  // image pixels per screen pixel
  const r = $("canvas").getBoundingClientRect();
  return app.view ? Math.max(app.view.w / Math.max(r.width, 1), app.view.h / Math.max(r.height, 1)) : 1;
}

function setView(v) {
  app.view = v;
  $("canvas").setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
  draw();
}

function fit() {
  const s = app.study;
  if (s) setView({x: -0.5, y: -0.5, w: s.width, h: s.height});
}

function zoom(factor, cx, cy) {
  const v = app.view;
  if (!v) return;
  cx = cx === undefined ? v.x + v.w / 2 : cx;
  cy = cy === undefined ? v.y + v.h / 2 : cy;
  setView({x: cx - (cx - v.x) * factor, y: cy - (cy - v.y) * factor, w: v.w * factor, h: v.h * factor});
}

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function draw() {
  if (!app.study) return;
  const u = unit(), pts = app.points;
  const edges = $("edges"), points = $("points");
  edges.replaceChildren(); points.replaceChildren();
  for (const [a, b] of app.study.edges) {
    el("line", {x1: pts[a][0], y1: pts[a][1], x2: pts[b][0], y2: pts[b][1],
                "stroke-width": 1.5 * u}, edges);
  }
  pts.forEach((p, i) => {
    const sel = i === app.selected;
    const c = el("circle", {cx: p[0], cy: p[1], r: (sel ? 8 : 6) * u, fill: colourOf(i),
                            "stroke-width": (sel ? 2.5 : 1) * u, "data-index": i,
                            class: sel ? "selected" : ""}, points);
    c.addEventListener("pointerdown", (ev) => startDrag(ev, i));
    const t = el("text", {x: p[0] + 9 * u, y: p[1] - 7 * u, "font-size": 12 * u,
                          "stroke-width": 3 * u, class: sel ? "selected" : ""}, points);
    t.textContent = `${i} ${app.study.names[i]}`;
  });
}

function drawRois(rois) {
  const g = $("rois"), u = unit();
  g.replaceChildren();
  for (const r of rois) {
    el("polygon", {points: r.corners.map((c) => c.join(",")).join(" "),
                   "stroke-width": 1.5 * u, "data-name": r.name}, g);
  }
}

function showChecks(flags, rois) {
  const list = $("check-list");
  list.replaceChildren();
  for (const f of flags) {
    const li = document.createElement("li");
    li.className = "fail";
    li.textContent = f;
    list.appendChild(li);
  }
  $("checks-ok").hidden = flags.length > 0;
  app.flags = flags;
  drawRois(rois);
}

// ------------------------------------------------------------------ checks
function confidences() {
  const c = app.study.confidence;
  if (!c) return null;
  return app.points.map((_, i) => confidenceOf(i));
}

async function check() {
  // One request at a time; changes made meanwhile trigger one more.
  if (app.checking) { app.recheck = true; return; }
  app.checking = true;
  const image = app.study.image;
  const {status, data} = await api("/api/check", {image, landmarks: app.points, confidence: confidences()});
  app.checking = false;
  if (app.study.image !== image) return;
  if (status === 200) showChecks(data.flags, data.rois);
  else say(data.error || "check failed", "error");
  if (app.recheck) { app.recheck = false; check(); }
}

// ------------------------------------------------------------------ mouse
function toImage(ev) {
  const svg = $("canvas");
  const pt = svg.createSVGPoint();
  pt.x = ev.clientX; pt.y = ev.clientY;
  const p = pt.matrixTransform(svg.getScreenCTM().inverse());
  return [p.x, p.y];
}

let drag = null;  // {kind: "point", index} or {kind: "pan", start, view}

function startDrag(ev, i) {
  ev.stopPropagation();
  ev.preventDefault();
  select(i);
  drag = {kind: "point", index: i};
}

function moveTo(i, p) {
  app.points[i] = [Math.round(p[0] * 100) / 100, Math.round(p[1] * 100) / 100];
  app.touched[i] = true;
  app.dirty = true;
}

function setupMouse() {
  const svg = $("canvas");
  svg.addEventListener("pointerdown", (ev) => {
    if (drag || !app.view) return;
    drag = {kind: "pan", start: [ev.clientX, ev.clientY], view: {...app.view}};
  });
  window.addEventListener("pointermove", (ev) => {
    if (!app.study) return;
    if (ev.target === svg || svg.contains(ev.target)) app.cursor = toImage(ev);
    if (!drag) return;
    if (drag.kind === "point") {
      moveTo(drag.index, toImage(ev));
      draw();
      check();
    } else {
      const u = unit();
      setView({...drag.view, x: drag.view.x - (ev.clientX - drag.start[0]) * u,
                             y: drag.view.y - (ev.clientY - drag.start[1]) * u});
    }
  });
  window.addEventListener("pointerup", (ev) => {
    if (drag && drag.kind === "point") {
      moveTo(drag.index, toImage(ev));
      buildLandmarkList();
      check();
    }
    drag = null;
  });
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const p = toImage(ev);
    zoom(ev.deltaY > 0 ? 1.15 : 1 / 1.15, p[0], p[1]);
  }, {passive: false});
  window.addEventListener("resize", draw);
}

// ------------------------------------------------------------------ saving
async function save(body) {
  const image = app.study.image;
  const {status, data} = await api("/api/save", {image, revision: app.study.revision, ...body});
  if (status === 409) {
    say(`${image}: ${data.error}`, "error");
    await openStudy(image);
    say(`${image}: ${data.error}`, "error");
    await loadQueue();
    return false;
  }
  if (status !== 200) { say(`${image}: ${data.error || "not saved"}`, "error"); return false; }
  app.study.revision = data.revision;
  app.dirty = false;
  await loadQueue();
  const note = data.flags && data.flags.length ? ` (saved with ${data.flags.length} failing check(s))` : "";
  const next = nextPending();
  if (next) await openStudy(next.image);
  say(`${image}: saved as ${data.status}${note}` + (next ? "" : "; every study is annotated"),
      data.flags && data.flags.length ? "error" : "info");
  return true;
}

function accept() {
  return save({status: "accepted", landmarks: app.points, confidence: confidences()});
}

function askUnusable() {
  $("unusable-choice").value = "";
  $("unusable-reason").value = "";
  $("unusable-dialog").showModal();
  $("unusable-choice").focus();
}

function setupDialog() {
  $("unusable-choice").addEventListener("change", () => {
    const v = $("unusable-choice").value;
    if (v && v !== "other") $("unusable-reason").value = v;
  });
  $("unusable-form").addEventListener("submit", (ev) => {
    const button = ev.submitter ? ev.submitter.value : "save";
    if (button !== "save") return;
    const reason = $("unusable-reason").value.trim() || $("unusable-choice").value;
    if (!reason || reason === "other") {
      ev.preventDefault();
      $("unusable-reason").placeholder = "a reason is required";
      $("unusable-reason").focus();
      return;
    }
    save({status: "unusable", reason});
  });
}

// ------------------------------------------------------------------ keys
function setupKeys() {
  window.addEventListener("keydown", (ev) => {
    const tag = (ev.target.tagName || "").toLowerCase();
    if (["input", "select", "textarea"].includes(tag) || $("unusable-dialog").open) return;
    if (!app.study) return;
    const k = ev.key;
    if (k === "Tab") { ev.preventDefault(); select(app.selected + (ev.shiftKey ? -1 : 1)); }
    else if (k === " ") {
      ev.preventDefault();
      if (app.cursor) { moveTo(app.selected, app.cursor); buildLandmarkList(); check(); }
    }
    else if (k === "n" || k === "N") step(1);
    else if (k === "p" || k === "P") step(-1);
    else if (k === "a" || k === "A" || k === "Enter") { ev.preventDefault(); accept(); }
    else if (k === "u" || k === "U") { ev.preventDefault(); askUnusable(); }
    else if (k === "b" || k === "B") { $("show-rois").click(); }
    else if (k === "+" || k === "=") zoom(1 / 1.25);
    else if (k === "-") zoom(1.25);
    else if (k === "0") fit();
  });
}

// ------------------------------------------------------------------ display
function setWindow() {
  let lo = +$("win-lo").value, hi = +$("win-hi").value;
  if (hi <= lo) hi = lo + 1;
  const slope = 255 / (hi - lo), intercept = -lo / (hi - lo);
  for (const id of ["fr", "fg", "fb"]) {
    $(id).setAttribute("slope", slope);
    $(id).setAttribute("intercept", intercept);
  }
}

async function main() {
  setupMouse();
  setupKeys();
  setupDialog();
  $("accept").addEventListener("click", accept);
  $("unusable").addEventListener("click", askUnusable);
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("fit").addEventListener("click", fit);
  $("win-lo").addEventListener("input", setWindow);
  $("win-hi").addEventListener("input", setWindow);
  $("show-rois").addEventListener("change", () => $("rois").classList.toggle("hidden", !$("show-rois").checked));
  $("jump").addEventListener("change", async () => {
    const name = $("jump").value.trim();
    if (name && await openStudy(name)) $("jump").value = "";
  });
  window.addEventListener("beforeunload", (ev) => { if (app.dirty) ev.preventDefault(); });
  await loadQueue();
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = app.queue.find((s) => s.image === wanted) || app.queue.find((s) => !s.status) || app.queue[0];
  if (first) await openStudy(first.image);
  else say("no studies in --dicom_dir", "error");
  document.body.dataset.ready = "1";
}

main();
