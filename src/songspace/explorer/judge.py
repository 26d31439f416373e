"""The judge view's logic: which three songs to ask, the model's own answer, the tally.

A question is three songs of one split (train, val or test, as the ground truth put them), so
a judgement lands where its songs already are and never joins two sides. It is drawn from
`CANDIDATES` random three-song draws: with probability `uncertain_share` (params.yaml
`serve.judge_uncertain_share`) the one the model is least sure of (the smallest gap between
its closest and second-closest pair distance), otherwise the first draw, so that the model's
agreement on the `random` questions stays an unbiased estimate of its agreement with the
listener. Now and then (`REPEAT_SHARE`) a quartet another annotator answered is asked again,
which is what measures the listeners' agreement with each other. No question shares a pair of
songs with the one asked just before it (per annotator).

The model's answer to a quartet is the song farthest from the other two: the one outside the
pair closest together, under the index's own distance and scaler.
"""
from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from songspace import distances, playlists, tags
from songspace.explorer.judgements import JudgementStore
from songspace.groundtruth import SPLITS, assign_splits, read_splits

CANDIDATES = 256          # random draws per question; the least sure of them is the uncertain one
REPEAT_SHARE = 0.1        # questions that repeat a quartet another annotator answered
MAX_PENDING = 10_000      # questions asked and not yet answered, kept to check the answers
MAX_ANNOTATOR_CHARS = 40
MAX_SECONDS = 86_400.0    # listening time of one judgement, seconds
PAIRS = ((0, 1), (0, 2), (1, 2))   # pair p of a quartet's three songs; ODD_OF[p] is outside it
ODD_OF = np.array([2, 1, 0])
VERDICTS = ("odd", "alike", "skip")


class JudgeError(ValueError):
    """A question or answer the judge refuses; the message says why (HTTP 400)."""


class UnknownQuestion(JudgeError):
    """An answer to a question this server did not ask, or answered already (HTTP 404)."""


def track_splits(track_ids: list[str], splits_csv: str | Path | None, seed: int,
                 test_fraction: float, val_fraction: float) -> tuple[dict[str, str], str]:
    """({track_id: split}, where it came from) for the index's tracks.

    From splits_csv (the groundtruth stage's) when it exists: tracks it does not list (added
    later with `songspace add`) have no split and are not asked. Without one, each track's
    split is the stable hash of (seed, track) with params.yaml's fractions: the split the
    groundtruth stage draws for `data.groups: none`.
    """
    if splits_csv is not None and Path(splits_csv).is_file():
        table = read_splits(splits_csv)
        known = dict(zip(table["track_id"], table["split"]))
        return {t: known[t] for t in track_ids if known.get(t) in SPLITS}, str(splits_csv)
    tracks = pd.DataFrame({"track_id": track_ids, "group": ""})
    table = assign_splits(tracks, seed, test_fraction, val_fraction)
    return dict(zip(table["track_id"], table["split"])), "hash of (seed, track)"


def pair_distances(space: playlists.Space, rows: np.ndarray) -> np.ndarray:
    """Distances (m, 3) of each quartet's pairs `PAIRS`, for rows (m, 3) of the space."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    v = space.vectors
    return np.stack([distances.rowwise(space.distance, v[rows[:, a]], v[rows[:, b]], **space.ctx)
                     for a, b in PAIRS], axis=1) if len(rows) else np.zeros((0, 3))


def model_odd(d: np.ndarray) -> np.ndarray:
    """The odd song's position (m,) in 0..2: the one outside each quartet's closest pair."""
    return ODD_OF[np.argmin(d, axis=1)]


def certainty_gap(d: np.ndarray) -> np.ndarray:
    """Second-closest minus closest pair distance (m,): small when the model hesitates."""
    s = np.sort(d, axis=1)
    return s[:, 1] - s[:, 0]


def clean_annotator(text: str | None) -> str:
    """An annotator name as stored: stripped, at most `MAX_ANNOTATOR_CHARS`, printable."""
    name = " ".join((text or "").split())
    if len(name) > MAX_ANNOTATOR_CHARS or not name.isprintable():
        raise JudgeError(f"annotator {name[:MAX_ANNOTATOR_CHARS]!r}...: a name of at most "
                         f"{MAX_ANNOTATOR_CHARS} printable characters")
    return name


def _text(table: pd.DataFrame, column: str) -> list[str]:
    """A track table's column as text ('' where absent or empty)."""
    if column not in table:
        return [""] * len(table)
    return ["" if pd.isna(v) else str(v) for v in table[column]]


