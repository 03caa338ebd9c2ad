// The drawing page: a Pointer Events canvas, predictions from /api/predict, a side-by-side
// comparison from /api/compare, the model picker from /api/models and a TorchServe banner.
"use strict";

(() => {
  // From emnist/canvas.py through the template: the evaluations draw with the same pen.
  // EXPORT_SIDE is what is uploaded: a small PNG, independent of the screen's DPR.
  const EXPORT_SIDE = Number(document.body.dataset.canvasSize);
  const STROKE_RATIO = Number(document.body.dataset.brushRatio); // pen width / canvas side
  const DEBOUNCE_MS = 300;

  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const els = {
    predict: $("predict"), clear: $("clear"), undo: $("undo"), select: $("model-select"),
    prediction: $("prediction"), confidence: $("confidence"), meta: $("meta"), bars: $("bars"),
    preview: $("preview"), previewEmpty: $("preview-empty"), banner: $("banner"),
    compare: $("compare"), compareBtn: $("compare-btn"), hint: $("canvas-hint"),
  };

  // Strokes in canvas-relative units (0..1), so a resize or rotation redraws them exactly.
  const strokes = [];
  let current = null;
  let timer = null;
  let requestSeq = 0;
  let healthTimer = null;

  // ---- drawing -------------------------------------------------------------------------------
  function resize() {
    const rect = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(rect.width * dpr);
    canvas.height = Math.round(rect.height * dpr);
    redraw();
  }

  function paint(context, side, list) {
    context.save();
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#fff";
    context.fillRect(0, 0, side, side);
    context.strokeStyle = "#000";
    context.fillStyle = "#000";
    context.lineCap = "round";
    context.lineJoin = "round";
    context.lineWidth = side * STROKE_RATIO;
    for (const points of list) drawStroke(context, side, points);
    context.restore();
  }

  function drawStroke(context, side, points) {
    const p = points.map(([x, y]) => [x * side, y * side]);
    if (p.length === 1) { // a dot
      context.beginPath();
      context.arc(p[0][0], p[0][1], context.lineWidth / 2, 0, 2 * Math.PI);
      context.fill();
      return;
    }
    // Quadratic curves through the midpoints: smooth strokes from sparse pointer samples.
    context.beginPath();
    context.moveTo(p[0][0], p[0][1]);
    for (let i = 1; i < p.length - 1; i++) {
      const mx = (p[i][0] + p[i + 1][0]) / 2;
      const my = (p[i][1] + p[i + 1][1]) / 2;
      context.quadraticCurveTo(p[i][0], p[i][1], mx, my);
    }
    const last = p[p.length - 1];
    context.lineTo(last[0], last[1]);
    context.stroke();
  }

  function redraw() {
    const list = current ? [...strokes, current] : strokes;
    paint(ctx, canvas.width, list);
    els.hint.hidden = list.length > 0;
    els.undo.disabled = strokes.length === 0;
    els.clear.disabled = strokes.length === 0;
  }

  function point(event) {
    const rect = canvas.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return [clamp((event.clientX - rect.left) / rect.width),
      clamp((event.clientY - rect.top) / rect.height)];
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    // Capture keeps the stroke when the pen leaves the canvas; an inactive id throws.
    try { canvas.setPointerCapture(event.pointerId); } catch (err) { /* draw uncaptured */ }
    clearTimeout(timer);
    current = { id: event.pointerId, points: [point(event)] };
    redrawCurrent();
  });

  canvas.addEventListener("pointermove", (event) => {
    if (!current || event.pointerId !== current.id) return;
    event.preventDefault();
    // Coalesced events: every sample the device produced since the last frame.
    const samples = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const e of samples.length ? samples : [event]) current.points.push(point(e));
    redrawCurrent();
  });

  function endStroke(event) {
    if (!current || event.pointerId !== current.id) return;
    strokes.push(current.points);
    current = null;
    redraw();
    schedulePredict();
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());

  function redrawCurrent() {
    const list = [...strokes, current.points];
    paint(ctx, canvas.width, list);
    els.hint.hidden = true;
  }

  function undo() {
    if (!strokes.length) return;
    strokes.pop();
    redraw();
    strokes.length ? schedulePredict() : resetResult();
  }

  function clearAll() {
    strokes.length = 0;
    current = null;
    redraw();
    resetResult();
  }

  // ---- predictions ---------------------------------------------------------------------------
  function schedulePredict() {
    clearTimeout(timer);
    timer = setTimeout(predict, DEBOUNCE_MS);
  }

  function exportPng() {
    const off = document.createElement("canvas");
    off.width = off.height = EXPORT_SIDE;
    paint(off.getContext("2d"), EXPORT_SIDE, strokes);
    return new Promise((resolve) => off.toBlob(resolve, "image/png"));
  }

  function formFor(blob) {
    const form = new FormData();
    form.append("image", blob, "drawing.png");
    form.append("topk", "5");
    return form;
  }

  async function postJson(url, body) {
    const response = await fetch(url, { method: "POST", body });
    const data = await response.json().catch(() => ({ message: `HTTP ${response.status}` }));
    if (!response.ok) throw Object.assign(new Error(data.message), { status: response.status });
    return data;
  }

  async function predict() {
    clearTimeout(timer);
    if (!strokes.length) return;
    const seq = ++requestSeq;
    const blob = await exportPng();
    const form = formFor(blob);
    const [model, version] = (els.select.value || "|").split("|");
    if (model) form.append("model", model);
    if (version) form.append("version", version);
    document.body.classList.add("busy");
    try {
      const data = await postJson("/api/predict", form);
      if (seq !== requestSeq) return; // a newer drawing is on its way
      showResult(data);
      setBanner(null);
      compare(blob, seq);
    } catch (err) {
      if (seq !== requestSeq) return;
      showError(err);
    } finally {
      if (seq === requestSeq) document.body.classList.remove("busy");
    }
  }

  async function compare(blob, seq) {
    if (!strokes.length) return;
    blob = blob || await exportPng();
    seq = seq || requestSeq;
    els.compareBtn.disabled = true;
    try {
      const data = await postJson("/api/compare", formFor(blob));
      if (seq === requestSeq) showCompare(data);
    } catch (err) {
      if (seq === requestSeq) showCompareError(err);
    } finally {
      els.compareBtn.disabled = false;
    }
  }

  function pct(p) { return `${(p * 100).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)}%`; }

  function showResult(data) {
    els.preview.src = data.preview;
    els.preview.hidden = false;
    els.previewEmpty.hidden = true;
    els.meta.textContent = `${data.model} ${data.version} · ${Math.round(data.latency_ms)} ms`;
    els.bars.replaceChildren();
    if (data.empty || !data.predictions.length) {
      els.prediction.textContent = "–";
      els.confidence.textContent = "Nothing drawn";
      return;
    }
    const top = data.predictions[0];
    els.prediction.textContent = top.label;
    els.confidence.textContent = `${pct(top.probability)} confident`;
    for (const { label, probability } of data.predictions) {
      const li = document.createElement("li");
      li.className = "bar";
      li.setAttribute("aria-label", `${label}: ${pct(probability)}`);
      li.innerHTML = '<span class="bar-label"></span><span class="bar-track">' +
        '<span class="bar-fill"></span></span><span class="bar-value"></span>';
      li.querySelector(".bar-label").textContent = label;
      li.querySelector(".bar-fill").style.width = `${Math.max(1, probability * 100)}%`;
      li.querySelector(".bar-value").textContent = pct(probability);
      els.bars.append(li);
    }
  }

  function resetResult() {
    requestSeq++;
    clearTimeout(timer);
    els.prediction.textContent = "?";
    els.confidence.textContent = "Draw something to start";
    els.meta.textContent = "";
    els.bars.replaceChildren();
    els.preview.hidden = true;
    els.previewEmpty.hidden = false;
    els.compare.innerHTML =
      '<p class="muted">Every model\'s default version on the same drawing, side by side.</p>';
  }

  function showError(err) {
    if (err.status === 503 || err.status === 504 || !err.status) {
      setBanner(err.message || "TorchServe is unreachable");
    }
    els.prediction.textContent = "!";
    els.confidence.textContent = err.message || "Prediction failed";
  }

  function showCompare(data) {
    els.compare.replaceChildren();
    for (const result of data.results) {
      const card = document.createElement("div");
      card.className = "model-card" + (result.error ? " error" : "");
      const title = document.createElement("h3");
      title.textContent = result.error ? result.model : `${result.model} ${result.version}`;
      const big = document.createElement("div");
      big.className = "big";
      const small = document.createElement("div");
      small.className = "small";
      const top = result.predictions && result.predictions[0];
      if (result.error) {
        big.textContent = "!";
        small.textContent = result.error;
      } else {
        big.textContent = top ? top.label : "–";
        const p = top ? `${pct(top.probability)} · ` : "";
        small.textContent = `${p}${Math.round(result.latency_ms)} ms`;
      }
      card.append(title, big, small);
      els.compare.append(card);
    }
  }

  function showCompareError(err) {
    els.compare.innerHTML = '<p class="muted"></p>';
    els.compare.firstChild.textContent = `Compare failed: ${err.message}`;
  }

  // ---- models and health ---------------------------------------------------------------------
  async function loadModels() {
    try {
      const response = await fetch("/api/models");
      const data = await response.json();
      if (!response.ok) throw Object.assign(new Error(data.message), { status: response.status });
      const keep = els.select.value;
      els.select.replaceChildren();
      for (const model of data.models) {
        const group = document.createElement("optgroup");
        group.label = model.name;
        group.append(new Option(`${model.name} (default ${model.default})`, `${model.name}|`));
        for (const version of model.versions) {
          group.append(new Option(`${model.name} ${version}`, `${model.name}|${version}`));
        }
        els.select.append(group);
      }
      els.select.value = keep || `${data.default_model}|`;
      return true;
    } catch (err) {
      if (!els.select.querySelector("optgroup")) {
        els.select.replaceChildren(new Option("Models unavailable", ""));
      }
      setBanner(err.message || "TorchServe is unreachable");
      return false;
    }
  }

  async function checkHealth() {
    clearTimeout(healthTimer);
    let ok = false;
    try {
      const response = await fetch("/healthz", { cache: "no-store" });
      const data = await response.json();
      ok = response.ok;
      if (!ok) setBanner(data.torchserve ? data.torchserve.message : "TorchServe is unreachable");
    } catch (err) {
      setBanner("The web app is not answering: is it still running?");
    }
    if (ok && !els.banner.hidden) {
      setBanner(null);
      if (!els.select.querySelector("optgroup")) await loadModels();
    }
    healthTimer = setTimeout(checkHealth, els.banner.hidden ? 15000 : 4000);
  }

  function setBanner(message) {
    els.banner.hidden = !message;
    els.banner.textContent = message ? `⚠ ${message}` : "";
    if (message) {
      clearTimeout(healthTimer);
      healthTimer = setTimeout(checkHealth, 4000);
    }
  }

  // ---- wiring --------------------------------------------------------------------------------
  els.predict.addEventListener("click", predict);
  els.clear.addEventListener("click", clearAll);
  els.undo.addEventListener("click", undo);
  els.compareBtn.addEventListener("click", () => compare());
  els.select.addEventListener("change", () => strokes.length && predict());
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.target instanceof HTMLSelectElement) return;
    const key = event.key.toLowerCase();
    if (key === "z" && !event.shiftKey) { event.preventDefault(); undo(); }
    else if (key === "c" && !event.ctrlKey && !event.metaKey) { event.preventDefault(); clearAll(); }
    else if (key === "enter" && !(event.target instanceof HTMLButtonElement)) predict();
  });
  new ResizeObserver(resize).observe(canvas);
  resize();
  loadModels();
  checkHealth();
})();
