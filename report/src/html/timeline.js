// timeline.html: draws the embedded run data (see kvlab-report's timeline module for its
// layout) on one canvas, only the visible time window. No library, nothing fetched.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("timeline-data").textContent);
  const S = D.stride; // numbers per operation
  const OUTCOME = ["ok", "fail", "info"];
  const COLOR = ["#2e7d32", "#c62828", "#f9a825"];
  const OPEN = "rgba(249,168,37,0.45)";
  const CATEGORY_COLOR = { leader: "#6a1b9a", life: "#000000", membership: "#1565c0", replica: "#00897b" };
  const LABEL_W = 112, AXIS_H = 22, EV_H = 14, GAP = 8;
  const cv = document.getElementById("timeline");
  const ctx = cv.getContext("2d");
  const tip = document.getElementById("tip");
  const END = Math.max(D.end_us, 1);
  const nRows = D.rows.length ? Math.max.apply(null, D.rows) + 1 : 0;
  const rowLanes = Array.from({ length: nRows }, () => []);
  D.rows.forEach((r, l) => rowLanes[r].push(l));
  let v0 = 0, v1 = END, hl = D.highlight_key === null ? -1 : D.keys.indexOf(D.highlight_key);
  let W = 800, H = 400, laneH = 8, faultTop = 0, nodeTop = 0, opsTop = 0, queued = false;

  function opEnd(a, o) { return a[o + 1] < 0 ? END : a[o] + a[o + 1]; }
  // The first operation of lane a ending at or after t (ends grow along a lane).
  function firstEnding(a, t) {
    let lo = 0, hi = a.length / S;
    while (lo < hi) { const m = (lo + hi) >> 1; if (opEnd(a, m * S) < t) lo = m + 1; else hi = m; }
    return lo;
  }
  function X(t) { return LABEL_W + (t - v0) / (v1 - v0) * (W - LABEL_W); }
  function T(x) { return v0 + (x - LABEL_W) / (W - LABEL_W) * (v1 - v0); }
  function fmtDur(us) {
    if (us < 1000) return us + " µs";
    if (us < 1e6) return (us / 1000).toFixed(2) + " ms";
    return (us / 1e6).toFixed(3) + " s";
  }
  function fmtT(us) { return (us / 1e6).toFixed(6) + " s"; }

  function layout() {
    W = Math.max(400, document.getElementById("wrap").clientWidth - 18);
    faultTop = AXIS_H;
    nodeTop = faultTop + D.fault_kinds.length * EV_H + GAP;
    opsTop = nodeTop + D.nodes.length * EV_H + GAP;
    const header = document.querySelector("header").offsetHeight;
    const room = window.innerHeight - header - opsTop - 30;
    laneH = Math.max(2, Math.min(24, Math.floor(room / Math.max(nRows, 1))));
    H = opsTop + nRows * laneH + 4;
    const dpr = window.devicePixelRatio || 1;
    cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr);
    cv.style.width = W + "px"; cv.style.height = H + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  function tickStep(span) {
    const raw = span / Math.max(2, (W - LABEL_W) / 110);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  }

  function drawAxis() {
    const step = tickStep(v1 - v0);
    const digits = Math.max(0, -Math.floor(Math.log10(step / 1e6)));
    ctx.font = "11px sans-serif"; ctx.textBaseline = "middle"; ctx.textAlign = "center";
    for (let t = Math.ceil(v0 / step) * step; t <= v1; t += step) {
      const x = X(t);
      ctx.fillStyle = "#eef0f3"; ctx.fillRect(x, AXIS_H, 1, H - AXIS_H);
      ctx.textAlign = x < LABEL_W + 24 ? "left" : "center";
      ctx.fillStyle = "#3c4450"; ctx.fillText((t / 1e6).toFixed(Math.min(digits, 6)) + " s", x, AXIS_H / 2);
    }
  }

  function drawPhases() {
    ctx.setLineDash([4, 3]); ctx.strokeStyle = "#5a6472"; ctx.fillStyle = "#5a6472";
    ctx.textAlign = "left"; ctx.font = "10px sans-serif";
    for (const [t, name] of D.phases) {
      const x = X(t);
      ctx.beginPath(); ctx.moveTo(x, AXIS_H); ctx.lineTo(x, H); ctx.stroke();
      ctx.fillText(name, x + 3, opsTop - GAP / 2);
    }
    ctx.setLineDash([]);
  }

  function drawFaults() {
    ctx.textAlign = "left"; ctx.font = "10px sans-serif";
    for (const [s, e0, k, node] of D.faults) {
      const e = e0 < 0 ? END : e0;
      if (e < v0 || s > v1) continue;
      const x0 = X(s), w = Math.max(2, X(e) - x0);
      ctx.fillStyle = "rgba(123,31,162,0.06)"; ctx.fillRect(x0, opsTop, w, H - opsTop);
      ctx.fillStyle = "rgba(123,31,162,0.4)"; ctx.fillRect(x0, faultTop + k * EV_H + 1, w, EV_H - 2);
      const n = node < 0 ? -1 : D.nodes.indexOf(node);
      if (n >= 0) { ctx.fillStyle = "rgba(90,100,114,0.3)"; ctx.fillRect(x0, nodeTop + n * EV_H + 1, w, EV_H - 2); }
      if (node >= 0 && w > 24) { ctx.fillStyle = "#fff"; ctx.fillText("n" + node, x0 + 3, faultTop + k * EV_H + EV_H / 2); }
    }
  }

  function drawNodeEvents() {
    for (const [t, n, k] of D.node_events) {
      if (t < v0 || t > v1) continue;
      ctx.fillStyle = CATEGORY_COLOR[D.event_categories[k]] || "#444";
      ctx.fillRect(X(t) - 1, nodeTop + n * EV_H + 1, 2, EV_H - 2);
    }
  }

  // Two passes: the dimmed operations, then the highlighted ones on top. Neighbouring
  // bars of one colour that touch on screen are filled as one rectangle.
  function drawOps() {
    const pad = laneH > 4 ? 1 : 0;
    for (const bright of hl < 0 ? [true] : [false, true]) {
      ctx.globalAlpha = bright ? 1 : 0.15;
      D.ops.forEach((a, l) => {
        const y = opsTop + D.rows[l] * laneH + pad, h = laneH - 2 * pad;
        let run = null; // [x0, x1, colour] not filled yet
        for (let i = firstEnding(a, v0), o = i * S; o < a.length && a[o] <= v1; o += S) {
          if ((hl < 0 || a[o + 4] === hl) !== bright) continue;
          const x0 = X(a[o]), x1 = Math.max(x0 + 1, X(opEnd(a, o)));
          const c = a[o + 1] < 0 ? OPEN : COLOR[a[o + 2]];
          if (run && run[2] === c && x0 <= run[1] + 0.5) { run[1] = Math.max(run[1], x1); continue; }
          if (run) { ctx.fillStyle = run[2]; ctx.fillRect(run[0], y, run[1] - run[0], h); }
          run = [x0, x1, c];
        }
        if (run) { ctx.fillStyle = run[2]; ctx.fillRect(run[0], y, run[1] - run[0], h); }
      });
    }
    ctx.globalAlpha = 1;
    drawEvidence();
  }

  function drawEvidence() {
    const ev = hl >= 0 ? D.evidence[D.keys[hl]] || [] : [];
    ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
    for (const [l, p] of ev) {
      const a = D.ops[l], o = p * S, x0 = X(a[o]);
      ctx.strokeRect(x0 - 1, opsTop + D.rows[l] * laneH - 1, Math.max(4, X(opEnd(a, o)) - x0 + 2), laneH + 2);
    }
    ctx.lineWidth = 1;
  }

  function drawLabels() {
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, LABEL_W - 2, H);
    ctx.fillStyle = "#1d232b"; ctx.textAlign = "right"; ctx.textBaseline = "middle"; ctx.font = "10px sans-serif";
    D.fault_kinds.forEach((k, i) => ctx.fillText(k, LABEL_W - 6, faultTop + i * EV_H + EV_H / 2));
    D.nodes.forEach((n, i) => ctx.fillText("n" + n, LABEL_W - 6, nodeTop + i * EV_H + EV_H / 2));
    const every = Math.ceil(11 / laneH);
    for (let r = 0; r < nRows; r += every) {
      const ps = rowLanes[r].map((l) => D.processes[l]);
      const text = "p" + ps[0] + (ps.length > 1 ? " +" + (ps.length - 1) : "");
      ctx.fillText(text, LABEL_W - 6, opsTop + r * laneH + laneH / 2);
    }
    ctx.fillStyle = "#5a6472"; ctx.textAlign = "left";
    if (D.fault_kinds.length) ctx.fillText("faults", 4, faultTop + EV_H / 2);
    if (D.nodes.length) ctx.fillText("nodes", 4, nodeTop + EV_H / 2);
    if (nRows) ctx.fillText("processes", 4, opsTop + 6);
  }

  function draw() {
    queued = false;
    ctx.clearRect(0, 0, W, H);
    ctx.save(); ctx.beginPath(); ctx.rect(LABEL_W, 0, W - LABEL_W, H); ctx.clip();
    drawAxis(); drawFaults(); drawNodeEvents(); drawOps(); drawPhases();
    ctx.restore();
    drawLabels();
    const span = v1 - v0, d = span > 5e6 ? 2 : span > 5e5 ? 3 : span > 5e4 ? 4 : 6;
    document.getElementById("range").textContent =
      (v0 / 1e6).toFixed(d) + " s – " + (v1 / 1e6).toFixed(d) + " s (" + fmtDur(Math.round(span)) + " shown)";
  }
  function redraw() { if (!queued) { queued = true; requestAnimationFrame(draw); } }

  function setView(a, b) {
    const span = Math.min(END, Math.max(10, b - a));
    a = Math.max(0, Math.min(a, END - span));
    v0 = a; v1 = a + span; redraw();
  }
  function zoomAt(t, factor) { setView(t - (t - v0) * factor, t + (v1 - t) * factor); }
  function windowOf(span) { const c = (v0 + v1) / 2; setView(c - span / 2, c + span / 2); }

  function valueText(f, v) {
    if (v === null) return "";
    if (D.fns[f] === "read") return " → " + JSON.stringify(v);
    if (D.fns[f] === "cas" && Array.isArray(v)) return " " + JSON.stringify(v[0]) + " → " + JSON.stringify(v[1]);
    return " " + JSON.stringify(v);
  }

  // The operation under the pointer: [lane, offset] or null.
  function opAt(x, y) {
    const r = Math.floor((y - opsTop) / laneH);
    if (y < opsTop || r >= nRows) return null;
    const tol = 3 * (v1 - v0) / (W - LABEL_W), t = T(x);
    for (const l of rowLanes[r]) {
      const a = D.ops[l], o = firstEnding(a, t - tol) * S;
      if (o < a.length && a[o] <= t + tol) return [l, o];
    }
    return null;
  }

  function opTip(l, o) {
    const a = D.ops[l], key = a[o + 4] < 0 ? "" : " " + D.keys[a[o + 4]];
    let s = "process " + D.processes[l] + " · " + D.fns[a[o + 3]] + key + valueText(a[o + 3], a[o + 7]) + "\n";
    s += a[o + 1] < 0 ? "never completed (info): may take effect any time after its invoke\n" : OUTCOME[a[o + 2]] + " in " + fmtDur(a[o + 1]) + "\n";
    s += "invoke " + fmtT(a[o]) + (a[o + 1] < 0 ? "" : " · complete " + fmtT(a[o] + a[o + 1]));
    if (a[o + 5] >= 0) s += "\nnode n" + a[o + 5];
    if (a[o + 6] >= 0) s += "\nerror: " + D.errors[a[o + 6]];
    return s;
  }

  function eventTip(x, y) {
    const t = T(x), tol = 4 * (v1 - v0) / (W - LABEL_W);
    if (y >= faultTop && y < nodeTop - GAP) {
      const k = Math.floor((y - faultTop) / EV_H);
      const hits = D.faults.filter((f) => f[2] === k && f[0] - tol <= t && (f[1] < 0 ? END : f[1]) + tol >= t);
      return hits.slice(0, 5).map((f) => D.fault_kinds[f[2]] + (f[3] >= 0 ? " n" + f[3] : "") + ": " + fmtT(f[0]) + " – " +
        (f[1] < 0 ? "never healed" : fmtT(f[1]) + " (" + fmtDur(f[1] - f[0]) + ")") + "\n" + f[4]).join("\n\n");
    }
    if (y >= nodeTop && y < opsTop - GAP) {
      const n = Math.floor((y - nodeTop) / EV_H);
      const hits = D.node_events.filter((e) => e[1] === n && Math.abs(e[0] - t) <= tol);
      const more = hits.length > 6 ? "\n… " + (hits.length - 6) + " more" : "";
      return hits.slice(0, 6).map((e) => "n" + D.nodes[n] + " " + D.event_kinds[e[2]] + " at " + fmtT(e[0]) + "\n" + e[3]).join("\n") + more;
    }
    return "";
  }

  function showTip(ev, text) {
    if (!text) { tip.hidden = true; return; }
    tip.textContent = text; tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8) + "px";
    tip.style.top = Math.min(ev.clientY + 14, window.innerHeight - tip.offsetHeight - 8) + "px";
  }

  let drag = null;
  function pos(ev) { const r = cv.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; }
  cv.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const [x] = pos(ev);
    zoomAt(T(Math.max(LABEL_W, x)), Math.exp(ev.deltaY * 0.0015));
  }, { passive: false });
  cv.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, v0, v1, moved: false }; cv.style.cursor = "grabbing"; });
  window.addEventListener("mouseup", () => { if (drag) cv.style.cursor = "grab"; setTimeout(() => { drag = null; }, 0); });
  cv.addEventListener("mousemove", (ev) => {
    const [x, y] = pos(ev);
    if (drag && ev.buttons & 1) {
      const dx = ev.clientX - drag.x;
      if (Math.abs(dx) > 2) drag.moved = true;
      const dt = dx / (W - LABEL_W) * (drag.v1 - drag.v0);
      setView(drag.v0 - dt, drag.v1 - dt); tip.hidden = true; return;
    }
    const hit = x >= LABEL_W ? opAt(x, y) : null;
    showTip(ev, hit ? opTip(hit[0], hit[1]) : x >= LABEL_W ? eventTip(x, y) : "");
  });
  cv.addEventListener("mouseleave", () => { tip.hidden = true; });
  cv.addEventListener("click", (ev) => {
    if (drag && drag.moved) return;
    const [x, y] = pos(ev), hit = x >= LABEL_W ? opAt(x, y) : null;
    if (hit && D.ops[hit[0]][hit[1] + 4] >= 0) setKey(D.ops[hit[0]][hit[1] + 4]);
  });

  const select = document.getElementById("key");
  function setKey(k) {
    hl = k; select.value = String(k);
    const name = k >= 0 ? D.keys[k] : null, ev = name !== null && D.evidence[name];
    document.getElementById("evidence").hidden = !(ev && ev.length);
    const why = name !== null && D.explanations[name];
    document.getElementById("explain").textContent = why ? "Checker, key " + name + ": " + why : "";
    redraw();
  }
  function evidenceView() {
    const ev = D.evidence[D.keys[hl]] || [];
    if (!ev.length) return;
    const s = Math.min.apply(null, ev.map(([l, p]) => D.ops[l][p * S]));
    const e = Math.max.apply(null, ev.map(([l, p]) => opEnd(D.ops[l], p * S)));
    const m = Math.max(1000, (e - s) * 0.25);
    setView(s - m, e + m);
  }
  const order = D.keys.map((k, i) => i).sort((a, b) =>
    (D.invalid_keys.includes(D.keys[b]) - D.invalid_keys.includes(D.keys[a])) || (a - b));
  for (const i of order) {
    const opt = document.createElement("option");
    opt.value = String(i);
    opt.textContent = D.keys[i] + (D.invalid_keys.includes(D.keys[i]) ? " (invalid)" : "");
    select.appendChild(opt);
  }
  select.addEventListener("change", () => setKey(Number(select.value)));
  const buttons = {
    all: () => setView(0, END), zin: () => zoomAt((v0 + v1) / 2, 0.5), zout: () => zoomAt((v0 + v1) / 2, 2),
    w1s: () => windowOf(1e6), w100ms: () => windowOf(1e5), w10ms: () => windowOf(1e4), evidence: evidenceView,
  };
  for (const id in buttons) document.getElementById(id).addEventListener("click", buttons[id]);
  // A link may open a window and a key: timeline.html#from=12.5&to=13&key=k3 (seconds).
  function fromHash() {
    const h = new URLSearchParams(location.hash.slice(1)), k = h.get("key");
    if (k !== null) hl = D.keys.indexOf(k);
    if (h.has("from") || h.has("to")) setView(Number(h.get("from") || 0) * 1e6, Number(h.get("to") || END / 1e6) * 1e6);
  }
  window.addEventListener("resize", () => { layout(); redraw(); });
  window.addEventListener("hashchange", () => { fromHash(); setKey(hl); });
  layout(); fromHash(); setKey(hl); draw();
})();