def _pairs(songs) -> set[frozenset]:
    return {frozenset((songs[a], songs[b])) for a, b in PAIRS}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Judge:
    """Questions and answers over one space and one judgements file (thread-safe)."""

    def __init__(self, space: playlists.Space, splits: dict[str, str], store: JudgementStore,
                 uncertain_share: float, seed: int = 0, splits_source: str = ""):
        self.space, self.store, self.share = space, store, uncertain_share
        self.split_of = {t: splits[t] for t in space.ids if t in splits}
        self.splits_source = splits_source
        self.sides = {s: np.array([space.row_of[t] for t, v in self.split_of.items() if v == s])
                      for s in SPLITS}
        self.sides = {s: rows for s, rows in self.sides.items() if len(rows) >= 3}
        table = space.tracks
        self.names = {t: tags.display_name(title, artist, Path(p).name if p else t) for t, p, title, artist
                      in zip(space.ids, *(_text(table, c) for c in ("path", "title", "artist")))}
        self.rng = np.random.default_rng([seed, 23])
        self.pending: OrderedDict[str, dict] = OrderedDict()
        self.last_pairs: dict[str, set[frozenset]] = {}
        self.lock = threading.Lock()

    # ------------------------------------------------------------ questions

    def _draws(self, n: int) -> np.ndarray:
        """n random three-song rows (n, 3), each within one split (weighted by its tracks)."""
        names = list(self.sides)
        sizes = np.array([len(self.sides[s]) for s in names], dtype=np.float64)
        which = self.rng.choice(len(names), size=n, p=sizes / sizes.sum())
        return np.array([self.sides[names[w]][self.rng.choice(len(self.sides[names[w]]), 3, replace=False)]
                         for w in which])

    def _repeat(self, annotator: str, judged: list[dict], avoid: set[frozenset]) -> list[str] | None:
        """A quartet another annotator answered and this one did not (none: None)."""
        mine = {frozenset((r["song1"], r["song2"], r["song3"])) for r in judged if r["annotator"] == annotator}
        options = []
        for r in judged:
            songs = [r["song1"], r["song2"], r["song3"]]
            key = frozenset(songs)
            if (r["annotator"] != annotator and key not in mine and not (_pairs(songs) & avoid)
                    and all(s in self.split_of for s in songs)
                    and len({self.split_of[s] for s in songs}) == 1):
                options.append(songs)
        if not options:
            return None
        songs = options[self.rng.integers(len(options))]
        return [songs[i] for i in self.rng.permutation(3)]

    def ask(self, annotator: str) -> dict:
        """The next question for annotator: {id, songs (3 track ids), split, chosen_by, ...}, or
        {id: None, reason} when no split holds three songs. Logged as an `asked` event."""
        annotator = clean_annotator(annotator)
        if not self.sides:
            return {"id": None, "reason": "no split holds three songs of the index "
                                          f"(splits from {self.splits_source or 'nowhere'})"}
        judged = self.store.read()
        with self.lock:
            avoid = self.last_pairs.get(annotator, set())
            songs = self._repeat(annotator, judged, avoid) if self.rng.random() < REPEAT_SHARE else None
            chosen_by = "repeat"
            if songs is None:
                rows = self._draws(CANDIDATES)
                ids = self.space.ids
                ok = np.array([not (_pairs([ids[r] for r in row]) & avoid) for row in rows])
                rows = rows[ok] if ok.any() else rows  # a library of three songs repeats them
                uncertain = self.rng.random() < self.share
                pick = int(np.argmin(certainty_gap(pair_distances(self.space, rows)))) if uncertain else 0
                songs, chosen_by = [ids[r] for r in rows[pick]], "uncertain" if uncertain else "random"
            d = pair_distances(self.space, [[self.space.row_of[s] for s in songs]])
            question = {"id": uuid.uuid4().hex, "songs": songs, "split": self.split_of[songs[0]],
                        "chosen_by": chosen_by, "annotator": annotator,
                        "gap": round(float(certainty_gap(d)[0]), 6),
                        "model_odd": songs[int(model_odd(d)[0])]}
            self.last_pairs[annotator] = _pairs(songs)
            self.pending[question["id"]] = question
            while len(self.pending) > MAX_PENDING:
                self.pending.popitem(last=False)
        self.store.log_event({"event": "asked", "at": _now(), **question})
        return {**question, "names": [self.names[t] for t in question["songs"]],
                "stats": self.stats(annotator, judged)}

    # ------------------------------------------------------------ answers

    def answer(self, body: dict) -> dict:
        """Record an answer {id, verdict: odd|alike|skip, odd (a track id, for odd), annotator,
        seconds}: a quartet row in the CSV for `odd`, a log event for every verdict."""
        if not isinstance(body, dict):
            raise JudgeError("the answer must be a JSON object")
        verdict = body.get("verdict", "odd")
        if verdict not in VERDICTS:
            raise JudgeError(f"verdict {verdict!r}: one of {', '.join(VERDICTS)}")
        annotator = clean_annotator(body.get("annotator"))
        seconds = body.get("seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not 0 <= seconds <= MAX_SECONDS):
            raise JudgeError(f"seconds {seconds!r}: a number of seconds between 0 and {MAX_SECONDS:g}")
        with self.lock:
            question = self.pending.get(str(body.get("id")))
            if question is None:
                raise UnknownQuestion(f"question {body.get('id')!r} was not asked here or is answered "
                                      "already (the server restarted?); ask for the next one")
            odd = body.get("odd")
            if verdict == "odd" and odd not in question["songs"]:
                raise JudgeError(f"odd {odd!r} is not one of the question's three songs")
            del self.pending[question["id"]]
        row = {"song1": question["songs"][0], "song2": question["songs"][1], "song3": question["songs"][2],
               "odd": odd if verdict == "odd" else None, "split": question["split"], "annotator": annotator,
               "judged_at": _now(), "chosen_by": question["chosen_by"],
               "seconds": None if seconds is None else round(float(seconds), 1)}
        if verdict == "odd":
            self.store.append(row)
        self.store.log_event({"event": verdict, "id": question["id"], **row})
        return {"recorded": verdict, "stats": self.stats(annotator)}

    # ------------------------------------------------------------ the tally

    def stats(self, annotator: str = "", judged: list[dict] | None = None) -> dict:
        """Judgements made (all, this annotator's) and the model's agreement with them: on all
        judged quartets and on the `random` ones alone (the unbiased estimate)."""
        judged = self.store.read() if judged is None else judged
        rows, odd, how = [], [], []
        for r in judged:
            songs = [r["song1"], r["song2"], r["song3"]]
            if all(s in self.space.row_of for s in songs) and r["odd"] in songs:
                rows.append([self.space.row_of[s] for s in songs])
                odd.append(songs.index(r["odd"]))
                how.append(r["chosen_by"])
        agree = model_odd(pair_distances(self.space, rows)) == np.array(odd, dtype=np.int64) \
            if rows else np.zeros(0, dtype=bool)
        random = np.array([h == "random" for h in how], dtype=bool)

        def share(mask) -> dict:
            n = int(mask.sum())
            return {"agree": int(agree[mask].sum()), "of": n,
                    "fraction": round(float(agree[mask].mean()), 4) if n else None}
        return {"judged": len(judged), "by_you": sum(r["annotator"] == annotator for r in judged),
                "annotator": annotator, "agreement": share(np.ones(len(agree), dtype=bool)),
                "agreement_random": share(random)}


def open_judge(explorer, judgements: str | Path, splits_csv: str | Path | None, uncertain_share: float,
               seed: int, test_fraction: float, val_fraction: float) -> Judge:
    """A `Judge` over an opened `Explorer`'s space, its answers going to the file judgements."""
    space = explorer.space()
    splits, source = track_splits(space.ids, splits_csv, seed, test_fraction, val_fraction)
    return Judge(space, splits, JudgementStore(judgements), uncertain_share, seed, source)
