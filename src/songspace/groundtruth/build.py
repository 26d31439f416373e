"""Everything together: splits, then quartets and triplets from labels or annotations, the
report, and the stage's files."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from songspace.ingest import UNLABELLED
from songspace.groundtruth.annotations import Annotations
from songspace.groundtruth.files import GroundTruthError, QUARTET_COLUMNS, TRIPLET_COLUMNS, SPLITS, SPLIT_METHODS, STREAM_TEST, STREAM_TRAIN, STREAM_VAL, write_quartets, write_report, write_splits, write_triplets
from songspace.groundtruth.halves import quartets as half_quartets
from songspace.groundtruth.labels import derive_quartets, derive_triplets, possible_draws, quartet_triplets
from songspace.groundtruth.splits import (assign_splits, file_splits, label_split_counts, open_set_splits,
                                         partition_splits, thin_labels)



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
    split_method: str = "hash", min_val_quartets: int = 0, halves: bool = False,
    open_set_labels: float | None = None,
) -> GroundTruth:
    """Splits, then quartets and triplets from labels, or from `annotations` when given, or
    with `halves` (no labels: `data.labels: none`) quartets of track halves and no triplets
    (training is self-supervised; see `groundtruth.halves`).

    Splits: the annotations' split column when they have one; else, with annotations and
    split_method "partition", the partition that keeps the most quartets; else, with
    `open_set_labels` (labels only), whole labels on the test side (`open_set_splits`: test
    quartets then come from labels training never sees); else the hash split.
    With annotations, fewer than `min_val_quartets` validation quartets are topped up with
    held-out training quartets (which then give no triplets).
    Raises GroundTruthError when no test quartet or no training triplet can be formed.
    """
    if tracks.empty:
        raise GroundTruthError("the track table is empty; run the `ingest` stage first")
    if split_method not in SPLIT_METHODS:
        raise GroundTruthError(f"split method '{split_method}' is unknown; choose one of: "
                               f"{', '.join(SPLIT_METHODS)}")
    warns: list[str] = []
    splits, method, hash_kept, test_labels = _choose_splits(
        tracks, seed, test_fraction, val_fraction, annotations, split_method, halves,
        open_set_labels, warns)
    sides = {s: tracks[splits["split"].to_numpy() == s] for s in SPLITS}
    report = _split_report(tracks, splits, sides, seed, annotations, halves, method, split_method,
                           test_fraction, val_fraction, test_labels)
    if test_labels is not None:
        report["split"].update(open_set_labels=open_set_labels, test_labels=test_labels)
    thin = report["labels_under_two_in_test_or_train"]
    if thin and annotations is None and not halves:
        warns.append(
            f"{len(thin)} label(s) have fewer than 2 tracks in test or train "
            f"({', '.join(thin[:10])}{', ...' if len(thin) > 10 else ''}); they give no "
            "positive pairs there. More tracks per label (or other groups) fix this; "
            "splits stay put by design so that adding songs never reshuffles them"
        )
    if annotations is None and halves:
        test_q, val_q, train_t = _from_halves(sides, n_test, n_val, seed, min_val_quartets, report)
    elif annotations is None:
        test_q, val_q, train_t = _from_labels(sides, n_test, n_val, n_train, seed, min_val_quartets,
                                              report, warns)
    else:
        test_q, val_q, train_t = _from_annotations(annotations, splits, hash_kept, seed,
                                                   min_val_quartets, report, warns)
    report["test_quartets"] = len(test_q)
    report["val_quartets"] = len(val_q)
    report["train_triplets"] = len(train_t)
    _check_enough(test_q, train_t, sides, annotations is not None, halves)
    cols = list(QUARTET_COLUMNS)
    return GroundTruth(splits, train_t, val_q[cols].reset_index(drop=True),
                       test_q[cols].reset_index(drop=True), report, warns)


def _choose_splits(
    tracks: pd.DataFrame, seed: int, test_fraction: float, val_fraction: float,
    annotations: Annotations | None, split_method: str, halves: bool,
    open_set_labels: float | None, warns: list[str],
) -> tuple[pd.DataFrame, str, dict | None, list[str] | None]:
    """(splits, the method used, the hash split's judgement counts when a partition replaced
    it, the open set's test labels) as `build` describes; warnings appended to `warns`."""
    splits = assign_splits(tracks, seed, test_fraction, val_fraction)
    method, hash_kept, test_labels = "hash", None, None
    if open_set_labels is not None:
        if annotations is not None or halves:
            raise GroundTruthError("split.open_set needs labels and no annotated quartets")
        method = "open_set"
        splits, test_labels = open_set_splits(tracks, seed, open_set_labels, val_fraction)
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
    return splits, method, hash_kept, test_labels


def _split_report(
    tracks: pd.DataFrame, splits: pd.DataFrame, sides: dict[str, pd.DataFrame], seed: int,
    annotations: Annotations | None, halves: bool, method: str, split_method: str,
    test_fraction: float, val_fraction: float, test_labels: list[str] | None,
) -> dict:
    """The report's account of the splits: tracks, groups and labels per side."""
    counts = label_split_counts(tracks, splits)
    return {
        "seed": seed,
        "mode": "annotations" if annotations else "halves" if halves else "labels",
        "tracks": {s: len(sides[s]) for s in SPLITS},
        "groups": {s: int(sides[s]["group"].nunique()) for s in SPLITS},
        "per_label": {str(k): {c: int(v) for c, v in row.items()} for k, row in
                      counts.iterrows()},
        "labels_under_two_in_test_or_train": thin_labels(counts, test_labels),
        "split": {"method": method, "requested_method": split_method,
                  "test_fraction": test_fraction, "val_fraction": val_fraction},
    }
def _from_halves(sides: dict[str, pd.DataFrame], n_test: int, n_val: int, seed: int,
                 min_val_quartets: int, report: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Test and validation quartets of track halves, and no triplets (no labels)."""
    test_q = half_quartets(list(sides["test"]["track_id"]), n_test, np.random.default_rng([seed, STREAM_TEST]))
    val_q = half_quartets(list(sides["val"]["track_id"]), n_val, np.random.default_rng([seed, STREAM_VAL]))
    train_t = pd.DataFrame(columns=list(TRIPLET_COLUMNS))
    report["validation"] = {"source": "halves", "quartets": len(val_q), "min_val_quartets": min_val_quartets}
    return test_q, val_q, train_t


def _from_labels(sides: dict[str, pd.DataFrame], n_test: int, n_val: int, n_train: int, seed: int,
                 min_val_quartets: int, report: dict, warns: list[str],
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Test and validation quartets and training triplets drawn from each side's labels."""
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
    return test_q, val_q, train_t


def _from_annotations(annotations: Annotations, splits: pd.DataFrame, hash_kept: dict | None,
                      seed: int, min_val_quartets: int, report: dict, warns: list[str],
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The annotated quartets of each side (straddling ones dropped), validation topped up with
    held-out training quartets, and the training quartets' triplets."""
    parts, straddling = split_quartets(annotations.quartets, splits)
    test_q, val_q, train_q = parts["test"], parts["val"], parts["train"]
    report["annotations"] = {
        "lines": annotations.rows,
        "header": annotations.header,
        "split_column": annotations.has_split,
        "distinct_quartets": len(annotations.quartets),
        "duplicates_merged": annotations.merged,
        "conflicting_pairs_of_lines": [list(c) for c in annotations.conflicts],
        "quartets": {s: len(parts[s]) for s in SPLITS},
        "dropped_straddling_splits": straddling,
        "judgements": judgement_counts(annotations.quartets, splits),
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
    return test_q, val_q, quartet_triplets(train_q)


def _check_enough(test_q: pd.DataFrame, train_t: pd.DataFrame, sides: dict[str, pd.DataFrame],
                  annotated: bool, halves: bool) -> None:
    """GroundTruthError when no test quartet, or (with labels) no training triplet, was formed."""
    if test_q.empty:
        raise GroundTruthError(
            "no test quartet can be formed: the test split needs two tracks of one label and "
            "one of another" + (" (or annotated quartets whose songs are all test tracks)"
                                if annotated else "") +
            f"; it holds {len(sides['test'])} track(s). Add music, or raise split.test_fraction"
        )
    if train_t.empty and not halves:
        raise GroundTruthError(
            "no training triplet can be formed from the train split "
            f"({len(sides['train'])} track(s)); add music or lower split.test_fraction"
        )


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
    write_splits(gt.splits, out_dir / "splits.csv")
    write_triplets(gt.train_triplets, out_dir / "train_triplets.csv")
    write_quartets(gt.val_quartets, out_dir / "val_quartets.csv")
    write_quartets(gt.test_quartets, out_dir / "test_quartets.csv")
    write_report(gt.report, reports_dir / "groundtruth.json")


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
    if r["split"].get("test_labels"):
        lines.append(f"  open set: the test side holds every track of {len(r['split']['test_labels'])} "
                     f"label(s) training never sees ({', '.join(r['split']['test_labels'])})")
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
