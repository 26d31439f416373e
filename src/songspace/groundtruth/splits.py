"""Splits: which side (train, val, test) each track is on, decided per group so a group never
straddles two sides: a hash of (seed, group), an annotation file's split column, or a partition
that keeps the most annotated quartets whole (`partition`)."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from songspace.ingest import UNLABELLED
from songspace.groundtruth.files import GroundTruthError, SPLITS, STREAM_PARTITION
from songspace.groundtruth import partition


def split_tracks(splits: pd.DataFrame, side: str, among=None) -> list[str]:
    """The track ids on one side (train, val or test) of a splits table, in its order; only
    those in `among` (any container: a set, a `features.Spectra`) when given."""
    if side not in SPLITS:
        raise ValueError(f"unknown split side {side!r}; choose one of: {', '.join(SPLITS)}")
    ids = splits.loc[splits["split"] == side, "track_id"]
    return [t for t in ids if among is None or t in among]


def split_position(seed: int, group: str) -> float:
    """A group's place in [0, 1): the first 8 bytes of SHA-256(seed, group) over 2**64."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(
    tracks: pd.DataFrame, seed: int, test_fraction: float, val_fraction: float,
) -> pd.DataFrame:
    """(track_id, split) for every track: test if its group's position < test_fraction, else
    val if the position within the rest < val_fraction, else train.

    Depends only on (seed, group) per track: stable when tracks are added or removed.
    """
    groups = track_groups(tracks)
    u = np.array([split_position(seed, g) for g in groups], dtype=np.float64)
    rest = (u - test_fraction) / (1.0 - test_fraction)
    split = np.where(u < test_fraction, "test", np.where(rest < val_fraction, "val", "train"))
    return pd.DataFrame({"track_id": tracks["track_id"].to_numpy(), "split": split})


def open_set_splits(tracks: pd.DataFrame, seed: int, label_fraction: float,
                    val_fraction: float) -> tuple[pd.DataFrame, list[str]]:
    """(track_id, split) with whole labels on the test side, and those test labels.

    The labels are ordered by `split_position(seed, "label" + label)`; the first
    `round(label_fraction * n_labels)` of them (at least 2, so that a test quartet can be formed;
    at most n_labels - 2, so that training keeps two) put every track of theirs on the test side.
    The other tracks (unlabelled ones included) go to val or train by their group's hash as
    `assign_splits` does: validation measures unseen tracks of training labels.
    """
    labels = sorted({str(x) for x in tracks["label"]} - {UNLABELLED})
    if len(labels) < 4:
        raise GroundTruthError(f"split.open_set needs at least 4 labels (2 for test, 2 for training); "
                               f"the library has {len(labels)}")
    order = sorted(labels, key=lambda lab: split_position(seed, f"label\x00{lab}"))
    n_test = min(max(2, int(round(label_fraction * len(labels)))), len(labels) - 2)
    test_labels = sorted(order[:n_test])
    rest = assign_splits(tracks, seed, 0.0, val_fraction)
    test = tracks["label"].astype(str).isin(test_labels).to_numpy()
    split = np.where(test, "test", rest["split"].to_numpy())
    return pd.DataFrame({"track_id": tracks["track_id"].to_numpy(), "split": split}), test_labels


def track_groups(tracks: pd.DataFrame) -> pd.Series:
    """The group of each track: its `group`, or the track itself when that is empty."""
    return tracks["group"].where(tracks["group"].astype(bool), tracks["track_id"])


def file_splits(tracks: pd.DataFrame, quartets: pd.DataFrame,
                fallback: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(track_id, split) honouring the quartet file's split column, and the groups whose
    tracks the file puts in two splits.

    A track named in a quartet takes that quartet's split (parse_quartets checked that a song
    has one); an unnamed track follows the named tracks of its group when they agree, else
    keeps its `fallback` split (the hash split).
    """
    named: dict[str, str] = {}
    for col in ("song1", "song2", "song3"):
        named.update(zip(quartets[col], quartets["split"]))
    group_of = dict(zip(tracks["track_id"], track_groups(tracks)))
    group_sides: dict[str, set[str]] = {}
    for t, side in named.items():
        group_sides.setdefault(group_of[t], set()).add(side)
    split = []
    for t, old in zip(fallback["track_id"], fallback["split"]):
        sides = group_sides.get(group_of[t], set())
        split.append(named.get(t) or (next(iter(sides)) if len(sides) == 1 else old))
    straddling = sorted(str(g) for g, sides in group_sides.items() if len(sides) > 1)
    return pd.DataFrame({"track_id": fallback["track_id"].to_numpy(), "split": split}), straddling


def partition_splits(tracks: pd.DataFrame, quartets: pd.DataFrame, hashed: pd.DataFrame,
                     seed: int, test_fraction: float, val_fraction: float) -> pd.DataFrame:
    """(track_id, split) keeping as many `quartets` within one split as partition.partition
    finds, at the requested fractions of the tracks in annotated groups.

    Groups never straddle; tracks of groups no quartet names keep their `hashed` split. The
    search starts from `hashed`, so it keeps at least the quartets the hash split keeps
    whenever the hash split's sizes lie in the partition's size window.
    """
    groups = track_groups(tracks).to_numpy()
    group_of = dict(zip(tracks["track_id"], groups))
    songs = quartets[["song1", "song2", "song3"]].to_numpy()
    touched = sorted({group_of[t] for t in songs.ravel()})
    unit = {g: i for i, g in enumerate(touched)}
    in_unit = np.array([g in unit for g in groups])
    track_unit = np.array([unit[g] for g in groups[in_unit]], dtype=np.int64)
    sizes = np.bincount(track_unit, minlength=len(touched))
    n = int(sizes.sum())
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * (n - n_test)))
    targets = np.array([n - n_test - n_val, n_val, n_test])  # SPLITS order
    start = np.zeros(len(touched), dtype=np.int64)
    start[track_unit] = [SPLITS.index(x) for x in hashed["split"].to_numpy()[in_unit]]
    edges = np.vectorize(lambda t: unit[group_of[t]], otypes=[np.int64])(songs)
    side = partition.partition(edges, sizes, targets, start,
                               np.random.default_rng([seed, STREAM_PARTITION]))
    split = hashed["split"].to_numpy().copy()
    split[in_unit] = np.array(SPLITS)[side[track_unit]]
    return pd.DataFrame({"track_id": hashed["track_id"].to_numpy(), "split": split})


def label_split_counts(tracks: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Tracks per label (rows) and split (columns train, val, test, total)."""
    joined = tracks[["track_id", "label"]].merge(splits, on="track_id", validate="one_to_one")
    counts = pd.crosstab(joined["label"], joined["split"]).reindex(columns=list(SPLITS),
                                                                   fill_value=0)
    counts["total"] = counts.sum(axis=1)
    return counts.astype(int)


def thin_labels(counts: pd.DataFrame, test_labels: list[str] | None = None) -> list[str]:
    """Labels with >= 2 tracks that got < 2 in test or < 2 in train: they cannot form a
    positive pair on that side. Reported, not repaired: moving tracks would break stability.
    With `test_labels` (an open-set split) a label is checked on its own side only."""
    has_pairs = counts["total"] >= 2
    thin = has_pairs & ((counts["test"] < 2) | (counts["train"] < 2))
    if test_labels is not None:
        on_test = counts.index.astype(str).isin(test_labels)
        thin = has_pairs & np.where(on_test, counts["test"] < 2, counts["train"] < 2)
    return [str(k) for k in counts.index[thin] if k != UNLABELLED]
