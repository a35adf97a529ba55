// PCGNet live dashboard: folds the server-sent events (docs/events.md) into per-session state and draws it.
// Transcripts, speaker and session names are untrusted: they only ever reach the page through textContent
// or SVG attributes, never as markup (the server's Content-Security-Policy also forbids inline script).
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const MAX_ROWS = 500;          // transcript rows kept in the page (the server keeps the history)
  const TREND = { rising: "↑", falling: "↓", steady: "→" };
  const state = { palette: {}, other: "#495057", sessions: new Map(), selected: null, global: [],
                  figures: null, lag: 0, connected: false, evicted: false, title: "PCGNet live" };
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  const colour = (expr) => state.palette[expr] || state.other;
  const pct = (p) => `${Math.round(100 * p)}%`;
  const signed = (x) => (x >= 0 ? "+" : "−") + Math.abs(x).toFixed(2);
  function clock(t) {
    const s = Math.max(0, Math.round(t));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }
  function chip(expr) {
    const c = el("span", "chip", expr);
    c.style.backgroundColor = colour(expr);
    return c;
  }

  // -- state ------------------------------------------------------------------------------------------

  function session(name) {
    let s = state.sessions.get(name);
    if (!s) {
      s = { name, utts: [], ids: new Set(), shifts: [], speakers: new Map(), problems: [], version: 0, shown: null };
      state.sessions.set(name, s);
      if (state.selected === null) state.selected = name;
    }
    return s;
  }
  function speaker(s, name) {
    let p = s.speakers.get(name);
    if (!p) {
      p = { name, points: [], shifts: [], counts: new Map(), last: null, trend: "steady" };
      s.speakers.set(name, p);
    }
    return p;
  }
  function reset() {
    state.sessions.clear();
    state.selected = null;
    state.global = [];
  }

  function fold(ev) {
    if (ev.session && ev.type !== "hello") session(ev.session).version++;
    switch (ev.type) {
      case "hello":
        if (!ev.resumed) reset();
        state.palette = ev.palette || {};
        state.other = ev.other_colour || state.other;
        state.title = ev.title || state.title;
        break;
      case "emotion": {
        const s = session(ev.session);
        if (s.ids.has(ev.utterance_id)) return;
        s.ids.add(ev.utterance_id);
        s.utts.push(ev);
        const p = speaker(s, ev.speaker);
        p.points.push(ev);
        p.last = ev;
        p.counts.set(ev.expression, (p.counts.get(ev.expression) || 0) + 1);
        break;
      }
      case "shift": {
        const s = session(ev.session);
        s.shifts.push(ev);
        speaker(s, ev.speaker).shifts.push(ev);
        break;
      }
      case "speaker":
        speaker(session(ev.session), ev.speaker).trend = ev.trend;
        break;
      case "error":
        (ev.session ? session(ev.session).problems : state.global).push(ev);
        for (const s of state.sessions.values()) s.version++;
        break;
      case "figures":
        state.figures = ev;
        break;
      case "lag":
        state.lag = ev.dropped;
        break;
      case "evicted":  // a newer page took this one's slot: stay closed instead of taking it back
        state.evicted = true;
        if (source) source.close();
        break;
      default:
        return;
    }
    schedule();
  }

  // -- drawing ----------------------------------------------------------------------------------------

  let pending = false;
  function schedule() {
    if (!pending) {
      pending = true;
      setTimeout(() => { pending = false; draw(); }, 50);
    }
  }

  function draw() {
    $("title").textContent = state.title;
    drawConnection();
    drawTabs();
    drawFigures();
    const s = state.sessions.get(state.selected);
    $("empty").hidden = !!s;
    $("session").hidden = !s;
    if (!s) return;
    if (s.shown === null || $("session").dataset.session !== s.name) {
      for (const other of state.sessions.values()) other.shown = null;
      $("session").dataset.session = s.name;
      $("transcript").replaceChildren();
      s.shown = { utts: 0, shifts: null, version: -1, width: 0 };
    }
    const width = $("timelines").clientWidth;
    if (s.shown.version === s.version && s.shown.width === width) return;  // only the figures changed
    s.shown.version = s.version;
    s.shown.width = width;
    drawSpeakers(s);
    drawTimelines(s);
    drawTranscript(s);
    drawAlerts(s);
    drawProblems(s);
  }

  function drawConnection() {
    const c = $("conn");
    const finished = state.figures && state.figures.running === false;
    const [cls, text] = state.evicted ? ["connecting", "closed: more pages opened elsewhere; reload to reopen"]
      : !state.connected ? ["connecting", "reconnecting…"]
      : finished ? ["finished", "analysis finished"] : ["live", "live"];
    c.className = `conn ${cls}`;
    c.textContent = text;
  }

  let tabsKey = "";
  function drawTabs() {
    const nav = $("sessions");
    const key = JSON.stringify([state.selected, ...[...state.sessions.values()].map(
      (s) => [s.name, s.utts.length, s.problems.length])]);
    if (key === tabsKey) return;  // rebuilt only on change, so a click is never lost to a redraw
    tabsKey = key;
    nav.replaceChildren();
    for (const s of state.sessions.values()) {
      const b = el("button", s.name === state.selected ? "tab active" : "tab");
      b.type = "button";
      b.dataset.session = s.name;
      b.setAttribute("aria-pressed", String(s.name === state.selected));
      b.append(el("span", "name", s.name), el("span", "badge", s.utts.length));
      if (s.problems.length) b.append(el("span", "badge warn", "!"));
      b.addEventListener("click", () => { state.selected = s.name; draw(); });
      nav.append(b);
    }
  }

  function drawSpeakers(s) {
    const box = $("speakers");
    box.replaceChildren();
    for (const p of s.speakers.values()) {
      const card = el("div", "speaker");
      card.dataset.speaker = p.name;
      const head = el("div", "head");
      head.append(el("span", "who", p.name));
      if (p.last) head.append(chip(p.last.expression), el("span", "conf", pct(p.last.confidence)));
      head.append(el("span", `trend ${p.trend}`, `${TREND[p.trend] || "?"} ${p.trend}`));
      const facts = el("div", "facts");
      if (p.last) facts.append(el("span", null, `valence ${signed(p.last.valence)}`),
                               el("span", null, `arousal ${signed(p.last.arousal)}`));
      facts.append(el("span", null, `${p.points.length} utt.`), el("span", null, `${p.shifts.length} shifts`));
      const dist = el("div", "dist");
      const total = p.points.length || 1;
      for (const [expr, n] of [...p.counts.entries()].sort((a, b) => b[1] - a[1])) {
        const seg = el("span", "seg");
        seg.style.width = `${(100 * n) / total}%`;
        seg.style.backgroundColor = colour(expr);
        seg.title = `${expr}: ${n}`;
        dist.append(seg);
      }
      card.append(head, facts, dist);
      box.append(card);
    }
  }

  function drawTimelines(s) {
    const box = $("timelines");
    const width = Math.max(320, box.clientWidth || 600);
    const tmax = 1.03 * Math.max(1, ...s.utts.map((u) => u.t_end));
    box.replaceChildren();
    for (const p of s.speakers.values()) {
      const wrap = el("div", "timeline");
      wrap.append(el("div", "label", p.name));
      wrap.append(timeline(p, width, tmax));
      box.append(wrap);
    }
  }

  function timeline(p, W, tmax) {
    const H = 142, ml = 30, mr = 14, mt = 28, mb = 30;
    const x = (t) => ml + (t / tmax) * (W - ml - mr);
    const y = (v) => mt + ((1 - v) / 2) * (H - mt - mb);
    const g = svg("svg", { class: "timeline", viewBox: `0 0 ${W} ${H}`, width: W, height: H,
                           role: "img", "data-speaker": p.name });
    g.append(svg("title", {}, `${p.name}: valence and arousal over time`));
    for (const v of [1, 0, -1]) {
      g.append(svg("line", { x1: ml, x2: W - mr, y1: y(v), y2: y(v), class: v === 0 ? "zero" : "grid" }));
      g.append(svg("text", { x: ml - 6, y: y(v) + 3.5, class: "ytick" }, v > 0 ? "+1" : v < 0 ? "−1" : "0"));
    }
    const step = [5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600].find((d) => tmax / d <= 8) || 7200;
    for (let t = 0; t <= tmax + 1e-9; t += step) {
      g.append(svg("text", { x: x(t), y: H - 4, class: "xtick" }, clock(t)));
    }
    for (const u of p.points) {  // the emotion of each utterance as a band over its span
      const x0 = x(u.t_start), x1 = Math.max(x(u.t_end), x0 + 3);
      g.append(svg("rect", { x: x0, y: H - mb + 6, width: x1 - x0, height: 7, rx: 2, fill: colour(u.expression) }));
    }
    const rows = [-Infinity, -Infinity];  // right end of the last label on each of the two label rows
    for (const sh of p.shifts) {
      const sx = x(sh.t_end);
      const m = svg("g", { class: "shift-marker", "data-utterance": sh.utterance_id });
      m.append(svg("line", { x1: sx, x2: sx, y1: mt - 2, y2: H - mb + 4, stroke: colour(sh.to) }));
      m.append(svg("path", { d: `M${sx - 5},${mt - 9} L${sx + 5},${mt - 9} L${sx},${mt - 2} Z`,
                             fill: colour(sh.to) }));
      // the label goes right of the marker (left near the edge), on the first row where it does not
      // overlap the previous one; with no room on either row the marker keeps only its tooltip
      const label = `→ ${sh.to}`, width = 6.6 * label.length + 6;
      const right = sx + 7 + width > W;
      const [lo, hi] = right ? [sx - 7 - width, sx - 7] : [sx + 7, sx + 7 + width];
      const row = rows.findIndex((end) => lo > end);
      if (row >= 0) {
        rows[row] = hi;
        m.append(svg("text", { x: right ? hi : lo, y: row === 0 ? mt - 2 : mt - 14, class: "shift-label",
                               "text-anchor": right ? "end" : "start" }, label));
      }
      m.append(svg("title", {}, `${clock(sh.t_end)} ${sh.from} → ${sh.to}`));
      g.append(m);
    }
    const line = (key, cls) => {
      if (p.points.length < 2) return;
      g.append(svg("polyline", { class: cls,
                                 points: p.points.map((u) => `${x(u.t_end)},${y(u[key])}`).join(" ") }));
    };
    line("arousal", "arousal");
    line("valence", "valence");
    for (const u of p.points) {
      const c = svg("circle", { cx: x(u.t_end), cy: y(u.valence), r: 5.5, fill: colour(u.expression),
                                class: "point", "data-utterance": u.utterance_id });
      c.append(svg("title", {}, `${clock(u.t_end)} ${u.expression} ${pct(u.confidence)}: ${u.text || ""}`));
      g.append(c);
    }
    return g;
  }

  function drawTranscript(s) {
    const list = $("transcript");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    for (const u of s.utts.slice(s.shown.utts)) {
      const li = el("li", "utt");
      li.dataset.utterance = u.utterance_id;
      li.style.borderLeftColor = colour(u.expression);
      li.style.setProperty("--tint", `${colour(u.expression)}14`);
      const meta = el("div", "meta");
      const bar = el("span", "bar");
      const fill = el("span", "fill");
      fill.style.width = pct(u.confidence);
      fill.style.backgroundColor = colour(u.expression);
      bar.append(fill);
      meta.append(el("span", "t", clock(u.t_end)), el("span", "who", u.speaker), chip(u.expression),
                  bar, el("span", "conf", pct(u.confidence)));
      li.append(meta, el("div", "text", u.text === null ? "(no transcript)" : u.text));
      list.append(li);
    }
    s.shown.utts = s.utts.length;
    while (list.children.length > MAX_ROWS) list.firstChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
    $("utt-count").textContent = String(s.utts.length);
  }

  function drawAlerts(s) {
    const list = $("alerts");
    list.replaceChildren();
    $("shift-count").textContent = String(s.shifts.length);
    if (!s.shifts.length) list.append(el("li", "none", "no shifts yet"));
    const fresh = s.shown.shifts !== null && s.shifts.length > s.shown.shifts;  // flash only a new alert
    s.shown.shifts = s.shifts.length;
    s.shifts.slice(-50).reverse().forEach((sh, i) => {
      const li = el("li", i === 0 && fresh ? "alert newest" : "alert");
      li.dataset.utterance = sh.utterance_id;
      const prob = sh.probability === null ? "" : `p = ${sh.probability.toFixed(2)}`;
      li.append(el("span", "t", clock(sh.t_end)), el("span", "who", sh.speaker), chip(sh.from),
                el("span", "arrow", "→"), chip(sh.to), el("span", "prob", prob));
      list.append(li);
    });
  }

  function drawProblems(s) {
    const list = $("problems");
    list.replaceChildren();
    const all = [...state.global, ...s.problems].slice(-20);
    $("session").classList.toggle("has-problems", all.length > 0);
    if (!all.length) list.append(el("li", "none", "none"));
    for (const e of all.reverse()) {
      const li = el("li", "problem");
      li.append(el("span", `cat ${e.category}`, e.category), el("span", "msg", e.message),
                el("span", "stage", e.stage));
      list.append(li);
    }
  }

  function drawFigures() {
    const f = state.figures;
    const foot = $("figures");
    foot.replaceChildren();
    if (!f) { foot.textContent = "latency –"; return; }
    const ms = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`);
    const item = (k, v) => { const s = el("span", "fig"); s.append(el("span", "k", k), el("b", null, v)); return s; };
    foot.append(item("latency p50", ms(f.latency_p50_ms)), item("p95", ms(f.latency_p95_ms)),
                item("rate", `${f.utterances_per_s.toFixed(2)} utt/s`), item("events", f.events));
    const queues = Object.entries(f.queues || {}).map(([k, v]) => `${k}=${v}`).join("  ") || "–";
    foot.append(item("queues", queues));
    if (state.lag) foot.append(el("span", "fig lag", `this page missed ${state.lag} events (reload to resync)`));
  }

  // -- connection -------------------------------------------------------------------------------------

  let source = null;
  function connect() {
    const es = source = new EventSource("/events");
    es.onopen = () => { state.connected = true; schedule(); };
    es.onerror = () => { state.connected = false; schedule(); };
    es.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      if (ev && typeof ev === "object") fold(ev);
    };
  }
  window.addEventListener("resize", schedule);
  connect();
})();
