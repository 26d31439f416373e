"""Ground truth without labels: a track's two halves (`data.labels: none`).

With no labels and no judgements, the only thing known to be alike is a song and itself. The
model then trains self-supervised (two segments of one track are the positive pair, every other
track a negative, as in CLMR and COLA) and is judged on *halves*: each validation or test track
stands as two pseudo-tracks, its first and its second half (`half_ids`), and a quartet asks
which of three is the odd one when two of them are the halves of one track and the third is
half of another. Accuracy then measures whether a track's two halves lie closer to each other
than to other music: a measure of consistency within a song, not of similarity between songs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from songspace.groundtruth.files import QUARTET_COLUMNS

HALF_MARKS = ("@1/2", "@2/2")   # appended to a track id: its first and its second half


def in_use(data) -> bool:
    """Whether a run with these `data` params (`config.DataParams`) trains and is judged on halves:
    no labels and no judgements. With a quartet file and no labels, the judgements are the only
    ground truth: training draws its triplets from them and the test quartets are judged as
    they are."""
    return data.labels == "none" and not data.quartets


def half_ids(track_id: str) -> tuple[str, str]:
    """The ids of a track's first and second half."""
    return track_id + HALF_MARKS[0], track_id + HALF_MARKS[1]


def whole_id(half_id: str) -> str:
    """The track a half belongs to (a whole track's id unchanged)."""
    for mark in HALF_MARKS:
        if half_id.endswith(mark):
            return half_id[: -len(mark)]
    return half_id


def quartets(track_ids: list[str], n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Up to n distinct quartets (QUARTET_COLUMNS) over halves: both halves of a track A and one
    half of another track B, in random order, B's half the odd one."""
    ids = list(track_ids)
    if len(ids) < 2:
        return pd.DataFrame(columns=list(QUARTET_COLUMNS))
    n = min(n, len(ids) * (len(ids) - 1) * 2)   # (A, B, which half of B)
    seen, rows = set(), []
    for _ in range(20 * n):
        if len(rows) == n:
            break
        a, b = rng.choice(len(ids), 2, replace=False)
        h = int(rng.integers(2))
        if (a, b, h) in seen:
            continue
        seen.add((a, b, h))
        odd = half_ids(ids[b])[h]
        songs = [*half_ids(ids[a]), odd]
        songs = [songs[i] for i in rng.permutation(3)]
        rows.append((*songs, odd))
    return pd.DataFrame(rows, columns=list(QUARTET_COLUMNS))


def with_halves(spectra, track_ids: list[str]):
    """`spectra` (a `features.Spectra`) that also knows the halves of `track_ids` as tracks:
    the first half's frames and the rest (the array is shared, nothing is copied)."""
    rows = []
    for t in track_ids:
        start, n = spectra.span(t)
        first = n // 2
        rows += [(half_ids(t)[0], start, first), (half_ids(t)[1], start + first, n - first)]
    extra = pd.DataFrame(rows, columns=["track_id", "start", "frames"])
    table = pd.concat([spectra.table[["track_id", "start", "frames"]], extra], ignore_index=True)
    return type(spectra)(spectra.array, table, spectra.fe, spectra.params)
