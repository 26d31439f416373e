// songspace explorer: the map, track view, search, upload and evaluation of one page.
// Talks to `songspace serve` (fetch), or, in an exported page, reads window.SONGSPACE_DATA.
// How many neighbours are listed is the server's (params.yaml serve.neighbours). Radio and
// paths need the server (/api/radio, /api/path) and are hidden in an exported page.
"use strict";
(function () {
  const STATIC = window.SONGSPACE_DATA || null;
  const POINT_RADIUS = 3.5;   // CSS pixels
  const HIT_RADIUS = 9;       // CSS pixels: how near the cursor a point must be to be picked
  const CELL = 24;            // CSS pixels per cell of the hover lookup grid
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                   "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39"];
  const $ = (id) => document.getElementById(id);

  async function getJSON(url, options) {
    const r = await fetch(url, options);
    const body = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  }

  const api = STATIC ? {
    tracks: async () => STATIC.tracks,
    evaluation: async () => STATIC.evaluation,
    neighbours: async (id) => ({ neighbours: (STATIC.neighbours[id] || []).map((n, i) => ({ rank: i + 1, ...n })) }),
    audioUrl: (id) => STATIC.audio[id] || null,
  } : {
    tracks: () => getJSON("api/tracks"),
    evaluation: () => getJSON("api/evaluation"),
    // a track id travels as a query parameter: ids of a folder library are paths ("a/b #1.mp3")
    neighbours: (id) => getJSON(`api/neighbours?id=${encodeURIComponent(id)}`),
    audioUrl: (id) => `audio?id=${encodeURIComponent(id)}`,
    query: (file) => getJSON(`api/query?filename=${encodeURIComponent(file.name)}`,
                             { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } }),
    radio: (id) => getJSON(`api/radio?seed=${encodeURIComponent(id)}`),
    path: (from, to) => getJSON(`api/path?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`),
  };

  // ---------------------------------------------------------------- state
  let tracks = [], byId = new Map(), colour = new Map(), hidden = new Set();
  let selected = null, neighbourIds = [], matches = null;
  let view = { scale: 1, dx: 0, dy: 0 };  // map zoom and pan, applied to unit-square positions
  let grid = new Map(), hoverId = null;
  let queue = { ids: [], pos: -1 }, playingId = null;  // the radio or path being played, in order

  const base = $("map"), overlay = $("map-overlay"), wrap = $("map-wrap"), tooltip = $("tooltip");

  function size() {
    const r = wrap.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    for (const c of [base, overlay]) {
      c.width = Math.round(r.width * dpr); c.height = Math.round(r.height * dpr);
      c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
    }
    return r;
  }

  // unit square -> CSS pixels of the canvas (y up on the map)
  function toScreen(t) {
    const w = base.clientWidth, h = base.clientHeight, pad = 16, s = Math.min(w, h) - 2 * pad;
    const ox = (w - s) / 2, oy = (h - s) / 2;
    return [ox + (t.x * view.scale + view.dx) * s, oy + ((1 - t.y) * view.scale + view.dy) * s];
  }

  function drawBase() {
    const ctx = base.getContext("2d");
    ctx.clearRect(0, 0, base.clientWidth, base.clientHeight);
    grid = new Map();
    // one path per label: thousands of points are a few fill() calls
    const paths = new Map();
    for (const t of tracks) {
      if (hidden.has(t.label)) continue;
      const [x, y] = toScreen(t);
      t.sx = x; t.sy = y;
      if (x < -5 || y < -5 || x > base.clientWidth + 5 || y > base.clientHeight + 5) continue;
      let p = paths.get(t.label);
      if (!p) { p = new Path2D(); paths.set(t.label, p); }
      p.moveTo(x + POINT_RADIUS, y); p.arc(x, y, POINT_RADIUS, 0, 2 * Math.PI);
      const key = `${Math.floor(x / CELL)},${Math.floor(y / CELL)}`;
      if (!grid.has(key)) grid.set(key, []);
      grid.get(key).push(t);
    }
    ctx.globalAlpha = matches ? 0.25 : 0.85;
    for (const [label, p] of paths) { ctx.fillStyle = colour.get(label); ctx.fill(p); }
    ctx.globalAlpha = 1;
    drawOverlay();
  }

  function ring(ctx, t, r, style, width) {
    if (t.sx === undefined || hidden.has(t.label)) return;
    ctx.beginPath(); ctx.arc(t.sx, t.sy, r, 0, 2 * Math.PI);
    ctx.strokeStyle = style; ctx.lineWidth = width; ctx.stroke();
  }

  function drawOverlay() {
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, overlay.clientWidth, overlay.clientHeight);
    if (matches) {
      for (const t of matches) {
        if (hidden.has(t.label) || t.sx === undefined) continue;
        ctx.beginPath(); ctx.arc(t.sx, t.sy, POINT_RADIUS + 1, 0, 2 * Math.PI);
        ctx.fillStyle = colour.get(t.label); ctx.fill();
      }
    }
    const listed = queue.ids.map((id) => byId.get(id)).filter((t) => t && t.sx !== undefined && !hidden.has(t.label));
    if (listed.length > 1) {  // the radio or path as a line through its songs
      ctx.beginPath(); ctx.moveTo(listed[0].sx, listed[0].sy);
      for (const t of listed.slice(1)) ctx.lineTo(t.sx, t.sy);
      ctx.strokeStyle = "rgba(216,100,58,.75)"; ctx.lineWidth = 1.5; ctx.stroke();
    }
    const current = queue.pos >= 0 && byId.get(queue.ids[queue.pos]);
    if (current) ring(ctx, current, POINT_RADIUS + 4, "#d8643a", 2.5);
    const sel = selected && byId.get(selected);
    if (sel) {
      ctx.strokeStyle = "rgba(29,35,48,.45)"; ctx.lineWidth = 1;
      for (const id of neighbourIds) {
        const n = byId.get(id);
        if (!n || n.sx === undefined) continue;
        ctx.beginPath(); ctx.moveTo(sel.sx, sel.sy); ctx.lineTo(n.sx, n.sy); ctx.stroke();
        ring(ctx, n, POINT_RADIUS + 3, "#1d2330", 1.5);
      }
      ring(ctx, sel, POINT_RADIUS + 5, "#000", 2.5);
    }
    const hov = hoverId && byId.get(hoverId);
    if (hov) ring(ctx, hov, POINT_RADIUS + 4, "#d8643a", 2);
  }

  function pick(x, y) {
    let best = null, bestD = HIT_RADIUS * HIT_RADIUS;
    const cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    for (let i = cx - 1; i <= cx + 1; i++) for (let j = cy - 1; j <= cy + 1; j++) {
      for (const t of grid.get(`${i},${j}`) || []) {
        const d = (t.sx - x) ** 2 + (t.sy - y) ** 2;
        if (d < bestD) { bestD = d; best = t; }
      }
    }
    return best;
  }

  let frame = 0;
  function redraw() { if (!frame) frame = requestAnimationFrame(() => { frame = 0; drawBase(); }); }

  // ---------------------------------------------------------------- map interaction
  let drag = null;
  overlay.addEventListener("mousemove", (e) => {
    const r = overlay.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
    if (drag) {
      const s = Math.min(base.clientWidth, base.clientHeight) - 32;
      view.dx = drag.dx + (x - drag.x) / s; view.dy = drag.dy + (y - drag.y) / s;
      drag.moved = drag.moved || Math.abs(x - drag.x) + Math.abs(y - drag.y) > 3;
      redraw(); return;
    }
    const t = pick(x, y);
    if ((t && t.id) !== hoverId) { hoverId = t ? t.id : null; drawOverlay(); }
    if (t) {
      tooltip.hidden = false; tooltip.textContent = `${t.name} · ${t.label}`;
      tooltip.style.left = `${Math.min(x + 12, overlay.clientWidth - tooltip.offsetWidth - 4)}px`;
      tooltip.style.top = `${y + 12}px`;
    } else tooltip.hidden = true;
  });
  overlay.addEventListener("mouseleave", () => { hoverId = null; tooltip.hidden = true; drag = null; drawOverlay(); });
  overlay.addEventListener("mousedown", (e) => {
    const r = overlay.getBoundingClientRect();
    drag = { x: e.clientX - r.left, y: e.clientY - r.top, dx: view.dx, dy: view.dy, moved: false };
  });
  overlay.addEventListener("mouseup", (e) => {
    const was = drag; drag = null;
    if (was && was.moved) return;
    const r = overlay.getBoundingClientRect(), t = pick(e.clientX - r.left, e.clientY - r.top);
    if (t) select(t.id, true);
  });
  overlay.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = overlay.getBoundingClientRect(), s = Math.min(base.clientWidth, base.clientHeight) - 32;
    const ox = (base.clientWidth - s) / 2, oy = (base.clientHeight - s) / 2;
    const ux = (e.clientX - r.left - ox) / s, uy = (e.clientY - r.top - oy) / s;  // cursor in view units
    const f = Math.exp(-e.deltaY * 0.0015), scale = Math.min(200, Math.max(0.5, view.scale * f));
    const g = scale / view.scale;
    view.dx = ux - (ux - view.dx) * g; view.dy = uy - (uy - view.dy) * g; view.scale = scale;
    redraw();
  }, { passive: false });
  overlay.addEventListener("dblclick", () => { view = { scale: 1, dx: 0, dy: 0 }; redraw(); });
  window.addEventListener("resize", () => { size(); drawBase(); });

  // ---------------------------------------------------------------- track view
  function labelChip(label) {
    const s = document.createElement("span");
    s.className = "label"; s.textContent = label; s.style.background = colour.get(label) || "#7f7f7f";
    return s;
  }

  // inList: the song is the list's next one (otherwise the list stops following the player)
  function play(id, inList) {
    if (!inList) setCurrent(-1);
    const url = api.audioUrl(id), player = $("player");
    if (!url) return false;
    playingId = id;
    player.src = url;
    player.play().catch(() => {});  // autoplay may be refused until the user interacts
    return true;
  }

  function trackLink(id, text) {
    const a = document.createElement("a");
    a.textContent = text; a.title = id;
    a.addEventListener("click", () => select(id, true));
    return a;
  }

  function neighbourList(list, target) {
    target.replaceChildren();
    for (const n of list) {
      const li = document.createElement("li"), t = byId.get(n.track_id);
      li.dataset.trackId = n.track_id;
      const b = document.createElement("button");
      b.className = "play"; b.textContent = "▶"; b.title = "play";
      b.addEventListener("click", () => play(n.track_id));
      if (!api.audioUrl(n.track_id)) b.disabled = true;
      const d = document.createElement("span");
      d.className = "dist"; d.textContent = Number(n.distance).toFixed(4);
      li.append(b, trackLink(n.track_id, t ? t.name : n.track_id), labelChip(n.label), d);
      target.append(li);
    }
  }

  async function select(id, autoplay) {
    const t = byId.get(id);
    if (!t) return;
    selected = id; neighbourIds = [];
    $("radio-button").disabled = $("path-button").disabled = false;
    $("track-title").textContent = t.name;
    $("track-label").replaceChildren(labelChip(t.label), document.createTextNode(` id ${t.id}`));
    if (autoplay) play(id);
    drawOverlay();
    const target = $("neighbours");
    target.replaceChildren();
    try {
      const result = await api.neighbours(id);
      if (selected !== id) return;
      neighbourIds = result.neighbours.map((n) => n.track_id);
      neighbourList(result.neighbours, target);
      drawOverlay();
    } catch (err) {
      const li = document.createElement("li"); li.textContent = err.message; target.append(li);
    }
  }

  // ---------------------------------------------------------------- radio and paths
  function setCurrent(pos) {
    queue.pos = pos;
    $("queue").querySelectorAll("li").forEach((li, i) => li.classList.toggle("current", i === pos));
    drawOverlay();
  }

  // play the list from pos on; songs without audio are passed over
  function playAt(pos) {
    for (; pos < queue.ids.length; pos++) {
      setCurrent(pos);
      if (play(queue.ids[pos], true)) return;
    }
    setCurrent(-1);
  }

  // songs: /api/radio or /api/path's list; similar: what each song's similarity compares it to
  function showList(title, songs, similar) {
    queue = { ids: songs.map((s) => s.track_id), pos: -1 };
    $("queue-title").textContent = title;
    const ol = $("queue");
    ol.replaceChildren();
    songs.forEach((s, i) => {
      const li = document.createElement("li"), t = byId.get(s.track_id);
      li.dataset.trackId = s.track_id;
      const b = document.createElement("button");
      b.className = "play"; b.textContent = "▶"; b.title = "play the list from here";
      b.addEventListener("click", () => playAt(i));
      const a = document.createElement("a");
      a.textContent = s.name; a.title = s.track_id;
      a.addEventListener("click", () => { playAt(i); select(s.track_id, false); });
      const d = document.createElement("span");
      d.className = "dist"; d.textContent = Number(s.similarity).toFixed(3);
      d.title = `similarity to ${similar} (0 to 1)`;
      li.append(b, a, ...(t ? [labelChip(t.label)] : []), d);
      ol.append(li);
    });
    $("queue-box").hidden = false;
    const player = $("player");
    if (playingId === queue.ids[0] && !player.paused && !player.ended) setCurrent(0);  // it plays on
    else playAt(0);
  }

  // the path's target: a track id from the list, or a name or text only one track matches
  function pathTarget(text) {
    if (byId.has(text)) return text;
    const q = text.trim().toLowerCase();
    if (!q) return null;
    const named = tracks.filter((t) => t.name.toLowerCase() === q);
    const found = named.length ? named
      : tracks.filter((t) => t.name.toLowerCase().includes(q) || t.id.toLowerCase().includes(q));
    return found.length === 1 ? found[0].id : null;
  }

  async function makeList(what) {
    const msg = $("list-message"), seed = selected;
    msg.className = ""; msg.textContent = "";
    try {
      if (what === "radio") {
        msg.textContent = "making a radio ...";
        const result = await api.radio(seed);
        showList(`Radio from ${byId.get(seed).name} (${result.songs.length} songs)`, result.songs, "the seed");
      } else {
        const text = $("path-target").value, target = pathTarget(text);
        if (!target) throw new Error(text.trim() ? `no single track matches "${text.trim()}": choose one from the list`
                                                 : "choose the track the path leads to");
        msg.textContent = "finding a path ...";
        const result = await api.path(seed, target);
        showList(`Path from ${byId.get(seed).name} to ${byId.get(target).name} (${result.songs.length} songs)`,
                 result.songs, "the song before");
      }
      msg.textContent = "";
    } catch (err) {
      msg.className = "error"; msg.textContent = err.message;
    }
  }

  function setupLists() {
    if (!api.radio) { $("lists").hidden = true; return; }
    const options = $("track-options");
    for (const t of [...tracks].sort((a, b) => a.name.localeCompare(b.name))) {
      const o = document.createElement("option"); o.value = t.id; o.textContent = t.name; options.append(o);
    }
    $("radio-button").addEventListener("click", () => makeList("radio"));
    $("path-button").addEventListener("click", () => makeList("path"));
    $("path-target").addEventListener("keydown", (e) => { if (e.key === "Enter" && selected) makeList("path"); });
    const player = $("player");
    player.addEventListener("ended", () => { if (queue.pos >= 0) playAt(queue.pos + 1); });
    player.addEventListener("error", () => {  // a song that cannot be played is passed over
      if (queue.pos >= 0 && playingId === queue.ids[queue.pos]) playAt(queue.pos + 1);
    });
  }

  // ---------------------------------------------------------------- search
  $("search").addEventListener("input", (e) => {
    const q = e.target.value.trim().toLowerCase(), box = $("search-results"), ul = $("results");
    if (!q) { matches = null; box.hidden = true; drawBase(); return; }
    matches = tracks.filter((t) => t.name.toLowerCase().includes(q) || t.label.toLowerCase().includes(q)
                                   || t.id.toLowerCase().includes(q));
    ul.replaceChildren();
    for (const t of matches.slice(0, 200)) {
      const li = document.createElement("li");
      li.append(trackLink(t.id, t.name), labelChip(t.label));
      ul.append(li);
    }
    box.hidden = false;
    box.querySelector("h2").textContent = `Search: ${matches.length} track${matches.length === 1 ? "" : "s"}`
      + (matches.length > 200 ? " (first 200 listed)" : "");
    drawBase();
  });

  // ---------------------------------------------------------------- upload
  function setupUpload() {
    const box = $("upload"), msg = $("upload-message");
    if (!api.query) { box.hidden = true; return; }
    async function send(file) {
      msg.className = ""; msg.textContent = `embedding ${file.name} ...`;
      try {
        const result = await api.query(file);
        selected = null; neighbourIds = result.neighbours.map((n) => n.track_id);
        $("radio-button").disabled = $("path-button").disabled = true;  // lists start at library songs
        $("track-title").textContent = `Upload: ${file.name}`;
        $("track-label").textContent = "not in the library; its nearest tracks:";
        setCurrent(-1); playingId = null;
        const player = $("player"); player.src = URL.createObjectURL(file);
        neighbourList(result.neighbours, $("neighbours"));
        msg.textContent = `${file.name}: ${result.neighbours.length} nearest tracks listed`;
        drawOverlay();
      } catch (err) {
        msg.className = "error"; msg.textContent = err.message;
      }
    }
    $("upload-file").addEventListener("change", (e) => { if (e.target.files[0]) send(e.target.files[0]); });
    box.addEventListener("dragover", (e) => { e.preventDefault(); box.classList.add("dragging"); });
    box.addEventListener("dragleave", () => box.classList.remove("dragging"));
    box.addEventListener("drop", (e) => {
      e.preventDefault(); box.classList.remove("dragging");
      if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
    });
  }

  // ---------------------------------------------------------------- evaluation
  const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3));

  function drawGrid(rows, head) {
    const el = $("grid");
    if (!rows.length) { el.textContent = "no grid in the evaluation"; return; }
    const dists = [...new Set(rows.map((r) => r.distance))], scalers = [...new Set(rows.map((r) => r.scaler))];
    const accs = rows.map((r) => r.accuracy).filter((a) => a !== null);
    const lo = head.chance || 1 / 3, hi = Math.max(...accs, lo + 1e-9);
    const table = document.createElement("table"); table.className = "grid";
    const hr = table.insertRow(); hr.append(document.createElement("th"));
    for (const s of scalers) { const th = document.createElement("th"); th.textContent = s; hr.append(th); }
    for (const d of dists) {
      const tr = table.insertRow(), th = document.createElement("th"); th.textContent = d; tr.append(th);
      for (const s of scalers) {
        const r = rows.find((x) => x.distance === d && x.scaler === s), td = tr.insertCell();
        if (!r || r.accuracy === null) { td.textContent = "–"; continue; }
        const f = Math.max(0, Math.min(1, (r.accuracy - lo) / (hi - lo)));
        td.style.background = `rgb(${Math.round(255 - 197 * f)},${Math.round(255 - 144 * f)},${Math.round(255 - 39 * f)})`;
        td.style.color = f > 0.6 ? "#fff" : "#1d2330";
        td.textContent = `${fmt(r.accuracy)} [${fmt(r.ci_low)}, ${fmt(r.ci_high)}]`;
        if (d === head.best_distance && s === head.best_scaler) td.className = "best";
      }
    }
    el.replaceChildren(table);
  }

  function drawBaselines(baselines, head) {
    const el = $("baselines"); el.replaceChildren(); el.className = "bars";
    const chance = head.chance || 1 / 3;
    for (const [name, b] of Object.entries(baselines)) {
      if (b.accuracy === null || b.accuracy === undefined) continue;
      const row = document.createElement("div"); row.className = "bar-row";
      const n = document.createElement("span"); n.className = "name"; n.textContent = name;
      const track = document.createElement("div"); track.className = "bar-track";
      const fill = document.createElement("div"); fill.className = "bar-fill" + (name === "model" ? " model" : "");
      fill.style.width = `${b.accuracy * 100}%`;
      track.append(fill);
      if (b.ci_low !== null && b.ci_low !== undefined) {
        const ci = document.createElement("div"); ci.className = "bar-ci";
        ci.style.left = `${b.ci_low * 100}%`; ci.style.width = `${(b.ci_high - b.ci_low) * 100}%`;
        track.append(ci);
      }
      const c = document.createElement("div"); c.className = "bar-chance"; c.style.left = `${chance * 100}%`;
      c.title = "chance"; track.append(c);
      const v = document.createElement("span"); v.textContent = fmt(b.accuracy);
      row.append(n, track, v); el.append(row);
    }
  }

  function drawCurves(curves) {
    const el = $("curves"), NS = "http://www.w3.org/2000/svg", W = 280, H = 150, P = 30;
    el.replaceChildren();
    const names = Object.keys(curves);
    if (!names.length) { el.textContent = "no training curves (dvclive folder not found)"; return; }
    for (const name of names) {
      const pts = curves[name], xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
      const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
      const sx = (x) => P + ((x - x0) / (x1 - x0 || 1)) * (W - P - 8);
      const sy = (y) => H - 18 - ((y - y0) / (y1 - y0 || 1)) * (H - 30);
      const svg = document.createElementNS(NS, "svg");
      svg.setAttribute("width", W); svg.setAttribute("height", H);
      const line = document.createElementNS(NS, pts.length > 1 ? "polyline" : "circle");
      if (pts.length > 1) {
        line.setAttribute("points", pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "));
        line.setAttribute("fill", "none"); line.setAttribute("stroke", "#3a6fd8"); line.setAttribute("stroke-width", "1.5");
      } else { line.setAttribute("cx", sx(xs[0])); line.setAttribute("cy", sy(ys[0])); line.setAttribute("r", 3); }
      svg.append(line);
      const label = (x, y, text, anchor) => {
        const t = document.createElementNS(NS, "text");
        t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor || "start");
        t.textContent = text; svg.append(t);
      };
      label(2, 12, Number(y1.toPrecision(3))); label(2, H - 18, Number(y0.toPrecision(3)));
      label(P, H - 4, `step ${x0}`); label(W - 8, H - 4, `${x1}`, "end");
      const fig = document.createElement("figure"), cap = document.createElement("figcaption");
      cap.textContent = name; fig.append(cap, svg); el.append(fig);
    }
  }

  async function loadEvaluation() {
    try {
      const ev = await api.evaluation();
      $("headline").textContent = ev.words || "";
      drawGrid(ev.grid || [], ev.headline || {});
      drawBaselines(ev.baselines || {}, ev.headline || {});
      drawCurves(ev.curves || {});
    } catch (err) { $("headline").textContent = err.message; }
  }

  // ---------------------------------------------------------------- start
  async function start() {
    const data = await api.tracks();
    tracks = data.tracks; byId = new Map(tracks.map((t) => [t.id, t]));
    data.labels.forEach((l, i) => colour.set(l, PALETTE[i % PALETTE.length]));
    const ix = data.index;
    $("index-info").textContent = `${ix.tracks} tracks · ${ix.model || "model"} · ${ix.distance} after ${ix.scaler}`
      + ` · map: ${data.projection}` + (STATIC ? " · exported page" : "");
    const legend = $("legend");
    for (const l of data.labels) {
      const s = document.createElement("span"), dot = document.createElement("i");
      dot.style.background = colour.get(l); s.append(dot, document.createTextNode(l));
      s.title = "click to hide or show";
      s.addEventListener("click", () => { hidden.has(l) ? hidden.delete(l) : hidden.add(l); s.classList.toggle("off"); drawBase(); });
      legend.append(s);
    }
    size(); drawBase(); setupUpload(); setupLists();
    await loadEvaluation();
    window.songspace.ready = true;
  }

  // for tests and the console: where a track is drawn, and selecting one
  window.songspace = {
    ready: false,
    screenPosition: (id) => { const t = byId.get(id); return t ? [t.sx, t.sy] : null; },
    select: (id) => select(id, false),
    list: () => ({ ids: queue.ids, pos: queue.pos, playing: playingId }),
  };
  start().catch((err) => { $("index-info").textContent = `could not load the library: ${err.message}`; });
})();
