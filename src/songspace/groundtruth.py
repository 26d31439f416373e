"""Ground truth: the train/val/test split, odd-one-out quartets and training triplets.

A quartet is three songs plus the one of them that is least like the other two (the "odd"
song), stored as (song1, song2, song3, odd). Two sources:

* labels: two songs of one label and one of another, the odd one, in shuffled order;
* annotations: human judgements in a CSV (the thesis layout: song 1, song 2, song 3, odd
  song), validated line by line.

Splits are decided per group (artist, album, or the track itself), so a group never straddles
two sides: by a hash of (seed, group), stable when songs are added; or, for annotations, by
their split column or by a partition that keeps the most quartets whole (partition.py).
Everything here is a pure function of DataFrames; `read_quartet_rows` and `write` do the I/O.
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from songspace import partition
from songspace.errors import UserError
from songspace.library import UNLABELLED, is_audio_path, normalise_relpath

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("track_id", "split")
QUARTET_COLUMNS = ("song1", "song2", "song3", "odd")
TRIPLET_COLUMNS = ("anchor", "positive", "negative")
# Separate random streams per product, so changing one count leaves the others unchanged.
STREAM_TEST, STREAM_VAL, STREAM_TRAIN, STREAM_PARTITION = 1, 2, 3, 4
SPLIT_METHODS = ("partition", "hash")
MAX_DRAW_ROUNDS = 64
MAX_LISTED_ERRORS = 20


class GroundTruthError(UserError, ValueError):
    """Annotations or splits that cannot be used; the message names the file and line."""


# ---------------------------------------------------------------------------------------------
# Splits


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


def thin_labels(counts: pd.DataFrame) -> list[str]:
    """Labels with >= 2 tracks that got < 2 in test or < 2 in train: they cannot form a
    positive pair on that side. Reported, not repaired: moving tracks would break stability."""
    has_pairs = counts["total"] >= 2
    thin = has_pairs & ((counts["test"] < 2) | (counts["train"] < 2))
    return [str(k) for k in counts.index[thin] if k != UNLABELLED]


# ---------------------------------------------------------------------------------------------
# Quartets and triplets from labels


def possible_draws(labels: np.ndarray) -> int:
    """Distinct (unordered pair of one label, odd song of another) among tracks with `labels`:
    sum over labels of C(n_l, 2) * (N - n_l)."""
    _, counts = np.unique(labels, return_counts=True)
    n = len(labels)
    return int(sum(c * (c - 1) // 2 * (n - c) for c in counts))


def draw_pairs_with_odd(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(m, 3) indices into `labels`: rows (a, b, odd), label[a] == label[b] != label[odd].

    m = min(n, possible_draws(labels)); rows are distinct as (unordered {a, b}, odd). The
    pair's label is drawn uniformly among labels with >= 2 tracks (classes weigh equally), the
    pair and the odd song uniformly within. Small pools are enumerated and subsampled.
    """
    labels = np.asarray(labels)
    possible = possible_draws(labels)
    target = min(n, possible)
    if target <= 0:
        return np.zeros((0, 3), dtype=np.int64)
    codes = np.unique(labels, return_inverse=True)[1].ravel()
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.cumsum(counts) - counts
    total = len(labels)
    if possible <= 2 * target:
        rows = _enumerate(order, counts, starts, total)
        pick = np.sort(rng.choice(len(rows), size=target, replace=False))
        rows = rows[pick]
        rows = rows[rng.permutation(target)]
        flip = rng.random(target) < 0.5
        rows[flip, :2] = rows[flip, 1::-1]
        return rows
    pair_labels = np.flatnonzero((counts >= 2) & (counts < total))
    rows = np.zeros((0, 3), dtype=np.int64)
    for _ in range(MAX_DRAW_ROUNDS):
        need = target - len(rows)
        if need <= 0:
            break
        m = 2 * need + 16
        lab = pair_labels[rng.integers(len(pair_labels), size=m)]
        c, s = counts[lab], starts[lab]
        i = rng.integers(c)
        j = rng.integers(c - 1)
        j = j + (j >= i)  # j != i
        k = rng.integers(total - c)
        k = k + c * (k >= s)  # skip the pair label's block
        new = np.stack([order[s + i], order[s + j], order[k]], axis=1)
        rows = _unique_rows(np.concatenate([rows, new]))
    return rows[:target]


