// songspace explorer: the judge view. Three songs of the library; the listener picks the one
// least like the other two (or "all alike", or skips), and the answer goes to the server's
// judgements file (POST /api/judge). Each song plays an excerpt of CLIP_SECONDS from the middle
// of the track (the index keeps one embedding per track, not per segment, so the most typical
// segment is not known here), or the whole track on demand. Needs the server: an exported page
// does not load this script and the view stays hidden.
"use strict";
(function () {
  const CLIP_SECONDS = 8;    // length of each song's excerpt, from the middle of the track
  const NAME_KEY = "songspace.annotator";   // localStorage: the annotator's name, kept between visits
  const $ = (id) => document.getElementById(id);
  const box = $("judge");
  if (!box || window.SONGSPACE_DATA) return;
  const player = $("judge-player"), nameInput = $("judge-annotator");
  let question = null, shownAt = 0, busy = false;
  let playing = null;   // {pos, whole, sequence, start}: what the judge's player is playing
  let judgedHere = 0;   // answers recorded from this page

  async function getJSON(url, options) {
    const r = await fetch(url, options);
    const body = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  }

  const annotator = () => nameInput.value.trim();

  function message(text, error) {
    const m = $("judge-message");
    m.textContent = text || ""; m.className = error ? "error" : "";
  }

  function showStats(s) {
    const share = (x) => (x.of ? `${x.agree} of ${x.of} (${Math.round(100 * x.fraction)}%)` : "none yet");
    $("judge-stats").textContent = `${s.judged} judgement${s.judged === 1 ? "" : "s"} made`
      + (s.annotator ? ` (${s.by_you} by ${s.annotator})` : "")
      + `; the model agrees with ${share(s.agreement)}; on random questions ${share(s.agreement_random)}`;
    box.dataset.judged = s.judged; box.dataset.agree = s.agreement.agree; box.dataset.of = s.agreement.of;
  }

  function button(text, title, onClick, cls) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = text; b.title = title;
    if (cls) b.className = cls;
    b.addEventListener("click", (e) => { e.currentTarget.blur(); onClick(); });  // keys stay the view's
    return b;
  }

  function render() {
    const ol = $("judge-songs");
    ol.replaceChildren();
    for (const b of ["judge-play", "judge-alike", "judge-skip"]) $(b).disabled = !question;
    if (!question) return;
    question.songs.forEach((id, pos) => {
      const li = document.createElement("li");
      li.dataset.trackId = id;
      const name = document.createElement("span");
      name.className = "name"; name.textContent = question.names[pos]; name.title = id;
      li.append(button(String(pos + 1), `this one is the odd one out (${pos + 1})`, () => answer("odd", pos), "pick"),
                name,
                button("▶", `play an excerpt (${CLIP_SECONDS} s from the middle)`, () => playSong(pos, false, false)),
                button("whole", "play the whole track", () => playSong(pos, true, false)));
      ol.append(li);
    });
  }

  // ---------------------------------------------------------------- playing
  function highlight(pos) {
    $("judge-songs").querySelectorAll("li").forEach((li, i) => li.classList.toggle("playing", i === pos));
  }

  function stop() {
    playing = null; player.pause(); highlight(-1);
  }

  function playSong(pos, whole, sequence) {
    if (!question) return;
    const main = $("player");
    if (main && !main.paused) main.pause();  // one song at a time
    playing = { pos, whole, sequence, start: 0 };
    highlight(pos);
    player.src = `audio?id=${encodeURIComponent(question.songs[pos])}`;
    player.play().catch(() => {});  // a refused autoplay leaves the buttons to start it
  }

  player.addEventListener("loadedmetadata", () => {
    if (!playing || playing.whole || !isFinite(player.duration)) return;
    playing.start = Math.max(0, player.duration / 2 - CLIP_SECONDS / 2);
    player.currentTime = playing.start;
  });

  function finished() {
    if (!playing) return;
    const { pos, sequence } = playing;
    if (sequence && pos < 2) playSong(pos + 1, false, true);
    else stop();
  }
  player.addEventListener("timeupdate", () => {
    if (playing && !playing.whole && player.currentTime >= playing.start + CLIP_SECONDS) finished();
  });
  player.addEventListener("ended", finished);
  player.addEventListener("error", finished);

  function togglePlay() {
    if (playing) stop();
    else playSong(0, false, true);
  }

  // ---------------------------------------------------------------- questions and answers
  async function next() {
    stop();
    try {
      const q = await getJSON(`api/judge/next?annotator=${encodeURIComponent(annotator())}`);
      question = q.id ? q : null;
      if (!q.id) message(q.reason, true);
      shownAt = performance.now();
      render();
      if (q.stats) showStats(q.stats);
    } catch (err) {
      question = null; render(); message(err.message, true);
    }
  }

  async function answer(verdict, pos) {
    if (!question || busy) return;
    busy = true;
    const asked = question;
    const body = { id: asked.id, verdict, annotator: annotator(),
                   seconds: Math.round((performance.now() - shownAt) / 100) / 10 };
    if (verdict === "odd") body.odd = asked.songs[pos];
    try {
      const r = await getJSON("api/judge", { method: "POST", body: JSON.stringify(body),
                                             headers: { "Content-Type": "application/json" } });
      if (verdict !== "skip") judgedHere += 1;
      showStats(r.stats);
      message(verdict === "odd" ? `recorded: ${asked.names[pos]} is the odd one out`
              : verdict === "alike" ? "recorded: all alike (kept in the log, not a quartet)" : "skipped");
    } catch (err) {
      message(err.message, true);
    }
    busy = false;
    await next();
  }

  document.addEventListener("keydown", (e) => {
    if (box.hidden || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
    if (["1", "2", "3"].includes(e.key)) answer("odd", Number(e.key) - 1);
    else if (e.key === " ") togglePlay();
    else if (e.key === "s") answer("skip");
    else if (e.key === "a") answer("alike");
    else return;
    e.preventDefault();
  });

  // ---------------------------------------------------------------- start
  $("judge-play").addEventListener("click", (e) => { e.currentTarget.blur(); togglePlay(); });
  $("judge-alike").addEventListener("click", (e) => { e.currentTarget.blur(); answer("alike"); });
  $("judge-skip").addEventListener("click", (e) => { e.currentTarget.blur(); answer("skip"); });
  try { nameInput.value = localStorage.getItem(NAME_KEY) || ""; } catch (err) { /* storage off */ }
  nameInput.addEventListener("change", async () => {
    try { localStorage.setItem(NAME_KEY, annotator()); } catch (err) { /* storage off */ }
    try { showStats(await getJSON(`api/judge/stats?annotator=${encodeURIComponent(annotator())}`)); }
    catch (err) { message(err.message, true); }
  });

  window.songspaceJudge = {
    ready: false,
    question: () => question,
    playing: () => (playing ? { ...playing, src: player.src } : null),
    answered: () => judgedHere,
  };
  getJSON("api/judge/stats").then(() => {
    box.hidden = false;
    return next();
  }).then(() => { window.songspaceJudge.ready = true; })
    .catch(() => { /* judging is off on this server: the view stays hidden */ });
})();
