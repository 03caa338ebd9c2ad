// The drawing page: a Pointer Events canvas (or an uploaded, dropped or pasted image),
// predictions from /api/predict in the chosen charset, a side-by-side comparison from
// /api/compare, corrections to /api/feedback, the model picker from /api/models and a banner.
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
    notice: $("notice"), teach: $("teach"), confirm: $("confirm"), labelInput: $("label-input"),
    pickToggle: $("pick-toggle"), picker: $("picker"), teachStatus: $("teach-status"),
    sendFeedback: $("send-feedback"), privacy: $("privacy"), upload: $("upload"),
    file: $("file"), wrap: $("canvas-wrap"),
  };
  const FEEDBACK_ON_SERVER = document.body.dataset.feedback === "on";
  // The 62 characters of the 47 classes: c, i, j, k, l, m, o, p, s, u, v, w, x, y, z are one
  // class with their capital (the server maps them).
  const CLASSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt";
  const store = {
    get: (key, fallback) => { try { return localStorage.getItem(key) ?? fallback; } catch (e) { return fallback; } },
    set: (key, value) => { try { localStorage.setItem(key, value); } catch (e) { /* private mode */ } },
  };

  // Strokes in canvas-relative units (0..1), so a resize or rotation redraws them exactly.
  const strokes = [];
  let current = null;
  let uploaded = null; // {blob, bitmap}: an image file read instead of a drawing
  let lastSent = null; // {blob, data}: what the last answer was for, for a correction
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
    if (uploaded && context === ctx) drawUpload(context, side);
    for (const points of list) drawStroke(context, side, points);
    context.restore();
  }

  function drawUpload(context, side) {
    const { bitmap } = uploaded;
    const scale = Math.min(side / bitmap.width, side / bitmap.height);
    const w = bitmap.width * scale;
    const h = bitmap.height * scale;
    context.drawImage(bitmap, (side - w) / 2, (side - h) / 2, w, h);
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
    els.hint.hidden = list.length > 0 || uploaded !== null;
    els.undo.disabled = strokes.length === 0;
    els.clear.disabled = strokes.length === 0 && !uploaded;
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
    if (uploaded) { uploaded = null; redraw(); } // drawing replaces an uploaded image
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
    uploaded = null;
    redraw();
    resetResult();
  }

  // ---- upload, drop and paste ----------------------------------------------------------------
  async function useImage(file) {
    if (!file || !file.type.startsWith("image/")) {
      showError({ message: "that is not an image file: use a PNG, JPEG, WebP, GIF or BMP" });
      return;
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (err) {
      showError({ message: "this image cannot be read: try a PNG or JPEG" });
      return;
    }
    strokes.length = 0;
    current = null;
    uploaded = { blob: file, bitmap };
    redraw();
    predict();
  }
  els.upload.addEventListener("click", () => els.file.click());
  els.file.addEventListener("change", () => { useImage(els.file.files[0]); els.file.value = ""; });
  els.wrap.addEventListener("dragover", (event) => {
    event.preventDefault();
    els.wrap.classList.add("dropping");
  });
  els.wrap.addEventListener("dragleave", () => els.wrap.classList.remove("dropping"));
  els.wrap.addEventListener("drop", (event) => {
    event.preventDefault();
    els.wrap.classList.remove("dropping");
    useImage(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
    if (item) { event.preventDefault(); useImage(item.getAsFile()); }
  });

  // ---- predictions ---------------------------------------------------------------------------
  function schedulePredict() {
    clearTimeout(timer);
    timer = setTimeout(predict, DEBOUNCE_MS);
  }

  // The drawing as a PNG Blob: 8-bit gray, which is all the strokes are. The handler decodes it
  // in a sixth of the time of the canvas's own RGBA export (0.09 against 0.57 ms,
  // docs/benchmarks.md). Browsers without CompressionStream send the RGBA export: toDataURL,
  // not toBlob, which waited about a second before encoding a one-stroke canvas in Chromium.
  async function exportPng() {
    if (uploaded) return uploaded.blob;
    const off = document.createElement("canvas");
    off.width = off.height = EXPORT_SIDE;
    const context = off.getContext("2d", { willReadFrequently: true });
    paint(context, EXPORT_SIDE, strokes);
    if (typeof CompressionStream === "function") return grayPng(context, EXPORT_SIDE);
    const bytes = atob(off.toDataURL("image/png").split(",", 2)[1]);
    const array = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) array[i] = bytes.charCodeAt(i);
    return new Blob([array], { type: "image/png" });
  }

  // PNG (RFC 2083) of an opaque canvas as 8-bit grayscale: each row is a filter byte (0) and the
  // gray levels, weighted as Pillow's convert("L") does, deflated by the browser (zlib format).
  async function grayPng(context, side) {
    const rgba = context.getImageData(0, 0, side, side).data;
    const rows = new Uint8Array((side + 1) * side);
    for (let y = 0, i = 0, o = 0; y < side; y++) {
      rows[o++] = 0;
      for (let x = 0; x < side; x++, i += 4) {
        rows[o++] = (rgba[i] * 19595 + rgba[i + 1] * 38470 + rgba[i + 2] * 7471 + 0x8000) >>> 16;
      }
    }
    const deflated = new Response(new Blob([rows]).stream().pipeThrough(new CompressionStream("deflate")));
    const header = new Uint8Array(13);
    const view = new DataView(header.buffer);
    view.setUint32(0, side);
    view.setUint32(4, side);
    header.set([8, 0, 0, 0, 0], 8); // 8 bits, grayscale, deflate, adaptive filters, no interlace
    const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
    const idat = new Uint8Array(await deflated.arrayBuffer());
    return new Blob(
      [signature, pngChunk("IHDR", header), pngChunk("IDAT", idat), pngChunk("IEND", new Uint8Array(0))],
      { type: "image/png" });
  }

  function pngChunk(type, data) {
    const chunk = new Uint8Array(12 + data.length);
    const view = new DataView(chunk.buffer);
    view.setUint32(0, data.length);
    for (let i = 0; i < 4; i++) chunk[4 + i] = type.charCodeAt(i);
    chunk.set(data, 8);
    view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
    return chunk;
  }

  const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });

  function crc32(bytes) {
    let c = 0xffffffff;
    for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  function charset() {
    return document.querySelector('input[name="charset"]:checked').value;
  }

  function formFor(blob) {
    const form = new FormData();
    form.append("image", blob, uploaded ? (uploaded.blob.name || "upload") : "drawing.png");
    form.append("topk", "5");
    form.append("charset", charset());
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
    if (!strokes.length && !uploaded) return;
    const seq = ++requestSeq;
    const blob = await exportPng();
    if (seq !== requestSeq) return; // drawn on while it was encoded
    const form = formFor(blob);
    const [model, version] = (els.select.value || "|").split("|");
    if (model) form.append("model", model);
    if (version) form.append("version", version);
    document.body.classList.add("busy");
    try {
      const data = await postJson("/api/predict", form);
      if (seq !== requestSeq) return; // a newer drawing is on its way
      lastSent = { blob, data };
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
    if (!strokes.length && !uploaded) return;
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
    setNotice(null);
    if (data.empty || !data.predictions.length) {
      els.prediction.textContent = "–";
      els.confidence.textContent = data.empty_reason === "dot" ?
        "Just a dot: draw a whole character" : "Nothing drawn";
      showTeach(null);
      return;
    }
    const top = data.predictions[0];
    els.prediction.textContent = top.label;
    const sure = !data.confidence || data.confidence.sure;
    els.confidence.textContent = sure ? `${pct(top.probability)} confident` :
      `Not sure (${pct(top.probability)})`;
    els.prediction.classList.toggle("unsure", !sure);
    const notes = [];
    if (!sure) {
      const others = data.confidence.alternatives.join(" or ");
      notes.push(data.confidence.reason === "lookalike" ?
        `${top.label} and ${others} look alike: say what you are writing above, or correct it below.` :
        `A weak answer: it could also be ${others || "something else"}.`);
    }
    if (data.hint === "small") notes.push("Draw bigger: the character fills only a small part of the box.");
    if (notes.length) setNotice(notes.join(" "));
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
    showTeach(data);
  }

  function setNotice(message) {
    els.notice.hidden = !message;
    els.notice.textContent = message || "";
  }

  // ---- corrections ---------------------------------------------------------------------------
  function feedbackWanted() {
    return FEEDBACK_ON_SERVER && els.sendFeedback.checked;
  }

  function showTeach(data) {
    els.teach.hidden = !data || !feedbackWanted();
    els.teachStatus.textContent = "";
    els.labelInput.value = "";
    els.picker.hidden = true;
    els.pickToggle.setAttribute("aria-expanded", "false");
    if (data) els.confirm.textContent = `✓ It is ${data.predictions[0].label}`;
  }

  let sessionWriter = null; // where localStorage is unavailable, one id for this visit
  function writerId() {
    let id = store.get("emnist.writer", null) || sessionWriter;
    if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
      const bytes = crypto.getRandomValues(new Uint8Array(16));
      id = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
      store.set("emnist.writer", id);
    }
    sessionWriter = id;
    return id;
  }

  async function sendCorrection(label) {
    if (!lastSent || !feedbackWanted() || !lastSent.data.predictions.length) return;
    const { blob, data } = lastSent;
    const form = new FormData();
    form.append("image", blob, "drawing.png");
    form.append("label", label);
    form.append("model", data.model || "");
    form.append("version", data.version || "");
    form.append("predicted", data.predictions[0] ? data.predictions[0].label : "");
    form.append("charset", data.charset || charset());
    form.append("writer", writerId());
    els.teachStatus.textContent = "Saving…";
    const seq = requestSeq; // the answer this correction is about
    try {
      const saved = await postJson("/api/feedback", form);
      if (seq !== requestSeq) return; // a new drawing is shown: not its message
      const right = saved.label === (data.predictions[0] || {}).label;
      els.teachStatus.textContent = saved.duplicate ? `Already saved as ${saved.label}.` :
        (right ? `Thanks: confirmed ${saved.label}.` : `Thanks: saved as ${saved.label}.`);
      els.teach.classList.add("saved");
    } catch (err) {
      if (seq === requestSeq) els.teachStatus.textContent = `Not saved: ${err.message}`;
    }
  }

  function buildPicker() {
    for (const label of CLASSES) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "pick";
      button.textContent = label;
      button.addEventListener("click", () => sendCorrection(label));
      els.picker.append(button);
    }
  }

  els.confirm.addEventListener("click", () => {
    if (lastSent && lastSent.data.predictions[0]) sendCorrection(lastSent.data.predictions[0].label);
  });
  els.labelInput.addEventListener("input", () => {
    const label = els.labelInput.value.trim();
    if (label) sendCorrection(label); // one key: typing the character sends it
  });
  els.pickToggle.addEventListener("click", () => {
    els.picker.hidden = !els.picker.hidden;
    els.pickToggle.setAttribute("aria-expanded", String(!els.picker.hidden));
  });
  els.sendFeedback.addEventListener("change", () => {
    store.set("emnist.feedback", els.sendFeedback.checked ? "on" : "off");
    els.teach.hidden = !feedbackWanted() || !lastSent || !lastSent.data.predictions.length;
  });

  function resetResult() {
    requestSeq++;
    clearTimeout(timer);
    els.prediction.textContent = "?";
    els.confidence.textContent = "Draw something to start";
    els.meta.textContent = "";
    els.bars.replaceChildren();
    els.preview.hidden = true;
    els.previewEmpty.hidden = false;
    lastSent = null;
    setNotice(null);
    showTeach(null);
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
    // A digits-only model answers every drawing with a digit: shown last, and marked.
    const ordered = [...data.results].sort((a, b) => Number(!!a.digits_only) - Number(!!b.digits_only));
    for (const result of ordered) {
      const card = document.createElement("div");
      card.className = "model-card" + (result.error ? " error" : "") +
        (result.digits_only ? " digits-only" : "");
      const title = document.createElement("h3");
      title.textContent = result.version ? `${result.model} ${result.version}` : result.model;
      const big = document.createElement("div");
      big.className = "big";
      const small = document.createElement("div");
      small.className = "small";
      const top = result.predictions && result.predictions[0];
      if (result.skipped) { // e.g. the digits model while letters are being written
        big.textContent = "–";
        small.textContent = `not for ${charset()}`;
      } else if (result.error) {
        big.textContent = "!";
        small.textContent = result.error;
      } else {
        big.textContent = top ? top.label : "–";
        const p = top ? `${pct(top.probability)} · ` : "";
        small.textContent = `${p}${Math.round(result.latency_ms)} ms`;
      }
      card.append(title, big, small);
      if (result.digits_only) {
        const tag = document.createElement("div");
        tag.className = "tag";
        tag.textContent = "reads digits only";
        card.append(tag);
      }
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
    els.banner.replaceChildren();
    if (message) {
      // `make serve` in a message is a command: shown as code, never as Markdown backticks.
      els.banner.append("⚠ ");
      message.split("`").forEach((part, i) => {
        if (i % 2) {
          const code = document.createElement("code");
          code.textContent = part;
          els.banner.append(code);
        } else {
          els.banner.append(part);
        }
      });
    }
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
  els.select.addEventListener("change", () => (strokes.length || uploaded) && predict());
  for (const radio of document.querySelectorAll('input[name="charset"]')) {
    radio.addEventListener("change", () => {
      store.set("emnist.charset", charset());
      if (strokes.length || uploaded) predict();
    });
  }
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.target instanceof HTMLSelectElement) return;
    if (event.target instanceof HTMLInputElement && event.target.type === "text") return;
    const key = event.key.toLowerCase();
    if (key === "z" && !event.shiftKey) { event.preventDefault(); undo(); }
    else if (key === "c" && !event.ctrlKey && !event.metaKey) { event.preventDefault(); clearAll(); }
    else if (key === "y" && !els.teach.hidden) { event.preventDefault(); els.confirm.click(); }
    else if (key === "enter" && !(event.target instanceof HTMLButtonElement)) predict();
  });
  // Remembered across visits: what is being written, and whether corrections are sent.
  const savedCharset = store.get("emnist.charset", "any");
  const radio = document.querySelector(`input[name="charset"][value="${savedCharset}"]`);
  if (radio) radio.checked = true;
  els.sendFeedback.checked = store.get("emnist.feedback", "on") !== "off";
  if (!FEEDBACK_ON_SERVER) {
    els.privacy.textContent = "Corrections are turned off on this server: nothing you draw is stored.";
  }
  buildPicker();
  new ResizeObserver(resize).observe(canvas);
  resize();
  loadModels();
  checkHealth();
})();