def _enumerate(order: np.ndarray, counts: np.ndarray, starts: np.ndarray, total: int) -> np.ndarray:
    parts = []
    for c, s in zip(counts, starts):
        if c < 2 or c == total:
            continue
        members = order[s:s + c]
        others = np.concatenate([order[:s], order[s + c:]])
        a, b = np.triu_indices(c, k=1)
        pa = np.repeat(members[a], len(others))
        pb = np.repeat(members[b], len(others))
        po = np.tile(others, len(a))
        parts.append(np.stack([pa, pb, po], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """Rows distinct as ({a, b}, odd), keeping first occurrences in order."""
    canon = np.stack([rows[:, :2].min(axis=1), rows[:, :2].max(axis=1), rows[:, 2]], axis=1)
    _, first = np.unique(canon, axis=0, return_index=True)
    return rows[np.sort(first)]


def shuffle_quartets(ids: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """(song1, song2, song3, odd) from (a, b, odd) index rows, the three songs in random order."""
    perm = rng.permuted(np.tile(np.arange(3), (len(draws), 1)), axis=1)
    three = np.take_along_axis(draws, perm, axis=1)
    return pd.DataFrame({
        "song1": ids[three[:, 0]], "song2": ids[three[:, 1]], "song3": ids[three[:, 2]],
        "odd": ids[draws[:, 2]],
    }, columns=list(QUARTET_COLUMNS))


def derive_quartets(tracks: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Up to n distinct quartets from the tracks given (one split's): two of one label + one
    of another, which is the odd song."""
    tracks = tracks[tracks["label"] != UNLABELLED]
    draws = draw_pairs_with_odd(tracks["label"].to_numpy(), n, rng)
    return shuffle_quartets(tracks["track_id"].to_numpy(), draws, rng)


def derive_triplets(tracks: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Up to n distinct (anchor, positive, negative): anchor and positive share a label."""
    tracks = tracks[tracks["label"] != UNLABELLED]
    ids = tracks["track_id"].to_numpy()
    d = draw_pairs_with_odd(tracks["label"].to_numpy(), n, rng)
    return pd.DataFrame(
        {"anchor": ids[d[:, 0]], "positive": ids[d[:, 1]], "negative": ids[d[:, 2]]},
        columns=list(TRIPLET_COLUMNS))


# ---------------------------------------------------------------------------------------------
# Quartets from annotations


def read_quartet_rows(path: str | Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank line of a quartet CSV (comma, semicolon or tab)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise GroundTruthError(f"{path}: cannot read the quartet CSV ({err})") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    rows = []
    for cells in reader:
        cells = [c.strip() for c in cells]
        if any(cells):
            rows.append((reader.line_num, cells))
    return rows


def track_lookup(tracks: pd.DataFrame, aliases: pd.DataFrame | None = None) -> dict[str, str]:
    """Every name a quartet CSV may use for a track -> its track_id.

    Names: the track_id; its path; its path relative to the folder all tracks share (the
    library root); and alias paths of byte-identical duplicates. Track ids win over paths.
    """
    paths = [normalise_relpath(p) for p in tracks["path"]]
    lookup: dict[str, str] = {}
    root = _common_parent(paths)
    if root:
        for p, tid in zip(paths, tracks["track_id"]):
            lookup[PurePosixPath(p).relative_to(root).as_posix()] = tid
    lookup.update(zip(paths, tracks["track_id"]))
    if aliases is not None:
        for p, tid in zip(aliases["path"], aliases["track_id"]):
            lookup[normalise_relpath(p)] = tid
    lookup.update(zip(tracks["track_id"], tracks["track_id"]))
    return lookup


def _common_parent(paths: list[str]) -> str:
    parts = [PurePosixPath(p).parent.parts for p in paths]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return PurePosixPath(*common).as_posix() if common else ""


@dataclass
class Annotations:
    quartets: pd.DataFrame            # QUARTET_COLUMNS + line (+ split), one row per judgement
    header: list[str] | None = None   # the header row, if the file had one
    rows: int = 0                     # judgement lines read
    merged: int = 0                   # exact duplicates merged into an earlier line
    conflicts: list[tuple[int, int]] = field(default_factory=list)  # same three, other odd

    @property
    def has_split(self) -> bool:
        """The file says which split each judgement belongs to."""
        return "split" in self.quartets.columns


# A header cell: song1, Song 2, track_3, a, odd, odd song, odd_one_out, ... (case-insensitive)
_HEADER_CELL = re.compile(
    r"^\s*(song|track|clip|file|audio|item|a|b|c|d|x|odd|odd[ _-]?(song|track|one[ _-]?out|one))"
    r"[ _-]?\d?\s*$", re.IGNORECASE)


def parse_quartets(rows: list[tuple[int, list[str]]], lookup: dict[str, str],
                   source: str = "quartets") -> Annotations:
    """Validate quartet rows (song 1, song 2, song 3, odd song[, split]; header optional).

    The optional split column (train, val or test, any case) is the one headed `split`, or,
    without a header, a fifth column whose first value is a split name. Raises
    GroundTruthError naming each bad line: a missing column, an unknown track, the same song
    twice, an odd song that is not one of the three, an unknown split, a song in quartets of
    two splits (both lines). Exact duplicates (same three songs in any order, same odd) are
    merged; the same three with another odd song are kept both (annotators disagree) and
    listed in `conflicts`.
    """
    def resolve(name: str) -> str | None:
        return lookup.get(name) or lookup.get(normalise_relpath(name))

    header, split_col = None, None
    if rows:
        first = [c for c in rows[0][1][:4] if c]
        # A header only when it reads as one (song1, Song 2, odd, ...) and names no track;
        # any other first row is data, and an unknown name in it is reported with its line.
        if first and not any(resolve(c) for c in first) and all(_HEADER_CELL.match(c) for c in first):
            header, rows = rows[0][1], rows[1:]
            named = [i for i, c in enumerate(header) if c.lower() == "split"]
            split_col = named[0] if named else None
        elif len(rows[0][1]) > 4 and rows[0][1][4].lower() in SPLITS:
            split_col = 4
    errors, kept, seen = [], [], {}
    side_of: dict[str, tuple[str, int]] = {}  # song -> (split, first line naming it there)
    merged, conflicts = 0, []
    names = ("song 1", "song 2", "song 3", "odd song")
    for line, cells_all in rows:
        cells = (cells_all + [""] * 4)[:4]
        missing = [names[i] for i, c in enumerate(cells) if not c]
        if missing:
            errors.append(f"line {line}: missing column(s) {', '.join(missing)}; each line "
                          "needs song 1, song 2, song 3, odd song")
            continue
        ids = [resolve(c) for c in cells]
        unknown: dict[str, list[str]] = {}
        for name, cell, tid in zip(names, cells, ids):
            if tid is None:
                unknown.setdefault(cell, []).append(name)
        if unknown:
            told = []
            for cell, where in unknown.items():
                hint = _close_match(cell, lookup) if len(errors) < MAX_LISTED_ERRORS else None
                told.append(f"'{cell}' ({', '.join(where)})"
                            + (f", did you mean '{hint}'?" if hint else ""))
            errors.append(f"line {line}: unknown track {'; '.join(told)}; not in the track "
                          "table (a typo, or a file skipped at ingest: see skipped.csv)")
            continue
        songs, odd = ids[:3], ids[3]
        if len(set(songs)) < 3:
            twice = next(s for s in songs if songs.count(s) > 1)
            errors.append(f"line {line}: the same song twice ('{twice}')")
            continue
        if odd not in songs:
            errors.append(f"line {line}: odd song '{cells[3]}' is not one of the three songs")
            continue
        split = ()
        if split_col is not None:
            value = cells_all[split_col].lower() if split_col < len(cells_all) else ""
            if value not in SPLITS:
                errors.append(f"line {line}: split '{value}' is not one of "
                              f"{', '.join(SPLITS)}" if value else
                              f"line {line}: missing split (train, val or test)")
                continue
            clash = [(s, side_of[s]) for s in songs if side_of.get(s, (value,))[0] != value]
            if clash:
                song, (other, line2) = clash[0]
                errors.append(f"line {line}: song '{song}' is in a {value} quartet here and in "
                              f"a {other} quartet on line {line2}; a song belongs to one split")
                continue
            for s_ in songs:
                side_of.setdefault(s_, (value, line))
            split = (value,)
        key = frozenset(songs)
        if (key, odd) in seen:
            merged += 1
            continue
        for (k2, o2), line2 in seen.items():
            if k2 == key and o2 != odd:
                conflicts.append((line2, line))
        seen[(key, odd)] = line
        kept.append((*songs, odd, line, *split))
    if len(errors) == 1:
        raise GroundTruthError(f"{source} {errors[0]}")
    if errors:
        listed = errors[:MAX_LISTED_ERRORS]
        more = [f"... {len(errors) - len(listed)} more"] if len(errors) > len(listed) else []
        raise GroundTruthError(
            f"{source}: {len(errors)} bad lines:\n  " + "\n  ".join(listed + more))
    if not kept:
        raise GroundTruthError(f"{source}: no quartets in the file")
    split_cols = ["split"] if split_col is not None else []
    quartets = pd.DataFrame(kept, columns=[*QUARTET_COLUMNS, "line", *split_cols])
    return Annotations(quartets, header, len(rows), merged, conflicts)


def _close_match(name: str, lookup: dict[str, str]) -> str | None:
    """The known track name most like `name`: the same path with another suffix, else a close
    spelling."""
    stem = _stem(normalise_relpath(name))
    same_stem = sorted(k for k in lookup if is_audio_path(k) and _stem(k) == stem)
    if stem and same_stem:
        return same_stem[0]
    close = difflib.get_close_matches(name, list(lookup), n=1, cutoff=0.8)
    return close[0] if close else None


def _stem(path: str) -> str:
    p = PurePosixPath(path)
    return (p.parent / p.stem).as_posix() if p.name else ""


def quartet_triplets(quartets: pd.DataFrame) -> pd.DataFrame:
    """Two triplets per quartet: each non-odd song as anchor, the other as positive, the odd
    song as negative."""
    three = quartets[["song1", "song2", "song3"]].to_numpy()
    odd = quartets["odd"].to_numpy()
    keep = three != odd[:, None]                      # (n, 3), two True per row
    pair = three[keep].reshape(-1, 2)
    anchors = np.stack([pair[:, 0], pair[:, 1]], axis=1).ravel()
    positives = np.stack([pair[:, 1], pair[:, 0]], axis=1).ravel()
    return pd.DataFrame({"anchor": anchors, "positive": positives, "negative": np.repeat(odd, 2)},
                        columns=list(TRIPLET_COLUMNS))


def split_quartets(
    quartets: pd.DataFrame, splits: pd.DataFrame,
) -> tuple[dict[str, pd.DataFrame], int]:
    """Quartets per split (all three songs on that side) and the number straddling splits."""
    side = dict(zip(splits["track_id"], splits["split"]))
    sides = np.array([
        side[a] if side[a] == side[b] == side[c] else ""
        for a, b, c in zip(quartets["song1"], quartets["song2"], quartets["song3"])
    ], dtype=object)
    parts = {s: quartets[sides == s].reset_index(drop=True) for s in SPLITS}
    return parts, int((sides == "").sum())


# ---------------------------------------------------------------------------------------------
# Everything together


@dataclass
class GroundTruth:
    splits: pd.DataFrame          # SPLIT_COLUMNS
    train_triplets: pd.DataFrame  # TRIPLET_COLUMNS
    val_quartets: pd.DataFrame    # QUARTET_COLUMNS
    test_quartets: pd.DataFrame   # QUARTET_COLUMNS
    report: dict
    warnings: list[str] = field(default_factory=list)


def build(
    tracks: pd.DataFrame, seed: int, test_fraction: float, val_fraction: float,
    n_test: int, n_val: int, n_train: int, annotations: Annotations | None = None,
    split_method: str = "hash", min_val_quartets: int = 0,
) -> GroundTruth:
    """Splits, then quartets and triplets from labels, or from `annotations` when given.

    Splits: the annotations' split column when they have one; else, with annotations and
    split_method "partition", the partition that keeps the most quartets; else the hash split.
    With annotations, fewer than `min_val_quartets` validation quartets are topped up with
    held-out training quartets (which then give no triplets).
    Raises GroundTruthError when no test quartet or no training triplet can be formed.
    """
    if tracks.empty:
        raise GroundTruthError("the track table is empty; run the `ingest` stage first")
    if split_method not in SPLIT_METHODS:
        raise GroundTruthError(f"split method '{split_method}' is unknown; choose one of: "
                               f"{', '.join(SPLIT_METHODS)}")
    splits = assign_splits(tracks, seed, test_fraction, val_fraction)
    method, warns, hash_kept = "hash", [], None
    if annotations is not None and annotations.has_split:
        method = "file"
        splits, straddling_groups = file_splits(tracks, annotations.quartets, splits)
        if straddling_groups:
            warns.append(f"{len(straddling_groups)} group(s) have tracks in quartets of two "
                         f"splits ({', '.join(straddling_groups[:5])}"
                         f"{', ...' if len(straddling_groups) > 5 else ''}); kept as the file says")
    elif annotations is not None and split_method == "partition":
        method = "partition"
        hash_kept = judgement_counts(annotations.quartets, splits)
        splits = partition_splits(tracks, annotations.quartets, splits, seed, test_fraction,
                                  val_fraction)
    counts = label_split_counts(tracks, splits)
    thin = thin_labels(counts)
    sides = {s: tracks[splits["split"].to_numpy() == s] for s in SPLITS}
    report = {
        "seed": seed,
        "mode": "annotations" if annotations else "labels",
        "tracks": {s: len(sides[s]) for s in SPLITS},
        "groups": {s: int(sides[s]["group"].nunique()) for s in SPLITS},
        "per_label": {str(k): {c: int(v) for c, v in row.items()} for k, row in
                      counts.iterrows()},
        "labels_under_two_in_test_or_train": thin,
        "split": {"method": method, "requested_method": split_method,
                  "test_fraction": test_fraction, "val_fraction": val_fraction},
    }
    if thin and annotations is None:
        warns.append(
            f"{len(thin)} label(s) have fewer than 2 tracks in test or train "
            f"({', '.join(thin[:10])}{', ...' if len(thin) > 10 else ''}); they give no "
            "positive pairs there. More tracks per label (or other groups) fix this; "
            "splits stay put by design so that adding songs never reshuffles them"
        )
    if annotations is None:
        test_q = derive_quartets(sides["test"], n_test, np.random.default_rng([seed, STREAM_TEST]))
        val_q = derive_quartets(sides["val"], n_val, np.random.default_rng([seed, STREAM_VAL]))
        train_t = derive_triplets(sides["train"], n_train,
                                  np.random.default_rng([seed, STREAM_TRAIN]))
        report["requested"] = {"test_quartets": n_test, "val_quartets": n_val,
                               "train_triplets": n_train}
        report["possible"] = {
            s: possible_draws(sides[s].loc[sides[s]["label"] != UNLABELLED, "label"].to_numpy())
            for s in SPLITS
        }
        for name, got, want in (("test quartets", len(test_q), n_test),
                                ("val quartets", len(val_q), n_val),
                                ("train triplets", len(train_t), n_train)):
            if got < want:
                warns.append(f"{name}: {got} of the {want} asked for (all the distinct ones "
                             "the split's labels allow)")
        report["validation"] = {"source": "labels", "quartets": len(val_q),
                                "min_val_quartets": min_val_quartets}
    else:
        parts, straddling = split_quartets(annotations.quartets, splits)
        test_q, val_q, train_q = parts["test"], parts["val"], parts["train"]
        judgements = judgement_counts(annotations.quartets, splits)
        report["annotations"] = {
            "lines": annotations.rows,
            "header": annotations.header,
            "split_column": annotations.has_split,
            "distinct_quartets": len(annotations.quartets),
            "duplicates_merged": annotations.merged,
            "conflicting_pairs_of_lines": [list(c) for c in annotations.conflicts],
            "quartets": {s: len(parts[s]) for s in SPLITS},
            "dropped_straddling_splits": straddling,
            "judgements": judgements,
        }
        if hash_kept is not None:
            report["split"]["hash_split_judgements"] = hash_kept
        if straddling:
            warns.append(f"{straddling} of {len(annotations.quartets)} annotated quartets "
                         "straddle the split (songs on different sides) and were dropped")
        val_q, train_q, report["validation"] = top_up_validation(
            val_q, train_q, min_val_quartets, np.random.default_rng([seed, STREAM_VAL]))
        if report["validation"]["held_out_training_quartets"]:
            v = report["validation"]
            warns.append(
                f"validation: the val split holds {v['annotated_val_quartets']} annotated "
                f"quartet(s), under groundtruth.min_val_quartets ({min_val_quartets}); "
                f"{v['held_out_training_quartets']} training quartet(s) are held out for "
                "validation (their songs are training tracks: early stopping then measures "
                "unseen judgements, not unseen songs)")
        train_t = quartet_triplets(train_q)
    report["test_quartets"] = len(test_q)
    report["val_quartets"] = len(val_q)
    report["train_triplets"] = len(train_t)
    if test_q.empty:
        raise GroundTruthError(
            "no test quartet can be formed: the test split needs two tracks of one label and "
            "one of another" + (" (or annotated quartets whose songs are all test tracks)"
                                if annotations else "") +
            f"; it holds {len(sides['test'])} track(s). Add music, or raise split.test_fraction"
        )
    if train_t.empty:
        raise GroundTruthError(
            "no training triplet can be formed from the train split "
            f"({len(sides['train'])} track(s)); add music or lower split.test_fraction"
        )
    cols = list(QUARTET_COLUMNS)
    return GroundTruth(splits, train_t, val_q[cols].reset_index(drop=True),
                       test_q[cols].reset_index(drop=True), report, warns)


def judgement_counts(quartets: pd.DataFrame, splits: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per split: quartets kept (all three songs there) and dropped (some song there, another
    elsewhere; a dropped quartet counts in each split it touches); "all" sums each once."""
    side = dict(zip(splits["track_id"], splits["split"]))
    sides = np.array([[side[t] for t in row]
                      for row in quartets[["song1", "song2", "song3"]].to_numpy()], dtype=object)
    whole = (sides == sides[:, :1]).all(axis=1)
    out = {}
    for s in SPLITS:
        touches = (sides == s).any(axis=1)
        out[s] = {"kept": int((touches & whole).sum()), "dropped": int((touches & ~whole).sum())}
    out["all"] = {"kept": int(whole.sum()), "dropped": int((~whole).sum())}
    return out


def top_up_validation(
    val_q: pd.DataFrame, train_q: pd.DataFrame, min_val: int, rng: np.random.Generator,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(val quartets, train quartets, report): when `val_q` has fewer than `min_val` rows,
    a seeded draw of training quartets (at most half of them) moves to validation."""
    take = min(max(0, min_val - len(val_q)), len(train_q) // 2)
    pick = np.zeros(len(train_q), dtype=bool)
    pick[rng.choice(len(train_q), size=take, replace=False)] = True
    report = {
        "source": "annotations" + (" + held-out training quartets" if take else ""),
        "quartets": len(val_q) + take, "annotated_val_quartets": len(val_q),
        "held_out_training_quartets": take, "min_val_quartets": min_val,
    }
    val = pd.concat([val_q, train_q[pick]], ignore_index=True)
    return val, train_q[~pick].reset_index(drop=True), report


def write(gt: GroundTruth, out_dir: str | Path, reports_dir: str | Path) -> None:
    """splits.csv, train_triplets.csv, val_quartets.csv, test_quartets.csv; groundtruth.json."""
    out_dir, reports_dir = Path(out_dir), Path(reports_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports_dir.mkdir(parents=True, exist_ok=True)
    gt.splits.to_csv(out_dir / "splits.csv", index=False)
    gt.train_triplets.to_csv(out_dir / "train_triplets.csv", index=False)
    gt.val_quartets.to_csv(out_dir / "val_quartets.csv", index=False)
    gt.test_quartets.to_csv(out_dir / "test_quartets.csv", index=False)
    with (reports_dir / "groundtruth.json").open("w") as f:
        json.dump(gt.report, f, indent=2)
        f.write("\n")


def summary(gt: GroundTruth) -> str:
    """A readable account of the ground truth, for the terminal."""
    r = gt.report
    t, g = r["tracks"], r["groups"]
    lines = [
        f"ground truth from {r['mode']} (seed {r['seed']}): "
        + ", ".join(f"{s} {t[s]} tracks / {g[s]} groups" for s in SPLITS),
        f"  test quartets {r['test_quartets']}, val quartets {r['val_quartets']}, "
        f"train triplets {r['train_triplets']}",
    ]
    if "annotations" in r:
        a = r["annotations"]
        lines.append(
            f"  annotations: {a['lines']} line(s), {a['distinct_quartets']} distinct "
            f"({a['duplicates_merged']} duplicate(s) merged, "
            f"{len(a['conflicting_pairs_of_lines'])} conflicting pair(s) kept)"
        )
        lines += judgement_lines(r)
    v = r.get("validation")
    if v and v.get("held_out_training_quartets"):
        lines.append(f"  validation: {v['quartets']} quartets = {v['annotated_val_quartets']} "
                     f"annotated + {v['held_out_training_quartets']} held-out training "
                     f"quartets (min_val_quartets {v['min_val_quartets']})")
    width = max((len(k) for k in r["per_label"]), default=5)
    lines.append(f"  {'label':<{width}}  train  val  test")
    for label, c in r["per_label"].items():
        lines.append(f"  {label:<{width}}  {c['train']:>5}  {c['val']:>3}  {c['test']:>4}")
    return "\n".join(lines)


def judgement_lines(report: dict) -> list[str]:
    """Kept and dropped annotated quartets per split, from a groundtruth.json report."""
    a, sp = report.get("annotations"), report.get("split", {})
    if not a or "judgements" not in a:
        return []
    how = {"file": "the file's split column", "partition": "partition keeping quartets",
           "hash": "hash of (seed, group)"}.get(sp.get("method"), sp.get("method", "?"))
    j = a["judgements"]
    out = [f"  split: {how}; quartets kept / dropped: "
           + ", ".join(f"{s} {j[s]['kept']} / {j[s]['dropped']}" for s in SPLITS)
           + f"; all {j['all']['kept']} / {j['all']['dropped']}"]
    h = sp.get("hash_split_judgements")
    if h:
        out.append("  (the hash split would keep "
                   + ", ".join(f"{s} {h[s]['kept']}" for s in SPLITS)
                   + f"; all {h['all']['kept']} / {h['all']['dropped']})")
    return out
