// The lpm web view: live charts, tables and a flame graph of the programs an
// lpm server watches.  Plain script, no library, no build step: the server
// ships this file as it is (lpm/web/__init__.py).
//
// What it reads from the server (lpm/server/web.py), all JSON:
//
//   GET /api/stream              server-sent events named "update", about one a
//                                second: {"time": unix seconds, "sources": [info],
//                                "states": {"<id>": body}}
//   GET /api/sources             [info]: {"id", "name", "kind", "path", "pid",
//                                "live", "ended", "events", "rts", ...}
//   GET /api/state?source=N      body: {"source", "name", "info", "state"}, where
//                                state is SourceState.snapshot() (lpm/server/state.py)
//   GET /api/flame?source=N&seconds=S
//                                {"name", "file", "line", "value", "children"},
//                                root ("all") first; S=0 is the whole run
//   POST /api/pause?source=N     {"ok": true, ...} or an error status with
//   POST /api/resume?source=N    {"error": "..."}
//
// When the stream fails, the page polls /api/sources and the selected
// source's /api/state every second instead, and tries the stream again now
// and then.  URLs are relative, so the page also works behind a proxy that
// serves it under a path.
//
// Every field may be missing or null (an older server, a GHC program, a
// source that has just appeared): each is read through num(), str(), arr()
// or obj(), and a chart simply lacks what the data lacks.
//
// Bounded however long it runs and however big the programs: each series is
// a ring of RING points; per source, series are kept for at most
// THREAD_SERIES threads and COUNTER_SERIES counters; at most TOP_THREADS
// threads, TOP_FUNCTIONS functions and SHOWN_SOURCES sources are drawn; rows,
// chart paths and marker lines come from pools that are filled once and then
// reused; histories are kept for the sources the server still lists.
//
// Text from the program (thread labels, function names, argv, markers) is
// only ever set as textContent, never parsed as HTML.

"use strict";

(() => {
  // -- limits -----------------------------------------------------------------

  const RING = 300; // points kept per series
  const TOP_THREADS = 20; // threads drawn in the chart and the table
  const THREAD_SERIES = 40; // threads with a series kept, per source
  const COUNTER_SERIES = 12; // counters with a series kept, per source
  const TOP_FUNCTIONS = 50;
  const SHOWN_SOURCES = 100;
  const HISTORIES = 64; // sources whose history is kept
  const MARKERS_SHOWN = 20;
  const MARKER_LINES = 100; // per chart (the server keeps the newest 100)
  const SPAN_BANDS = 40; // per chart: the newest spans, closed or open
  const ENV_SHOWN = 500;
  const SETTINGS_SHOWN = 200;
  const FLAME_ROWS = 120; // deeper frames are not drawn
  const FLAME_ROW_PX = 18;
  const CPU_IDLE_S = 3; // a thread's unchanged CPU time means idle after this long

  const POLL_MS = 1000;
  const FLAME_MS = 2000;
  const STREAM_RETRY_MS = 15000;
  const STALE_MS = 5000; // no update for this long: "disconnected"

  // What the tests read (tests/web/test_page.py, through the DevTools
  // protocol), and handy in the console.  Plain data, updated in place:
  //   updates     updates applied (stream messages or poll rounds)
  //   points      points in the selected source's heap series
  //   flameNames  the names of the frames drawn in the flame graph, once each
  //   flameFocus  the frame the flame graph is zoomed into ("all": none)
  //   paused      what the last pause or resume reply for the selected
  //               source said (false when none did)
  //   selected    the selected source's id (null: none)
  //   mode        "stream" or "poll"
  //   events      the selected source's event count in the last update
  //   spans       spans (closed and open) the last update listed
  const view = {
    updates: 0,
    points: 0,
    seeded: 0, // points the server's history added
    events: 0,
    spans: 0,
    flameNames: [],
    flameFocus: "all",
    paused: false,
    selected: null,
    mode: "stream",
  };
  window.lpmView = view;

  // -- reading untrusted JSON ---------------------------------------------------

  function num(x) {
    if (typeof x === "number") return Number.isFinite(x) ? x : null;
    if (typeof x === "string" && x.trim() !== "") {
      const n = Number(x);
      return Number.isFinite(n) ? n : null;
    }
    return null;
  }
  const obj = (x) => (x !== null && typeof x === "object" && !Array.isArray(x) ? x : {});
  const arr = (x) => (Array.isArray(x) ? x : []);
  const str = (x) => (x === null || x === undefined ? "" : String(x));

  // -- formatting ---------------------------------------------------------------

  function fmtBytes(n) {
    if (n === null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = Math.abs(n);
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    const s = i === 0 ? String(Math.round(v)) : String(parseFloat(v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)));
    return (n < 0 ? "-" : "") + s + " " + units[i];
  }

  function fmtCount(n) {
    if (n === null) return "–";
    const a = Math.abs(n);
    if (a < 1000) return String(Math.round(n * 100) / 100);
    const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (const [size, unit] of units) {
      if (a >= size) {
        const v = n / size;
        return v.toFixed(Math.abs(v) < 10 ? 2 : Math.abs(v) < 100 ? 1 : 0) + unit;
      }
    }
    return String(n);
  }

  const fmtInt = (n) => (n === null ? "–" : Math.round(n).toLocaleString("en-US"));

  function fmtSeconds(s) {
    if (s === null) return "–";
    const a = Math.abs(s);
    if (a === 0) return "0";
    if (a < 1e-3) return (s * 1e6).toFixed(a < 1e-5 ? 1 : 0) + " µs";
    if (a < 1) return (s * 1e3).toFixed(a < 1e-2 ? 2 : 1) + " ms";
    return s.toFixed(a < 10 ? 2 : 1) + " s";
  }

  // Program time (seconds since it started) as a label; `step` is the
  // spacing of the labels around it, which says how precise to be.
  function fmtClock(s, step = 1) {
    if (s < 120) {
      let digits = 0;
      while (digits < 3 && Math.abs(step * 10 ** digits - Math.round(step * 10 ** digits)) > 1e-6) digits++;
      return s.toFixed(digits) + " s";
    }
    const t = Math.round(s);
    const h = Math.floor(t / 3600);
    const m = Math.floor((t % 3600) / 60);
    const sec = String(t % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
  }

  const fmtPercent = (part, whole) => (whole > 0 ? ((100 * part) / whole).toFixed(1) : "–");

  // -- DOM helpers ---------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setText(e, text) {
    if (e.textContent !== text) e.textContent = text;
  }

  // A table body whose rows are made once and reused: set(n) shows n rows of
  // `columns` cells (hiding the rest), cell(i, j) is a cell to fill.
  class Rows {
    constructor(tbody, columns, max) {
      this.tbody = tbody;
      this.columns = columns;
      this.max = max;
      this.rows = [];
    }

    set(n) {
      n = Math.min(n, this.max);
      while (this.rows.length < n) {
        const tr = el("tr");
        for (const c of this.columns) tr.appendChild(el("td", c));
        this.tbody.appendChild(tr);
        this.rows.push(tr);
      }
      this.rows.forEach((tr, i) => {
        tr.hidden = i >= n;
      });
      return n;
    }

    cell(i, j) {
      return this.rows[i].cells[j];
    }
  }

  // -- series ----------------------------------------------------------------------

  // The newest `capacity` (x, y) points; never grows past it.
  class Ring {
    constructor(capacity = RING) {
      this.xs = new Float64Array(capacity);
      this.ys = new Float64Array(capacity);
      this.start = 0;
      this.length = 0;
    }

    push(x, y) {
      const cap = this.xs.length;
      const i = (this.start + this.length) % cap;
      this.xs[i] = x;
      this.ys[i] = y;
      if (this.length < cap) this.length++;
      else this.start = (this.start + 1) % cap;
    }

    x(i) {
      return this.xs[(this.start + i) % this.xs.length];
    }

    y(i) {
      return this.ys[(this.start + i) % this.ys.length];
    }

    lastY() {
      return this.length ? this.y(this.length - 1) : null;
    }
  }

  // Named series, at most `cap` of them: a new one pushes out the one least
  // recently `seen` when evict is set, or is refused (null) when not.
  class SeriesSet {
    constructor(cap, evict) {
      this.cap = cap;
      this.evict = evict;
      this.map = new Map();
    }

    get(key, label, seen) {
      let s = this.map.get(key);
      if (s === undefined) {
        if (this.map.size >= this.cap) {
          if (!this.evict) return null;
          let victim = null;
          for (const [k, v] of this.map) if (victim === null || v.seen < this.map.get(victim).seen) victim = k;
          this.map.delete(victim);
        }
        s = { key, label, ring: new Ring(), seen };
        this.map.set(key, s);
      }
      if (label) s.label = label;
      s.seen = seen;
      return s;
    }
  }

  // What the heap chart plots, when the program reports it: [key in
  // state.heap, label, axis].  Python programs report rss and
  // allocated_blocks (and traced_* under tracemalloc), GHC programs ghc_*.
  const HEAP = [
    ["rss", "RSS", "left"],
    ["traced_current", "traced (tracemalloc)", "left"],
    ["ghc_size", "heap size", "left"],
    ["ghc_live", "live data", "left"],
    ["allocated_blocks", "allocated blocks", "right"],
  ];

  const LOSS = [
    ["events_lost", "dropped in the program"],
    ["reported_lost", "lost, per thread accounts"],
    ["unreported", "unreported gaps"],
  ];

  // One source's figures over time, one point per update that brings news,
  // on the program's own clock (state.time_ns), which is also the clock of
  // its markers.
  class History {
    constructor() {
      this.reset();
    }

    reset() {
      this.seeded = false; // the server's earlier points asked for (GET /api/history)
      this.t = null; // program seconds of the newest point
      this.n = 0; // points added
      this.times = new Ring();
      this.heap = new SeriesSet(HEAP.length, false);
      this.gc = new Ring(); // last pause (s) at each update that saw collections
      this.gcCollections = null;
      this.threads = new SeriesSet(THREAD_SERIES, true);
      this.cpu = new Map(); // thread id -> {ns, t} of its last CPU figure; replaced each time
      this.counters = new SeriesSet(COUNTER_SERIES, false);
      this.spans = new Ring();
      this.loss = new SeriesSet(LOSS.length, false);
    }

    apply(state) {
      const ns = num(state.time_ns);
      if (ns === null) return;
      const t = ns / 1e9;
      if (this.t !== null && t < this.t) this.reset(); // a new stream (a restart): its clock starts again
      if (this.t !== null && t === this.t) return; // nothing new (an ended program)
      this.t = t;
      this.n++;
      this.times.push(t, 0);

      const heap = obj(state.heap);
      for (const [key, label] of HEAP) {
        const v = num(heap[key]);
        if (v === null) continue;
        if (v === 0 && !this.heap.map.has(key)) continue; // tracemalloc off
        const s = this.heap.get(key, label, this.n);
        if (s) s.ring.push(t, v);
      }

      const gc = obj(state.gc);
      const collections = num(gc.collections);
      if (collections !== null) {
        const last = num(obj(gc.pause_ns).last);
        if (this.gcCollections !== null && collections > this.gcCollections && last !== null) {
          this.gc.push(t, last / 1e9);
        }
        this.gcCollections = collections;
      }

      this.applyThreads(arr(state.threads), t);

      const counters = obj(state.counters);
      for (const name of Object.keys(counters)) {
        const v = num(obj(counters[name]).value);
        if (v === null) continue;
        const s = this.counters.get(name, name, this.n);
        if (s) s.ring.push(t, v);
      }
      const open = num(obj(state.spans).open);
      if (open !== null) this.spans.push(t, open);

      const loss = obj(state.loss);
      for (const [key, label] of LOSS) {
        const v = num(loss[key]);
        if (v === null) continue;
        const s = this.loss.get(key, label, this.n);
        if (s) s.ring.push(t, v);
      }
    }

    // CPU seconds per second of each thread between two of its CPU figures;
    // series for the busiest (a thread that drops out keeps its series until
    // busier ones push it out).  A program sends the figures now and then
    // (with its heap figures), not at each update: an unchanged figure is
    // taken as news only after CPU_IDLE_S, else every update between two
    // measurements would read as an idle moment.
    applyThreads(threads, t) {
      const cpu = new Map();
      const busy = [];
      for (const th of threads) {
        const o = obj(th);
        const id = num(o.id);
        const ns = num(o.cpu_ns);
        if (id === null || ns === null) continue;
        const before = this.cpu.get(id);
        if (before === undefined || ns < before.ns) {
          cpu.set(id, { ns, t });
        } else if (ns !== before.ns || t - before.t >= CPU_IDLE_S) {
          busy.push({ id, label: str(o.label), rate: (ns - before.ns) / 1e9 / (t - before.t) });
          cpu.set(id, { ns, t });
        } else {
          cpu.set(id, before);
        }
      }
      this.cpu = cpu;
      if (!busy.length) return;
      busy.sort((a, b) => b.rate - a.rate);
      for (let i = 0; i < busy.length && i < TOP_THREADS && busy[i].rate > 0; i++) {
        const b = busy[i];
        this.threads.get(b.id, b.label ? `${b.id} ${b.label}` : String(b.id), this.n);
      }
      const rates = new Map(busy.map((b) => [b.id, b.rate]));
      for (const s of this.threads.map.values()) {
        const r = rates.get(s.key);
        if (r !== undefined) s.ring.push(t, r);
      }
    }

    // The server's points from before this page's own first one (GET
    // /api/history) go in front of them: a page opened late, or one on a
    // recording the server read whole, shows the run from its start.
    // Returns the points added.
    seed(data) {
      const d = obj(data);
      const first = this.times.length ? this.times.x(0) : Infinity;
      let added = 0;
      let earliest = Infinity;
      const before = (points) => {
        const out = [];
        for (const p of arr(points)) {
          const t = num(arr(p)[0]);
          const y = num(arr(p)[1]);
          if (t !== null && y !== null && t / 1e9 < first) out.push([t / 1e9, y]);
        }
        return out;
      };
      const front = (ring, points) => {
        if (!points.length) return ring;
        const fresh = new Ring(ring.xs.length);
        for (const [x, y] of points) fresh.push(x, y);
        for (let i = 0; i < ring.length; i++) fresh.push(ring.x(i), ring.y(i));
        added += points.length;
        earliest = Math.min(earliest, points[0][0]);
        return fresh;
      };
      const into = (set, key, label, points) => {
        const pts = before(points);
        if (!pts.length) return;
        const s = set.get(key, label, this.n);
        if (s) s.ring = front(s.ring, pts);
      };
      const heap = obj(d.heap);
      for (const [key, label] of HEAP) into(this.heap, key, label, heap[key]);
      this.gc = front(this.gc, before(d.gc));
      for (const th of arr(d.threads)) {
        const o = obj(th);
        const id = num(o.id);
        if (id !== null) into(this.threads, id, o.label ? `${id} ${str(o.label)}` : String(id), o.points);
      }
      const counters = obj(d.counters);
      for (const name of Object.keys(counters)) into(this.counters, name, name, counters[name]);
      this.spans = front(this.spans, before(d.spans));
      into(this.loss, LOSS[0][0], LOSS[0][1], d.lost);
      const seeded = added;
      if (earliest < Infinity) this.times = front(this.times, [[earliest, 0]]); // the time axis starts there
      return seeded;
    }

    domain() {
      if (!this.times.length) return null;
      const end = this.times.x(this.times.length - 1);
      const start = Math.min(this.times.x(0), end - 1);
      return [start, end];
    }
  }

  // -- charts ------------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6fdf", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#1098ad", "#c2255c", "#5c940d", "#7048e8", "#e67700"];

  function svg(tag, attrs, parent) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  // Round-numbered ticks covering [lo, hi]; with `unit` (1024 ** k for
  // bytes), round in that unit.
  function niceTicks(lo, hi, count, unit = 1) {
    if (unit !== 1) {
      const t = niceTicks(lo / unit, hi / unit, count);
      return { ticks: t.ticks.map((v) => v * unit), lo: t.lo * unit, hi: t.hi * unit };
    }
    if (!(hi > lo)) hi = lo + 1;
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9 && ticks.length <= count + 1; v += step) ticks.push(v);
    return { ticks, lo: Math.min(lo, ticks[0]), hi: Math.max(hi, ticks[ticks.length - 1]) };
  }

  // A time chart drawn in an <svg> whose elements are all made up front:
  // `slots` paths, MARKER_LINES marker lines, a few grid lines and labels.
  // render() only sets attributes and text.
  class Chart {
    constructor(svgEl, legendEl, { slots = 8, left = fmtCount, right = null, bars = false }) {
      this.svg = svgEl;
      this.leftBytes = left === fmtBytes; // ticks at round numbers of KiB, MiB ...
      this.legend = legendEl;
      this.left = left;
      this.right = right;
      this.bars = bars;
      const grid = svg("g", { class: "grid" }, svgEl);
      this.gridLines = [];
      this.leftLabels = [];
      this.rightLabels = [];
      this.xLabels = [];
      for (let i = 0; i < 7; i++) {
        this.gridLines.push(svg("line", {}, grid));
        this.leftLabels.push(svg("text", { class: "tick", "text-anchor": "end" }, grid));
        this.rightLabels.push(svg("text", { class: "tick", "text-anchor": "start" }, grid));
        this.xLabels.push(svg("text", { class: "tick", "text-anchor": "middle" }, grid));
      }
      const markers = svg("g", { class: "markers" }, svgEl);
      this.markers = [];
      for (let i = 0; i < MARKER_LINES; i++) {
        const line = svg("line", { visibility: "hidden" }, markers);
        svg("title", {}, line);
        this.markers.push(line);
      }
      // Spans: thin bars along the bottom, on the same time axis.
      const spans = svg("g", { class: "spans" }, svgEl);
      this.bands = [];
      for (let i = 0; i < SPAN_BANDS; i++) {
        const rect = svg("rect", { visibility: "hidden", height: 5 }, spans);
        svg("title", {}, rect);
        this.bands.push(rect);
      }
      const paths = svg("g", { class: "series" }, svgEl);
      this.paths = [];
      this.items = [];
      for (let i = 0; i < slots; i++) {
        this.paths.push(svg("path", { class: bars ? "bars" : "line" }, paths));
        const item = el("span", "item");
        item.append(el("i", "swatch"), el("span", "name"), el("span", "value"));
        item.hidden = true;
        legendEl.appendChild(item);
        this.items.push(item);
      }
      this.empty = svg("text", { class: "empty", "text-anchor": "middle" }, svgEl);
    }

    // series: [{label, ring, color, axis: "left" | "right"}]; markers: [{x, label}];
    // bands: [{x0, x1, label}] (spans).
    render(domain, series, markers, emptyText, bands = []) {
      const w = this.svg.clientWidth;
      const h = this.svg.clientHeight;
      if (!w || !h) return;
      series = series.slice(0, this.paths.length);
      const hasRight = this.right !== null && series.some((s) => s.axis === "right" && s.ring.length);
      const pad = { l: 58, r: hasRight ? 58 : 14, t: 8, b: 20 };
      const iw = Math.max(1, w - pad.l - pad.r);
      const ih = Math.max(1, h - pad.t - pad.b);
      const shown = series.some((s) => s.ring.length) && domain !== null;
      setText(this.empty, shown ? "" : emptyText || "no data yet");
      this.empty.setAttribute("x", w / 2);
      this.empty.setAttribute("y", h / 2);
      const [x0, x1] = domain || [0, 1];
      const sx = (x) => pad.l + ((x - x0) / (x1 - x0)) * iw;

      const range = (axis) => {
        let lo = 0;
        let hi = -Infinity;
        for (const s of series) {
          if ((s.axis || "left") !== axis) continue;
          for (let i = 0; i < s.ring.length; i++) {
            if (s.ring.x(i) < x0) continue;
            const y = s.ring.y(i);
            if (y > hi) hi = y;
            if (y < lo) lo = y;
          }
        }
        if (hi === -Infinity) hi = 1;
        if (hi === lo) hi = lo + 1;
        const unit = axis === "left" && this.leftBytes ? 1024 ** Math.max(0, Math.floor(Math.log2(hi) / 10)) : 1;
        return niceTicks(lo, hi + (hi - lo) * 0.05, 4, unit);
      };
      const yl = range("left");
      const yr = hasRight ? range("right") : null;
      const sy = (y, r) => pad.t + ih - ((y - r.lo) / (r.hi - r.lo)) * ih;

      for (let i = 0; i < this.gridLines.length; i++) {
        const tick = shown ? yl.ticks[i] : undefined;
        const line = this.gridLines[i];
        const label = this.leftLabels[i];
        if (tick === undefined) {
          line.setAttribute("visibility", "hidden");
          setText(label, "");
        } else {
          const y = sy(tick, yl);
          line.setAttribute("visibility", "visible");
          line.setAttribute("x1", pad.l);
          line.setAttribute("x2", pad.l + iw);
          line.setAttribute("y1", y);
          line.setAttribute("y2", y);
          label.setAttribute("x", pad.l - 6);
          label.setAttribute("y", y + 4);
          setText(label, this.left(tick));
        }
        const rtick = shown && yr ? yr.ticks[i] : undefined;
        const rlabel = this.rightLabels[i];
        if (rtick === undefined) setText(rlabel, "");
        else {
          rlabel.setAttribute("x", pad.l + iw + 6);
          rlabel.setAttribute("y", sy(rtick, yr) + 4);
          setText(rlabel, this.right(rtick));
        }
      }
      const xt = shown ? niceTicks(x0, x1, 5).ticks.filter((x) => x >= x0 && x <= x1) : [];
      const xstep = xt.length > 1 ? xt[1] - xt[0] : 1;
      this.xLabels.forEach((label, i) => {
        if (i >= xt.length) {
          setText(label, "");
          return;
        }
        label.setAttribute("x", sx(xt[i]));
        label.setAttribute("y", h - 5);
        setText(label, fmtClock(xt[i], xstep));
      });

      this.paths.forEach((path, i) => {
        const s = series[i];
        const item = this.items[i];
        if (!s || !shown) {
          path.setAttribute("d", "");
          item.hidden = true;
          return;
        }
        const r = s.axis === "right" && yr ? yr : yl;
        const base = sy(Math.max(r.lo, 0), r);
        const parts = [];
        let first = true;
        for (let j = 0; j < s.ring.length; j++) {
          const x = s.ring.x(j);
          if (x < x0) continue;
          const px = sx(x).toFixed(1);
          const py = sy(s.ring.y(j), r).toFixed(1);
          if (this.bars) parts.push(`M${px} ${base.toFixed(1)}V${py}`);
          else parts.push((first ? "M" : "L") + px + " " + py);
          first = false;
        }
        if (parts.length === 1 && !this.bars) parts.push("h0.01"); // one point: a dot (round caps)
        path.setAttribute("d", parts.join(""));
        path.style.stroke = s.color;
        if (s.axis === "right") path.setAttribute("stroke-dasharray", "5 3");
        else path.removeAttribute("stroke-dasharray");
        item.hidden = false;
        item.firstChild.style.background = s.color;
        setText(item.children[1], s.label);
        const fmt = s.axis === "right" && this.right ? this.right : this.left;
        const last = s.ring.lastY();
        setText(item.children[2], last === null ? "" : fmt(last));
      });

      let m = 0;
      for (const mk of markers) {
        if (m >= this.markers.length) break;
        if (!shown || mk.x < x0 || mk.x > x1) continue;
        const line = this.markers[m++];
        const x = sx(mk.x);
        line.setAttribute("visibility", "visible");
        line.setAttribute("x1", x);
        line.setAttribute("x2", x);
        line.setAttribute("y1", pad.t);
        line.setAttribute("y2", pad.t + ih);
        setText(line.firstChild, `${fmtClock(mk.x)}: ${mk.label}`);
      }
      for (; m < this.markers.length; m++) this.markers[m].setAttribute("visibility", "hidden");

      let b = 0;
      for (const band of bands) {
        if (b >= this.bands.length) break;
        if (domain === null || band.x1 < x0 || band.x0 > x1) continue;
        const rect = this.bands[b];
        const left = sx(Math.max(band.x0, x0));
        const row = b % 4;
        b++;
        rect.setAttribute("visibility", "visible");
        rect.setAttribute("x", left);
        rect.setAttribute("width", Math.max(1, sx(Math.min(band.x1, x1)) - left));
        rect.setAttribute("y", pad.t + ih - 6 - row * 6);
        setText(rect.firstChild, `${band.label}: ${fmtClock(band.x0)} – ${fmtClock(band.x1)}`);
      }
      for (; b < this.bands.length; b++) this.bands[b].setAttribute("visibility", "hidden");
    }
  }

  // -- the flame graph ----------------------------------------------------------------

  // Drawn on a canvas (no DOM node per frame), outermost frame on top.  The
  // frame zoomed into spans the whole width, its callers above it (full
  // width, dimmed).  The zoom is a path of frame keys from the root, so it
  // survives the periodic refresh of the tree.
  const frameKey = (n) => `${str(n.name)}\u0000${str(n.file)}\u0000${str(n.line)}`;

  class Flame {
    constructor(canvas, tip, pathEl, reset, empty) {
      this.canvas = canvas;
      this.tip = tip;
      this.pathEl = pathEl;
      this.resetButton = reset;
      this.emptyEl = empty;
      this.tree = null;
      this.focusPath = []; // frame keys below the root
      this.rects = [];
      canvas.addEventListener("mousemove", (e) => this.hover(e));
      canvas.addEventListener("mouseleave", () => {
        this.tip.hidden = true;
      });
      canvas.addEventListener("click", (e) => this.click(e));
      reset.addEventListener("click", () => this.zoom([]));
    }

    setTree(tree) {
      this.tree = tree && typeof tree === "object" ? tree : null;
      this.draw();
    }

    zoom(path) {
      this.focusPath = path;
      this.tip.hidden = true;
      this.draw();
    }

    // The nodes from the root to the focus (as deep as the tree still goes).
    chain() {
      const chain = [this.tree];
      for (const key of this.focusPath) {
        const next = arr(chain[chain.length - 1].children).find((c) => frameKey(obj(c)) === key);
        if (!next) break;
        chain.push(next);
      }
      return chain;
    }

    draw() {
      const canvas = this.canvas;
      const width = canvas.clientWidth;
      const total = this.tree ? num(this.tree.value) || 0 : 0;
      this.rects = [];
      const names = new Set();
      this.emptyEl.hidden = total > 0;
      if (!width || total <= 0) {
        canvas.style.height = "0px";
        canvas.height = 0;
        view.flameNames = [];
        view.flameFocus = "all";
        setText(this.pathEl, "");
        this.resetButton.disabled = true;
        return;
      }
      const chain = this.chain();
      const focus = chain[chain.length - 1];
      const focusValue = num(focus.value) || 0;
      // Callers of the focus: one full-width row each.
      chain.forEach((node, depth) => {
        this.rects.push({ x: 0, y: depth, w: width, node, parent: depth - 1, caller: depth < chain.length - 1 });
        names.add(str(node.name));
      });
      // The focus's subtree, widths by samples; frames under half a pixel
      // wide are left out with their children.
      const stack = [[chain.length - 1, 0, width, chain.length - 1]];
      const scale = focusValue > 0 ? width / focusValue : 0;
      while (stack.length) {
        const [parentIndex, x, , depth] = stack.pop();
        if (depth + 1 >= FLAME_ROWS) continue;
        let cx = x;
        for (const child of arr(this.rects[parentIndex].node.children)) {
          const c = obj(child);
          const w = (num(c.value) || 0) * scale;
          if (w >= 0.5) {
            this.rects.push({ x: cx, y: depth + 1, w, node: c, parent: parentIndex, caller: false });
            names.add(str(c.name));
            stack.push([this.rects.length - 1, cx, w, depth + 1]);
          }
          cx += w;
        }
      }
      let rows = 0;
      for (const r of this.rects) rows = Math.max(rows, r.y + 1);
      const dpr = window.devicePixelRatio || 1;
      const height = rows * FLAME_ROW_PX;
      canvas.style.height = height + "px";
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      const ctx = canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, width, height);
      ctx.font = "12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
      ctx.textBaseline = "middle";
      const charWidth = ctx.measureText("m").width || 7;
      for (const r of this.rects) {
        const y = r.y * FLAME_ROW_PX;
        ctx.fillStyle = frameColor(r.node, r.caller);
        ctx.fillRect(r.x, y, Math.max(r.w - 1, 0.5), FLAME_ROW_PX - 1);
        if (r.w > 3 * charWidth) {
          const fits = Math.floor((r.w - 6) / charWidth);
          let label = str(r.node.name);
          if (label.length > fits) label = label.slice(0, Math.max(fits - 1, 1)) + "…";
          ctx.fillStyle = r.caller ? "#555" : "#1a1a1a";
          ctx.fillText(label, r.x + 3, y + FLAME_ROW_PX / 2);
        }
      }
      view.flameNames = Array.from(names);
      view.flameFocus = str(focus.name);
      this.resetButton.disabled = chain.length === 1;
      setText(this.pathEl, chain.length > 1 ? "zoomed into " + chain.slice(1).map((n) => str(n.name)).join(" → ") : "");
    }

    rectAt(e) {
      const box = this.canvas.getBoundingClientRect();
      const x = e.clientX - box.left;
      const row = Math.floor((e.clientY - box.top) / FLAME_ROW_PX);
      for (let i = this.rects.length - 1; i >= 0; i--) {
        const r = this.rects[i];
        if (r.y === row && x >= r.x && x < r.x + r.w) return i;
      }
      return -1;
    }

    hover(e) {
      const i = this.rectAt(e);
      if (i < 0) {
        this.tip.hidden = true;
        return;
      }
      const n = this.rects[i].node;
      const value = num(n.value) || 0;
      const total = num(this.tree.value) || 0;
      const focus = num(this.rects.find((r) => !r.caller).node.value) || 0;
      const where = n.file ? `${str(n.file)}:${str(n.line)}` : "";
      const lines = [str(n.name), where, `${fmtInt(value)} samples, ${fmtPercent(value, total)} % of all`];
      if (focus !== total) lines.push(`${fmtPercent(value, focus)} % of the zoomed frame`);
      setText(this.tip, lines.filter(Boolean).join("\n"));
      this.tip.hidden = false;
      const box = this.canvas.parentElement.getBoundingClientRect();
      const left = Math.min(e.clientX - box.left + 12, box.width - this.tip.offsetWidth - 4);
      this.tip.style.left = Math.max(0, left) + "px";
      this.tip.style.top = e.clientY - box.top + 14 + "px";
    }

    click(e) {
      const i = this.rectAt(e);
      if (i < 0) return;
      const path = [];
      for (let j = i; j > 0; j = this.rects[j].parent) path.unshift(frameKey(this.rects[j].node));
      this.zoom(path);
    }
  }

  // Warm colours, the same for a function in every draw.
  function frameColor(node, caller) {
    const name = str(node.name);
    if (name === "all" || name === "(other)") return caller ? "#e4e4e4" : "#d0d0d0";
    let h = 0;
    const key = name + str(node.file);
    for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) | 0;
    const hue = 8 + (Math.abs(h) % 45);
    const light = 62 + (Math.abs(h >> 8) % 14);
    return caller ? `hsl(${hue} 40% 86%)` : `hsl(${hue} 85% ${light}%)`;
  }

  // -- the page's state ----------------------------------------------------------------

  let sources = []; // the latest source infos, in the server's order
  const bodies = new Map(); // source id -> its latest snapshot body
  const histories = new Map(); // source id -> History
  const eventRates = new Map(); // source id -> {events, at, rate}
  const pausedBy = new Map(); // source id -> what the last reply said
  let lastUpdateAt = 0; // Date.now() of the last update
  let needRender = false;

  // A source's history, made on first use; past HISTORIES sources only the
  // selected one gets one (pushing out another's).
  function historyOf(id) {
    let h = histories.get(id);
    if (h === undefined) {
      if (histories.size >= HISTORIES) {
        if (id !== view.selected) return null;
        for (const other of histories.keys()) {
          if (other !== id) {
            histories.delete(other);
            break;
          }
        }
      }
      h = new History();
      histories.set(id, h);
    }
    return h;
  }

  // One update: the stream's message, or one round of polling.
  function applyUpdate(update) {
    const u = obj(update);
    const list = arr(u.sources).filter((s) => num(obj(s).id) !== null);
    const states = obj(u.states);
    const now = Date.now();
    const ids = new Set(list.map((s) => s.id));
    for (const map of [bodies, histories, eventRates, pausedBy]) {
      for (const id of map.keys()) if (!ids.has(id)) map.delete(id);
    }
    sources = list;
    if (view.selected === null || !ids.has(view.selected)) {
      const wanted = hashSource();
      select(ids.has(wanted) ? wanted : list.length ? list[0].id : null, false);
    }
    for (const info of list) {
      const id = info.id;
      // The server's word on pause (any client may have sent it) wins over
      // this page's last reply.
      if (typeof info.paused === "boolean") {
        pausedBy.set(id, info.paused);
        if (id === view.selected) view.paused = info.paused;
      }
      const events = num(info.events);
      const before = eventRates.get(id);
      if (events !== null) {
        let rate = before ? before.rate : null;
        if (before && now > before.at) rate = Math.max(0, ((events - before.events) * 1000) / (now - before.at));
        eventRates.set(id, { events, at: now, rate });
      }
      const body = states[String(id)];
      if (body === null || typeof body !== "object") continue;
      bodies.set(id, body);
      const h = historyOf(id);
      if (h) {
        h.apply(obj(body.state));
        if (id === view.selected && h.seeded === false) seedHistory(id, h);
      }
    }
    view.updates++;
    lastUpdateAt = now;
    render();
  }

  // Once per history (again after a restart of its program): a failure is
  // not retried, the page then shows what it gathers itself.
  async function seedHistory(id, h) {
    h.seeded = "asked";
    let data;
    try {
      data = await getJson(`/api/history?source=${id}`);
    } catch (err) {
      h.seeded = "failed";
      return;
    }
    if (histories.get(id) !== h || h.seeded !== "asked") return; // gone, or reset meanwhile
    h.seeded = true;
    view.seeded += h.seed(data);
    render();
  }

  // -- the connection: a stream, or polling when it fails -------------------------------

  let streamErrors = 0;
  let pollTimer = null;
  let retryTimer = null;

  function openStream() {
    retryTimer = null;
    if (typeof EventSource === "undefined") {
      startPolling();
      return;
    }
    const es = new EventSource("api/stream");
    es.addEventListener("update", (e) => {
      streamErrors = 0;
      stopPolling();
      view.mode = "stream";
      let update;
      try {
        update = JSON.parse(e.data);
      } catch (err) {
        showStatus(`bad update from the server: ${err.message}`, true);
        return;
      }
      applyUpdate(update);
    });
    es.addEventListener("error", () => {
      // The browser reconnects a dropped stream by itself; a refused one
      // (an error status, not an event stream) is CLOSED for good.  Either
      // way, poll until the stream is back.
      streamErrors++;
      if (es.readyState === EventSource.CLOSED || streamErrors >= 2) {
        es.close();
        startPolling();
        if (retryTimer === null) retryTimer = setTimeout(openStream, STREAM_RETRY_MS);
      }
      updateStatus();
    });
  }

  function startPolling() {
    view.mode = "poll";
    if (pollTimer === null) pollTimer = setTimeout(poll, 0);
  }

  function stopPolling() {
    if (pollTimer !== null) clearTimeout(pollTimer);
    pollTimer = null;
  }

  async function getJson(url) {
    const r = await fetch(url, { cache: "no-store" });
    let body = null;
    try {
      body = await r.json();
    } catch (err) {
      if (r.ok) throw new Error(`${url}: not JSON`);
    }
    if (!r.ok) throw new Error(str(obj(body).error) || `${url}: HTTP ${r.status}`);
    return body;
  }

  async function poll() {
    try {
      const list = arr(await getJson("api/sources"));
      const states = {};
      const ids = list.map((s) => num(obj(s).id));
      const id = ids.includes(view.selected) ? view.selected : ids.find((x) => x !== null);
      if (id !== undefined && id !== null) states[String(id)] = await getJson(`api/state?source=${id}`);
      if (pollTimer !== null) applyUpdate({ sources: list, states });
    } catch (err) {
      showStatus(`disconnected: ${err.message}`, true);
    }
    if (pollTimer !== null) pollTimer = setTimeout(poll, POLL_MS);
  }

  let statusOverride = null;

  function showStatus(text, bad) {
    statusOverride = { text, bad, at: Date.now() };
    updateStatus();
  }

  function updateStatus() {
    const status = $("status");
    const now = Date.now();
    let text;
    let bad = false;
    if (statusOverride && now - statusOverride.at < STALE_MS && statusOverride.at > lastUpdateAt) {
      ({ text, bad } = statusOverride);
    } else if (!lastUpdateAt) {
      text = "connecting…";
    } else {
      const ago = Math.max(0, Math.round((now - lastUpdateAt) / 1000));
      bad = now - lastUpdateAt > STALE_MS;
      text = (bad ? "disconnected: last update " : "updated ") + (ago < 1 ? "just now" : `${ago} s ago`);
      if (view.mode === "poll") text += " (polling)";
    }
    setText(status, text);
    status.classList.toggle("bad", bad);
  }

  // -- selection ----------------------------------------------------------------------

  function hashSource() {
    const m = /source=(\d+)/.exec(location.hash);
    return m ? Number(m[1]) : null;
  }

  function select(id, user) {
    if (id === view.selected) return;
    view.selected = id;
    view.paused = id !== null && pausedBy.get(id) === true;
    setText($("control-msg"), "");
    if (user && id !== null) history.replaceState(null, "", `#source=${id}`);
    flame.focusPath = [];
    flame.setTree(null);
    refreshFlame(true);
    if (user) render();
  }

  // -- rendering ----------------------------------------------------------------------

  const charts = {
    heap: new Chart($("heap-chart"), $("heap-legend"), { slots: HEAP.length, left: fmtBytes, right: fmtCount }),
    gc: new Chart($("gc-chart"), $("gc-legend"), { slots: 1, left: fmtSeconds, bars: true }),
    threads: new Chart($("threads-chart"), $("threads-legend"), { slots: TOP_THREADS, left: (v) => v.toFixed(2) }),
    counters: new Chart($("counters-chart"), $("counters-legend"), { slots: COUNTER_SERIES + 1, left: fmtCount }),
    loss: new Chart($("loss-chart"), $("loss-legend"), { slots: LOSS.length, left: fmtCount }),
  };
  const flame = new Flame($("flame"), $("flame-tip"), $("flame-path"), $("flame-reset"), $("flame-empty"));
  const threadRows = new Rows($("threads").tBodies[0], ["num", "", "", "num", "num"], TOP_THREADS);
  const functionRows = new Rows($("functions").tBodies[0], ["fn", "where", "num", "num", "num"], TOP_FUNCTIONS);
  const lossRows = new Rows($("loss").tBodies[0], ["", "num"], 16);
  const tracedRows = new Rows($("traced").tBodies[0], ["fn", "where", "num", "num", "num"], TOP_FUNCTIONS);
  const asyncioRows = new Rows($("asyncio").tBodies[0], ["", "num"], 8);
  const taskItems = new Rows($("asyncio-tasks").tBodies[0], ["", ""], 15);
  const allocRows = new Rows($("allocs").tBodies[0], ["fn", "num", "num"], 2 * TOP_THREADS);
  const sourceItems = []; // pooled <li>s of #sources
  const markerItems = []; // pooled <li>s of #markers
  const figureCards = new Map(); // figure name -> its value element
  let processKey = null;

  function render() {
    if (document.hidden) {
      needRender = true;
      return;
    }
    needRender = false;
    renderSources();
    renderSelected();
    updateStatus();
  }

  function renderSources() {
    const list = $("sources");
    const shown = Math.min(sources.length, SHOWN_SOURCES);
    while (sourceItems.length < shown) {
      const li = el("li");
      const button = el("button", "source");
      button.type = "button";
      button.append(el("span", "name"), el("span", "badge"), el("span", "meta"));
      li.appendChild(button);
      list.appendChild(li);
      sourceItems.push(li);
    }
    sourceItems.forEach((li, i) => {
      li.hidden = i >= shown;
      if (i >= shown) return;
      const info = obj(sources[i]);
      const button = li.firstChild;
      const [name, badge, meta] = button.children;
      li.dataset.id = String(info.id);
      button.classList.toggle("selected", info.id === view.selected);
      button.setAttribute("aria-pressed", String(info.id === view.selected));
      setText(name, str(info.name) || `source ${info.id}`);
      const state = sourceState(info);
      setText(badge, state);
      badge.className = "badge " + state;
      const rate = eventRates.get(info.id);
      const parts = [];
      if (num(info.pid) !== null) parts.push(`pid ${info.pid}`);
      if (info.kind) parts.push(str(info.kind));
      parts.push(`${fmtCount(num(info.events))} events`);
      if (rate && rate.rate !== null && info.live !== false) parts.push(`${fmtCount(rate.rate)}/s`);
      setText(meta, parts.join(" · "));
    });
    $("sources-empty").hidden = sources.length > 0;
    const more = $("sources-more");
    more.hidden = sources.length <= SHOWN_SOURCES;
    setText(more, more.hidden ? "" : `and ${sources.length - SHOWN_SOURCES} more`);
  }

  function sourceState(info) {
    if (info.live === true) return pausedBy.get(info.id) ? "paused" : "live";
    if (info.live === false || info.ended === true) return "ended";
    return "";
  }

  function renderSelected() {
    const id = view.selected;
    const info = obj(sources.find((s) => s.id === id));
    const body = obj(bodies.get(id));
    const state = obj(body.state);
    const h = histories.get(id) || null;

    setText($("source-title"), id === null ? "—" : str(info.name || body.name) || `source ${id}`);
    const badge = $("source-badge");
    const st = id === null ? "" : sourceState(info);
    setText(badge, st);
    badge.className = "badge " + st;
    const canControl = id !== null && info.live !== false;
    $("pause").disabled = !canControl;
    $("resume").disabled = !canControl;

    renderFigures(info, state);
    renderCharts(h, state);
    renderThreads(state);
    renderFunctions(state);
    renderMarkers(state);
    renderTraced(state);
    renderAsyncio(state);
    renderAllocations(state);
    renderLoss(info, state);
    renderProcess(id, info, state);
    view.points = h ? Math.max(0, ...Array.from(h.heap.map.values(), (s) => s.ring.length)) : 0;
    view.events = num(state.events) ?? num(info.events) ?? 0;
  }

  function renderFigures(info, state) {
    const gc = obj(state.gc);
    const heap = obj(state.heap);
    const figures = [
      ["running for", num(state.time_ns) === null ? "–" : fmtClock(num(state.time_ns) / 1e9)],
      ["events", fmtInt(num(state.events) ?? num(info.events))],
      ["samples", fmtInt(num(state.samples))],
      ["threads", fmtInt(num(state.threads_total) ?? arr(state.threads).length)],
      ["GC collections", fmtInt(num(gc.collections))],
      ["RSS", fmtBytes(num(heap.rss) ?? num(heap.ghc_size))],
      ["open spans", fmtInt(num(obj(state.spans).open))],
    ];
    const box = $("figures");
    for (const [name, value] of figures) {
      let v = figureCards.get(name);
      if (v === undefined) {
        const card = el("div", "figure");
        v = el("span", "value");
        card.append(v, el("span", "name", name));
        box.appendChild(card);
        figureCards.set(name, v);
      }
      setText(v, value);
    }
  }

  // The newest spans, closed and still open, on the program's clock.
  function spanBands(state) {
    const spans = obj(state.spans);
    const now = num(state.time_ns);
    const out = [];
    for (const sp of arr(spans.recent)) {
      const b = num(obj(sp).begin);
      const e = num(obj(sp).end);
      if (b !== null && e !== null) out.push({ x0: b / 1e9, x1: e / 1e9, label: str(sp.name) });
    }
    for (const sp of arr(spans.current)) {
      const b = num(obj(sp).begin);
      if (b !== null && now !== null) out.push({ x0: b / 1e9, x1: now / 1e9, label: `${str(sp.name)} (open)` });
    }
    view.spans = out.length;
    return out.slice(-SPAN_BANDS);
  }

  function markerPoints(state) {
    const out = [];
    for (const m of arr(state.markers)) {
      const ts = num(obj(m).ts);
      if (ts !== null) out.push({ x: ts / 1e9, label: str(m.name) });
    }
    return out.slice(-MARKER_LINES);
  }

  function renderCharts(h, state) {
    const domain = h ? h.domain() : null;
    const markers = markerPoints(state);
    const heapSeries = [];
    if (h) {
      let i = 0;
      for (const [key, , axis] of HEAP) {
        const s = h.heap.map.get(key);
        if (s) heapSeries.push({ label: s.label, ring: s.ring, axis, color: PALETTE[i++ % PALETTE.length] });
      }
    }
    charts.heap.render(domain, heapSeries, markers, "no heap figures yet");

    const gcSeries = h ? [{ label: "last pause per update with collections", ring: h.gc, color: PALETTE[1] }] : [];
    charts.gc.render(domain, gcSeries, markers, "no collection yet");
    const gc = obj(state.gc);
    const pauses = obj(gc.pause_ns);
    const gens = Object.entries(obj(gc.by_generation)).map(([g, n]) => `gen ${g}: ${fmtInt(num(n))}`);
    setText(
      $("gc-summary"),
      num(gc.collections) === null
        ? ""
        : `${fmtInt(num(gc.collections))} collections${gens.length ? " (" + gens.join(", ") + ")" : ""}, ` +
            `max ${fmtSeconds(num(pauses.max) === null ? null : num(pauses.max) / 1e9)}, ` +
            `total ${fmtSeconds(num(pauses.total) === null ? null : num(pauses.total) / 1e9)}`,
    );

    // The threads busy most recently, busiest first.
    const threadSeries = h
      ? Array.from(h.threads.map.values())
          .sort((a, b) => b.seen - a.seen || b.ring.lastY() - a.ring.lastY())
          .slice(0, TOP_THREADS)
          .map((s) => ({ label: s.label, ring: s.ring, color: threadColor(s.key) }))
      : [];
    charts.threads.render(domain, threadSeries, markers, "no CPU time measured yet");

    const counterSeries = [];
    if (h) {
      let i = 0;
      for (const s of h.counters.map.values()) counterSeries.push({ label: s.label, ring: s.ring, color: PALETTE[i++ % PALETTE.length] });
      if (h.spans.length) counterSeries.push({ label: "open spans", ring: h.spans, color: "#868e96" });
    }
    charts.counters.render(domain, counterSeries, markers, "no counters or spans yet", spanBands(state));

    const lossSeries = [];
    if (h) {
      let i = 1;
      for (const [key] of LOSS) {
        const s = h.loss.map.get(key);
        if (s) lossSeries.push({ label: s.label, ring: s.ring, color: PALETTE[i++] });
      }
    }
    charts.loss.render(domain, lossSeries, [], "no loss figures yet");
  }

  const threadColor = (id) => `hsl(${Math.round((Number(id) * 137.508) % 360)} 65% 45%)`;

  function renderThreads(state) {
    const threads = arr(state.threads).map(obj);
    const top = threads
      .slice()
      .sort((a, b) => (num(b.cpu_ns) || 0) - (num(a.cpu_ns) || 0) || (num(a.id) || 0) - (num(b.id) || 0))
      .slice(0, TOP_THREADS);
    const n = threadRows.set(top.length);
    for (let i = 0; i < n; i++) {
      const t = top[i];
      setText(threadRows.cell(i, 0), str(t.id));
      setText(threadRows.cell(i, 1), str(t.label));
      setText(threadRows.cell(i, 2), str(t.status));
      const cpu = num(t.cpu_ns);
      setText(threadRows.cell(i, 3), cpu === null ? "–" : (cpu / 1e9).toFixed(2));
      setText(threadRows.cell(i, 4), str(t.native_id));
    }
    const evicted = num(state.threads_evicted) || 0;
    setText(
      $("threads-summary"),
      threads.length ? `(busiest ${n} of ${fmtInt(threads.length)}${evicted ? `, ${fmtInt(evicted)} forgotten` : ""})` : "",
    );
  }

  function renderFunctions(state) {
    const fns = arr(state.functions)
      .map(obj)
      .sort((a, b) => (num(b.total) || 0) - (num(a.total) || 0))
      .slice(0, TOP_FUNCTIONS);
    const samples = num(state.samples) || 0;
    const n = functionRows.set(fns.length);
    for (let i = 0; i < n; i++) {
      const f = fns[i];
      setText(functionRows.cell(i, 0), str(f.name));
      setWhere(functionRows.cell(i, 1), f);
      setText(functionRows.cell(i, 2), fmtInt(num(f.own)));
      setText(functionRows.cell(i, 3), fmtInt(num(f.total)));
      setText(functionRows.cell(i, 4), fmtPercent(num(f.total) || 0, samples));
    }
    setText($("functions-summary"), samples ? `(${fmtInt(samples)} samples)` : "");
  }

  // Deep instrumentation (lpm run --trace, --asyncio, --alloc): each panel
  // shows only when its program sends that kind of event.
  function fmtNs(ns) {
    if (ns === null) return "–";
    return ns >= 1e9 ? `${(ns / 1e9).toFixed(2)} s` : `${(ns / 1e6).toFixed(ns >= 1e8 ? 0 : 2)} ms`;
  }

  function renderTraced(state) {
    const calls = obj(state.calls);
    const fns = arr(calls.functions).map(obj).slice(0, TOP_FUNCTIONS);
    $("traced-panel").hidden = !(num(calls.calls) > 0);
    const n = tracedRows.set(fns.length);
    for (let i = 0; i < n; i++) {
      const f = fns[i];
      setText(tracedRows.cell(i, 0), str(f.name));
      setWhere(tracedRows.cell(i, 1), f);
      setText(tracedRows.cell(i, 2), fmtInt(num(f.calls)));
      setText(tracedRows.cell(i, 3), fmtNs(num(f.total_ns)));
      setText(tracedRows.cell(i, 4), fmtNs(num(f.own_ns)));
    }
    setText($("traced-summary"), num(calls.calls) ? `(${fmtInt(num(calls.calls))} calls, exact)` : "");
  }

  function renderAsyncio(state) {
    const aio = obj(state.asyncio);
    $("asyncio-panel").hidden = !(num(aio.created) > 0);
    const lag = num(aio.lag_ms);
    const rows = [
      ["created", fmtInt(num(aio.created))],
      ["open", fmtInt(num(aio.open))],
      ["done", fmtInt(num(aio.done))],
      ["failed", fmtInt(num(aio.failed))],
      ["cancelled", fmtInt(num(aio.cancelled))],
      ["loop lag", lag === null ? "–" : `${lag.toFixed(1)} ms (max ${(num(aio.lag_ms_max) || 0).toFixed(1)})`],
    ];
    const n = asyncioRows.set(rows.length);
    for (let i = 0; i < n; i++) {
      setText(asyncioRows.cell(i, 0), rows[i][0]);
      setText(asyncioRows.cell(i, 1), rows[i][1]);
    }
    // Open tasks first, with where they wait (the innermost coroutine), then the newest finished.
    const items = arr(aio.open_tasks).map(obj).slice(0, 5).map((t) => {
      const chain = str(t.awaiting).split(" > ");
      return ["open", chain[0] ? `${str(t.name)} awaiting ${chain[chain.length - 1]}` : str(t.name)];
    });
    for (const t of arr(aio.recent).map(obj).slice(-10).reverse()) {
      items.push([str(t.status), `${str(t.name)} ${fmtNs((num(t.end) || 0) - (num(t.created) || 0))}`]);
    }
    const m = taskItems.set(items.length);
    for (let i = 0; i < m; i++) {
      setText(taskItems.cell(i, 0), items[i][0]);
      setText(taskItems.cell(i, 1), items[i][1]);
    }
  }

  function renderAllocations(state) {
    const al = obj(state.allocations);
    const threads = arr(al.threads).map(obj);
    const sites = arr(al.sites).map(obj);
    $("allocs-panel").hidden = threads.length === 0;
    const labels = new Map(arr(state.threads).map(obj).map((t) => [num(t.id), str(t.label)]));
    const rows = threads.map((t) => [labels.get(num(t.thread)) || `thread ${t.thread}`, fmtBytes(num(t.allocated)),
                                     fmtBytes(num(t.freed))]);
    for (const site of sites.slice(0, TOP_THREADS)) rows.push([`${str(site.name)} (sampled)`, fmtBytes(num(site.bytes)), ""]);
    const n = allocRows.set(rows.length);
    for (let i = 0; i < n; i++) for (let j = 0; j < 3; j++) setText(allocRows.cell(i, j), rows[i][j]);
    setText($("allocs-summary"), sites.length ? `(${fmtBytes(num(al.sampled_bytes))} sampled)` : "");
  }

  // A function's file:line, shortened, the whole of it on hover.
  function setWhere(cell, f) {
    const where = f.file ? `${str(f.file)}:${str(f.line)}` : "";
    setText(cell, shortPath(where));
    cell.title = where;
  }

  // The last two parts of a path: enough to tell files apart in a narrow cell.
  function shortPath(p) {
    const parts = p.split("/");
    return parts.length > 3 ? "…/" + parts.slice(-2).join("/") : p;
  }

  function renderMarkers(state) {
    const items = [];
    for (const m of arr(state.markers)) items.push({ ts: num(obj(m).ts), kind: "marker", text: str(m.name) });
    for (const m of arr(state.messages)) items.push({ ts: num(obj(m).ts), kind: "message", text: str(m.text) });
    items.sort((a, b) => (b.ts || 0) - (a.ts || 0));
    const shown = Math.min(items.length, MARKERS_SHOWN);
    const list = $("markers");
    while (markerItems.length < shown) {
      const li = el("li");
      li.append(el("span", "time"), el("span", "kind"), el("span", "text"));
      list.appendChild(li);
      markerItems.push(li);
    }
    markerItems.forEach((li, i) => {
      li.hidden = i >= shown;
      if (i >= shown) return;
      const it = items[i];
      setText(li.children[0], it.ts === null ? "" : fmtClock(it.ts / 1e9));
      setText(li.children[1], it.kind);
      li.children[1].className = "kind " + it.kind;
      setText(li.children[2], it.text);
    });
  }

  function renderLoss(info, state) {
    const loss = obj(state.loss);
    const rows = [
      ["events dropped in the program", num(loss.events_lost), false],
      ["bytes dropped in the program", num(loss.bytes_lost), false],
      ["events received", num(loss.received), false],
      ["events lost, per thread accounts", num(loss.reported_lost), false],
      ["gaps nobody reported (stays 0)", num(loss.unreported), true],
      ["malformed events", num(loss.malformed), true],
      ["bytes skipped by the server", num(info.skipped_bytes), true],
      ["format errors", num(info.format_errors), true],
      ["threads forgotten (table full)", num(state.threads_evicted), false],
      ["functions pruned (table full)", num(state.functions_pruned), false],
      ["counters dropped (table full)", num(state.counters_dropped), false],
    ].filter((r) => r[1] !== null);
    const n = lossRows.set(rows.length);
    for (let i = 0; i < n; i++) {
      const [label, value, alarm] = rows[i];
      setText(lossRows.cell(i, 0), label);
      setText(lossRows.cell(i, 1), fmtInt(value));
      lossRows.rows[i].classList.toggle("bad", alarm && value > 0);
    }
  }

  // Argv, environment and settings change rarely: rebuilt only when they do.
  function renderProcess(id, info, state) {
    const program = obj(state.program);
    const args = arr(program.args).map(str);
    const envRaw = program.env;
    const env = Array.isArray(envRaw)
      ? envRaw.map(str)
      : Object.entries(obj(envRaw)).map(([k, v]) => `${k}=${str(v)}`);
    const settings = Object.entries(obj(state.settings));
    const pid = num(program.pid) ?? num(info.pid);
    const rts = str(program.rts || info.rts);
    const key = JSON.stringify([id, args.length, args[0], env.length, settings.length, pid, program.ppid, rts, info.path, info.kind]);
    if (key === processKey) return;
    processKey = key;
    const box = $("process");
    if (id === null) {
      box.replaceChildren();
      return;
    }
    const dl = el("dl", "kv");
    const add = (name, value) => {
      if (value === "" || value === null || value === undefined) return;
      dl.append(el("dt", "", name), el("dd", "", String(value)));
    };
    add("pid", pid);
    add("parent pid", num(program.ppid));
    add("interpreter", rts);
    add("Python", str(obj(state.settings)["python.version"]));
    const wall = arr(program.wall_clock);
    if (num(wall[0]) !== null) add("started", new Date(num(wall[0]) * 1000).toLocaleString());
    add("source", [str(info.kind), str(info.path)].filter(Boolean).join(" "));
    const parts = [dl];
    if (args.length) {
      parts.push(el("h4", "", "argv"));
      parts.push(el("pre", "argv", args.map(quoteArg).join(" ")));
    }
    if (env.length) {
      const d = el("details");
      d.append(el("summary", "", `environment (${env.length} variables, secrets redacted by the server)`));
      d.append(el("pre", "", env.slice(0, ENV_SHOWN).join("\n") + (env.length > ENV_SHOWN ? `\n… ${env.length - ENV_SHOWN} more` : "")));
      parts.push(d);
    }
    if (settings.length) {
      const d = el("details");
      d.append(el("summary", "", `settings (${settings.length})`));
      const table = el("table", "grid kv");
      const tbody = el("tbody");
      for (const [k, v] of settings.slice(0, SETTINGS_SHOWN)) {
        const tr = el("tr");
        tr.append(el("td", "", k), el("td", "", str(v)));
        tbody.appendChild(tr);
      }
      table.appendChild(tbody);
      d.appendChild(table);
      parts.push(d);
    }
    box.replaceChildren(...parts);
  }

  // Quoted only where spaces or quotes would make the line ambiguous (for
  // reading, not pasting: "<redacted>" stays as it is).
  function quoteArg(a) {
    return a !== "" && !/[\s'"\\]/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`;
  }

  // -- the flame graph's data -------------------------------------------------------------

  let flameRequest = null; // {controller, key}

  function refreshFlame(force) {
    const id = view.selected;
    if (id === null) return;
    const seconds = $("flame-range").value;
    const key = `${id}/${seconds}`;
    if (flameRequest) {
      if (!force) return; // one at a time
      flameRequest.controller.abort();
    }
    const controller = new AbortController();
    const request = { controller, key };
    flameRequest = request;
    fetch(`api/flame?source=${id}&seconds=${seconds}`, { cache: "no-store", signal: controller.signal })
      .then(async (r) => {
        const body = await r.json().catch(() => null);
        if (!r.ok) throw new Error(str(obj(body).error) || `HTTP ${r.status}`);
        if (`${view.selected}/${$("flame-range").value}` !== key) return;
        setText($("flame-empty"), "No stack samples yet.");
        flame.setTree(body);
      })
      .catch((err) => {
        if (err.name === "AbortError") return;
        setText($("flame-empty"), `No flame graph: ${err.message}`);
        flame.setTree(null);
      })
      .finally(() => {
        if (flameRequest === request) flameRequest = null;
      });
  }

  // -- controls -------------------------------------------------------------------------

  async function control(op) {
    const id = view.selected;
    if (id === null) return;
    const msg = $("control-msg");
    msg.className = "control-msg";
    setText(msg, op === "pause" ? "pausing…" : "resuming…");
    let text;
    let bad = true;
    try {
      const r = await fetch(`api/${op}?source=${id}`, { method: "POST", cache: "no-store" });
      const body = obj(await r.json().catch(() => null));
      if (r.ok && body.ok === true) {
        view.paused = op === "pause";
        pausedBy.set(id, view.paused);
        text = view.paused ? "paused: the program sends no events" : "resumed";
        bad = false;
      } else {
        text = `${op} failed: ${str(body.error) || `HTTP ${r.status}`}`;
      }
    } catch (err) {
      text = `${op} failed: ${err.message}`;
    }
    if (view.selected !== id) return;
    msg.className = "control-msg " + (bad ? "bad" : "ok");
    setText(msg, text);
    render();
  }

  // -- wiring ----------------------------------------------------------------------------

  $("sources").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-id]");
    if (li) select(Number(li.dataset.id), true);
  });
  $("pause").addEventListener("click", () => control("pause"));
  $("resume").addEventListener("click", () => control("resume"));
  $("flame-range").addEventListener("change", () => {
    flame.focusPath = [];
    refreshFlame(true);
  });
  window.addEventListener("resize", () => {
    render();
    flame.draw();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && needRender) render();
  });
  setInterval(updateStatus, 1000);
  setInterval(() => {
    if (!document.hidden) refreshFlame(false);
  }, FLAME_MS);

  render();
  openStream();
})();
