"""Splits, quartets and triplets: each checked by a plain loop over the rows."""
from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from songspace import groundtruth as gt
from songspace.groundtruth import GroundTruthError

ROOT = Path(__file__).resolve().parents[1]


def make_tracks(per_label: dict[str, int], groups_of: int = 1, prefix: str = "") -> pd.DataFrame:
    """A track table: per_label[label] tracks each; `groups_of` consecutive tracks share a group."""
    rows = []
    for label, n in per_label.items():
        for i in range(n):
            tid = f"{prefix}{label}/{i:03d}.wav"
            rows.append({"track_id": tid, "path": f"music/{tid}", "label": label,
                         "group": f"{label}-g{i // groups_of}" if groups_of > 1 else tid})
    return pd.DataFrame(rows)


LABELS6 = {k: 20 for k in ("bach", "palestrina", "monteverdi", "reel", "jig", "hornpipe")}


# ---------------------------------------------------------------------------------------------
# Splits


def test_splits_match_a_per_track_loop():
    tracks = make_tracks(LABELS6, groups_of=3)
    splits = gt.assign_splits(tracks, seed=42, test_fraction=0.3, val_fraction=0.15)
    assert list(splits.columns) == list(gt.SPLIT_COLUMNS)
    for tid, group, side in zip(tracks["track_id"], tracks["group"], splits["split"]):
        u = gt.split_position(42, group)
        assert 0.0 <= u < 1.0
        expected = "test" if u < 0.3 else ("val" if (u - 0.3) / 0.7 < 0.15 else "train")
        assert side == expected, tid


def test_no_group_straddles_and_fractions_hold():
    tracks = make_tracks({"a": 3000, "b": 3000}, groups_of=2)
    splits = gt.assign_splits(tracks, seed=1, test_fraction=0.3, val_fraction=0.15)
    per_group = splits.groupby(tracks["group"])["split"].nunique()
    assert per_group.max() == 1
    share = splits["split"].value_counts(normalize=True)
    assert share["test"] == pytest.approx(0.3, abs=0.03)
    assert share["val"] == pytest.approx(0.7 * 0.15, abs=0.03)


def test_adding_a_track_moves_no_existing_one():
    tracks = make_tracks(LABELS6)
    before = gt.assign_splits(tracks, 42, 0.3, 0.15)
    grown = pd.concat([tracks, make_tracks({"jig": 1}, prefix="new/")], ignore_index=True)
    after = gt.assign_splits(grown, 42, 0.3, 0.15)
    assert len(after) == len(before) + 1
    assert after.iloc[:-1].equals(before)
    shuffled = grown.sample(frac=1.0, random_state=0)  # row order does not matter either
    again = gt.assign_splits(shuffled, 42, 0.3, 0.15).set_index("track_id")["split"]
    assert again.loc[before["track_id"]].tolist() == before["split"].tolist()
    other_seed = gt.assign_splits(tracks, 43, 0.3, 0.15)
    assert not other_seed["split"].equals(before["split"])


def test_every_label_reaches_test_and_train_and_counts_are_right():
    tracks = make_tracks(LABELS6)
    splits = gt.assign_splits(tracks, 42, 0.3, 0.15)
    counts = gt.label_split_counts(tracks, splits)
    for label in LABELS6:
        sides = splits["split"][tracks["label"] == label].tolist()
        assert [counts.loc[label, s] for s in gt.SPLITS] == [sides.count(s) for s in gt.SPLITS]
        assert counts.loc[label, "test"] >= 2 and counts.loc[label, "train"] >= 2
    assert gt.thin_labels(counts) == []
    thin = pd.DataFrame({"train": [5, 1, 1, 3], "val": [0, 0, 0, 0], "test": [1, 4, 0, 2]},
                        index=["a", "b", "solo", "ok"])
    thin["total"] = thin.sum(axis=1)
    assert gt.thin_labels(thin) == ["a", "b"]  # solo has one track: nothing to pair anyway


# ---------------------------------------------------------------------------------------------
# Quartets and triplets from labels


def brute_force_draws(labels) -> set:
    out = set()
    for a, b, o in itertools.product(range(len(labels)), repeat=3):
        if a < b and labels[a] == labels[b] != labels[o]:
            out.add((a, b, o))
    return out


@pytest.mark.parametrize("labels", [
    list("aabbbc"), list("aaaa"), list("abc"), list("aab"), list("aabbccddd") + ["e"] * 5,
])
def test_possible_draws_counts_what_a_loop_finds(labels):
    assert gt.possible_draws(np.array(labels)) == len(brute_force_draws(labels))


@pytest.mark.parametrize("n", [5, 40, 10_000])
def test_draws_are_valid_distinct_and_as_many_as_possible(n):
    labels = np.array(list("aaabbbbccd"))
    possible = brute_force_draws(labels)
    rows = gt.draw_pairs_with_odd(labels, n, np.random.default_rng(0))
    assert len(rows) == min(n, len(possible))
    canon = set()
    for a, b, o in rows:
        assert a != b and labels[a] == labels[b] != labels[o]
        canon.add((min(a, b), max(a, b), o))
    assert len(canon) == len(rows) and canon <= possible
    again = gt.draw_pairs_with_odd(labels, n, np.random.default_rng(0))
    assert np.array_equal(rows, again)


def test_sampled_draws_on_a_big_pool_are_valid_and_cover_labels():
    labels = np.repeat(np.array(["a", "b", "c", "solo"]), [300, 200, 100, 1])
    rows = gt.draw_pairs_with_odd(labels, 3000, np.random.default_rng(1))
    assert len(rows) == 3000
    assert np.all(rows[:, 0] != rows[:, 1])
    assert np.all(labels[rows[:, 0]] == labels[rows[:, 1]])
    assert np.all(labels[rows[:, 2]] != labels[rows[:, 0]])
    canon = {(min(a, b), max(a, b), o) for a, b, o in rows}
    assert len(canon) == 3000
    pair_labels = pd.Series(labels[rows[:, 0]]).value_counts(normalize=True)
    assert "solo" not in pair_labels  # one track: never a pair ...
    assert (labels[rows[:, 2]] == "solo").any()  # ... but it can be the odd one
    for label in "abc":  # pair labels drawn uniformly
        assert pair_labels[label] == pytest.approx(1 / 3, abs=0.05)


def test_quartets_hide_the_odd_song_among_three():
    tracks = make_tracks({"x": 8, "y": 8, "z": 8})
    q = gt.derive_quartets(tracks, 300, np.random.default_rng(0))
    assert list(q.columns) == list(gt.QUARTET_COLUMNS) and len(q) == 300
    label = dict(zip(tracks["track_id"], tracks["label"]))
    positions = []
    for s1, s2, s3, odd in q.itertuples(index=False):
        three = [s1, s2, s3]
        assert len(set(three)) == 3 and odd in three
        others = [label[s] for s in three if s != odd]
        assert others[0] == others[1] != label[odd]
        positions.append(three.index(odd))
    assert min(np.bincount(positions, minlength=3)) > 60  # shuffled, not always last
    t = gt.derive_triplets(tracks, 300, np.random.default_rng(0))
    for a, p, n in t.itertuples(index=False):
        assert a != p and label[a] == label[p] != label[n]


def test_build_from_labels_keeps_each_product_on_its_side():
    tracks = make_tracks(LABELS6, groups_of=2)
    g = gt.build(tracks, 42, 0.3, 0.15, n_test=300, n_val=100, n_train=500)
    side = dict(zip(g.splits["track_id"], g.splits["split"]))
    for name, frame, want in (("test", g.test_quartets, 300), ("val", g.val_quartets, 100)):
        assert len(frame) == want and not frame.duplicated().any()
        assert {side[t] for t in frame.to_numpy().ravel()} == {name}
    assert len(g.train_triplets) == 500
    assert {side[t] for t in g.train_triplets.to_numpy().ravel()} == {"train"}
    r = g.report
    assert r["mode"] == "labels" and r["test_quartets"] == 300 and r["train_triplets"] == 500
    assert sum(r["tracks"].values()) == len(tracks)
    assert r["per_label"]["jig"]["total"] == 20
    again = gt.build(tracks, 42, 0.3, 0.15, n_test=300, n_val=100, n_train=500)
    assert again.test_quartets.equals(g.test_quartets)
    assert "test" in gt.summary(g) and "jig" in gt.summary(g)


def test_an_open_set_split_puts_whole_labels_on_the_test_side():
    labels10 = {f"game{i}": 8 + i for i in range(10)}
    tracks = make_tracks(labels10, groups_of=2)
    g = gt.build(tracks, 42, 0.3, 0.15, n_test=300, n_val=100, n_train=500, open_set_labels=0.3)
    label_of = dict(zip(tracks["track_id"], tracks["label"]))
    side = dict(zip(g.splits["track_id"], g.splits["split"]))
    test_labels = sorted({label_of[t] for t, s in side.items() if s == "test"})
    # a plain loop over the labels: the 3 of 10 with the lowest seeded hash hold every test track
    by_hash = sorted(labels10, key=lambda lab: gt.split_position(42, f"label\x00{lab}"))
    assert test_labels == sorted(by_hash[:3]) == g.report["split"]["test_labels"]
    for t, lab in label_of.items():
        assert (side[t] == "test") == (lab in test_labels)
    seen = {label_of[t] for t in g.train_triplets.to_numpy().ravel()}
    assert seen and not seen & set(test_labels)
    assert {label_of[t] for t in g.test_quartets.to_numpy().ravel()} <= set(test_labels)
    assert {label_of[t] for t in g.val_quartets.to_numpy().ravel()} <= seen
    assert g.report["split"]["method"] == "open_set" and g.report["labels_under_two_in_test_or_train"] == []
    assert f"open set: the test side holds every track of 3 label(s) training never sees ({', '.join(test_labels)})" \
        in gt.summary(g)
    assert not any("fewer than 2 tracks" in w for w in g.warnings)
    again = gt.build(tracks, 42, 0.3, 0.15, n_test=300, n_val=100, n_train=500, open_set_labels=0.3)
    assert again.splits.equals(g.splits) and again.test_quartets.equals(g.test_quartets)


def test_an_open_set_split_needs_four_labels_and_keeps_two_on_each_side():
    with pytest.raises(GroundTruthError, match="at least 4 labels"):
        gt.build(make_tracks({"a": 5, "b": 5, "c": 5}), 42, 0.3, 0.15, 10, 10, 10, open_set_labels=0.3)
    g = gt.build(make_tracks({k: 6 for k in "abcd"}), 42, 0.3, 0.15, 10, 10, 10, open_set_labels=0.9)
    assert len(g.report["split"]["test_labels"]) == 2


def test_too_few_tracks_for_a_test_quartet_is_an_error():
    tracks = make_tracks({"a": 2, "b": 1})
    with pytest.raises(GroundTruthError, match="no test quartet can be formed"):
        gt.build(tracks, 42, 0.3, 0.15, 10, 10, 10)


# ---------------------------------------------------------------------------------------------
# Quartets from annotations (the thesis layout: song 1, song 2, song 3, odd song)

ANN_TRACKS = make_tracks({"p": 12, "q": 12, "r": 12})


def test_split_tracks_lists_one_side_in_table_order_optionally_among_some():
    splits = pd.DataFrame({"track_id": ["c", "a", "b", "d"], "split": ["train", "test", "train", "val"]})
    assert gt.split_tracks(splits, "train") == ["c", "b"]
    assert gt.split_tracks(splits, "train", among={"b", "a"}) == ["b"]
    assert gt.split_tracks(splits, "test", among=set()) == []
    with pytest.raises(ValueError, match="unknown split side 'dev'; choose one of: train, val, test"):
        gt.split_tracks(splits, "dev")


def thesis_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def parse(path: Path, tracks=ANN_TRACKS, aliases=None) -> gt.Annotations:
    return gt.parse_quartets(gt.read_quartet_rows(path), gt.track_lookup(tracks, aliases),
                             source=path.name)


def test_thesis_quartets_give_triplets_and_test_quartets(tmp_path):
    splits = gt.assign_splits(ANN_TRACKS, 42, 0.3, 0.15)
    by_side = {s: gt.split_tracks(splits, s) for s in gt.SPLITS}
    rng = np.random.default_rng(3)
    lines = ["song 1,song 2,song 3,odd song"]
    # some quartets wholly inside each split, and some across splits
    for side in ("test", "test", "train", "train", "train", "val"):
        a, b, c = rng.choice(by_side[side], 3, replace=False)
        lines.append(f"{a},{b},{c},{c}")
    for _ in range(4):
        a, b, c = by_side["test"][0], by_side["train"][0], by_side["train"][1]
        lines.append(f"{a},{b},{c},{a}")
    lines.append(lines[1])  # an exact repeat (merged) ...
    s1, s2, s3, odd = lines[2].split(",")
    lines.append(f"{s3},music/{s1},{s2},{s3}")  # ... and the same judgement by path, reordered
    lines.append(f"{s1},{s2},{s3},{s1}")  # the same three with another odd song (kept)
    ann = parse(thesis_csv(tmp_path / "quartets.csv", lines))
    assert ann.header == ["song 1", "song 2", "song 3", "odd song"]
    assert ann.rows == len(lines) - 1
    assert ann.merged == 3 + 2  # 3 repeats of the cross-split line, line 2, the reordered one
    assert ann.conflicts == [(3, len(lines))]
    g = gt.build(ANN_TRACKS, 42, 0.3, 0.15, 0, 0, 0, annotations=ann)
    side = dict(zip(splits["track_id"], splits["split"]))
    expected = {"test": [], "val": [], "train": [], "": []}
    for s1, s2, s3, odd in ann.quartets[list(gt.QUARTET_COLUMNS)].itertuples(index=False):
        sides = {side[s1], side[s2], side[s3]}
        expected[sides.pop() if len(sides) == 1 else ""].append((s1, s2, s3, odd))
    assert [tuple(r) for r in g.test_quartets.itertuples(index=False)] == expected["test"]
    assert [tuple(r) for r in g.val_quartets.itertuples(index=False)] == expected["val"]
    a = g.report["annotations"]
    assert a["quartets"] == {s: len(expected[s]) for s in gt.SPLITS}
    assert a["dropped_straddling_splits"] == len(expected[""]) == 1
    triplets = []
    for s1, s2, s3, odd in expected["train"]:
        x, y = [s for s in (s1, s2, s3) if s != odd]
        triplets += [(x, y, odd), (y, x, odd)]
    assert [tuple(r) for r in g.train_triplets.itertuples(index=False)] == triplets
    assert g.report["mode"] == "annotations" and g.report["train_triplets"] == len(triplets)


def test_headerless_semicolon_file_and_duplicate_aliases(tmp_path):
    ids = ANN_TRACKS["track_id"].tolist()
    path = thesis_csv(tmp_path / "q.csv", [f"{ids[0]};{ids[1]};dupe/x.wav;{ids[20]}", "",
                                           f"{ids[3]};{ids[4]};{ids[30]};{ids[30]}"])
    aliases = pd.DataFrame({"path": ["dupe/x.wav"], "track_id": [ids[20]]})
    ann = parse(path, aliases=aliases)
    assert ann.header is None
    assert ann.quartets[["song3", "line"]].values.tolist() == [[ids[20], 1], [ids[30], 3]]


@pytest.mark.parametrize("bad, words", [
    ("p/000.wav,p/001.wav,nope.wav,p/000.wav", "unknown track 'nope.wav' (song 3);"),
    ("p/000.wav,p/001.wav,q/000.mp3,q/000.mp3",
     "unknown track 'q/000.mp3' (song 3, odd song), did you mean 'q/000.wav'?"),
    ("p/000.wav,p/001.wav,q/000.wav,r/000.wav", "odd song 'r/000.wav' is not one of the three"),
    ("p/000.wav,p/000.wav,q/000.wav,q/000.wav", "the same song twice ('p/000.wav')"),
    ("p/000.wav,music/p/000.wav,q/000.wav,q/000.wav", "the same song twice ('p/000.wav')"),
    ("p/000.wav,p/001.wav,q/000.wav", "missing column(s) odd song"),
    ("p/000.wav,,q/000.wav,q/000.wav", "missing column(s) song 2"),
])
def test_each_annotation_error_names_its_line(tmp_path, bad, words):
    good = "p/002.wav,p/003.wav,q/004.wav,q/004.wav"
    path = thesis_csv(tmp_path / "judgements.csv", ["song 1,song 2,song 3,odd song", good, "",
                                                     bad, good])
    with pytest.raises(GroundTruthError) as err:
        parse(path)
    assert str(err.value).startswith(f"judgements.csv line 4: {words}")


def test_all_bad_lines_are_listed_at_once(tmp_path):
    path = thesis_csv(tmp_path / "q.csv", ["p/000.wav,p/001.wav,x.wav,p/000.wav",
                                           "p/000.wav,p/001.wav,q/000.wav,r/000.wav"])
    with pytest.raises(GroundTruthError, match=r"2 bad lines:\n  line 1: .*\n  line 2: "):
        parse(path)


def _load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_groundtruth_stage_writes_its_files(tmp_path, capsys):
    tracks = make_tracks(LABELS6)
    tracks = tracks.assign(duration_s=2.0, sample_rate=16000, channels=1, sha1="x")
    (tmp_path / "library").mkdir()
    tracks.to_csv(tmp_path / "library" / "tracks.csv", index=False)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["groundtruth"] = {"test_quartets": 50, "val_quartets": 20, "train_triplets": 80}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    out, reports = tmp_path / "gt", tmp_path / "reports"
    rc = _load_stage("groundtruth").main([
        "--tracks", str(tmp_path / "library" / "tracks.csv"), "--out", str(out),
        "--reports", str(reports), "--params", str(tmp_path / "params.yaml")])
    assert rc == 0
    assert pd.read_csv(out / "splits.csv").shape == (len(tracks), 2)
    assert list(pd.read_csv(out / "test_quartets.csv").columns) == list(gt.QUARTET_COLUMNS)
    assert len(pd.read_csv(out / "train_triplets.csv")) == 80
    assert len(pd.read_csv(out / "val_quartets.csv")) == 20
    assert json.loads((reports / "groundtruth.json").read_text())["test_quartets"] == 50
    assert "test quartets 50" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Quartet files that carry their split, partitions that keep quartets, validation top-up


def _side_rows(rng, by_side: dict[str, list[str]], counts: dict[str, int]) -> list[tuple]:
    rows = []
    for side, n in counts.items():
        for _ in range(n):
            a, b, c = rng.choice(by_side[side], 3, replace=False)
            rows.append((a, b, c, c, side))
    return rows


def test_a_split_column_is_honoured_exactly(tmp_path):
    ids = ANN_TRACKS["track_id"].tolist()
    by_side = {"train": ids[:20], "val": ids[20:26], "test": ids[26:]}
    rows = _side_rows(np.random.default_rng(0), by_side, {"train": 15, "val": 4, "test": 8})
    path = thesis_csv(tmp_path / "q.csv", ["Song 1,Song 2,Song 3,Odd song,Split"]
                      + [f"{a},{b},{c},{o},{s.upper() if i % 2 else s}"
                         for i, (a, b, c, o, s) in enumerate(rows)])
    ann = parse(path)
    assert ann.has_split and ann.quartets["split"].tolist() == [r[4] for r in rows]
    g = gt.build(ANN_TRACKS, 42, 0.3, 0.15, 0, 0, 0, annotations=ann,
                 split_method="partition", min_val_quartets=0)
    side = dict(zip(g.splits["track_id"], g.splits["split"]))
    for s, members in by_side.items():
        named = {t for r in rows if r[4] == s for t in r[:3]}
        assert {side[t] for t in named} == {s}
        assert named <= set(members)
    want = {s: [r[:4] for r in rows if r[4] == s] for s in gt.SPLITS}
    assert [tuple(r) for r in g.test_quartets.itertuples(index=False)] == want["test"]
    assert [tuple(r) for r in g.val_quartets.itertuples(index=False)] == want["val"]
    assert len(g.train_triplets) == 2 * len(want["train"])
    a = g.report["annotations"]
    assert g.report["split"]["method"] == "file" and a["dropped_straddling_splits"] == 0
    assert a["judgements"]["test"] == {"kept": 8, "dropped": 0}
    assert "the file's split column" in gt.summary(g)
    # headerless, the fifth column is the split
    bare = thesis_csv(tmp_path / "bare.csv", [",".join(r) for r in rows])
    assert parse(bare).quartets["split"].tolist() == [r[4] for r in rows]


@pytest.mark.parametrize("where", [0, 3])
def test_a_headerless_split_column_is_all_or_nothing(tmp_path, where):
    ids = ANN_TRACKS["track_id"].tolist()
    rows = _side_rows(np.random.default_rng(0), {"train": ids[:20], "val": ids[20:26], "test": ids[26:]},
                      {"train": 3, "val": 1, "test": 2})
    lines = [",".join(r) for r in rows]
    lines[where] = ",".join([*rows[where][:4], "nope"])
    with pytest.raises(GroundTruthError, match=rf"line {where + 1}: split 'nope' is not one of"):
        parse(thesis_csv(tmp_path / "q.csv", lines))
    lines[where] = ",".join(rows[where][:4])  # a line without the column the others have
    with pytest.raises(GroundTruthError, match=rf"line {where + 1}: missing split"):
        parse(thesis_csv(tmp_path / "q.csv", lines))


def test_merges_and_conflicts_match_a_pairwise_loop():
    ids = ANN_TRACKS["track_id"].tolist()
    rng = np.random.default_rng(5)
    rows = []
    for line in range(1, 401):
        three = list(rng.choice(ids[:6], 3, replace=False))  # few songs: many repeats and conflicts
        rows.append((line, [*three, three[rng.integers(3)]]))
    ann = gt.parse_quartets(rows, gt.track_lookup(ANN_TRACKS))
    kept, merged, conflicts = [], 0, []
    for line, (a, b, c, odd) in rows:
        if any({a, b, c} == set(k[:3]) and odd == k[3] for k in kept):
            merged += 1
            continue
        conflicts += [(k[4], line) for k in kept if {a, b, c} == set(k[:3]) and odd != k[3]]
        kept.append((a, b, c, odd, line))
    assert ann.merged == merged and ann.conflicts == conflicts
    assert ann.quartets["line"].tolist() == [k[4] for k in kept]


def test_a_song_in_two_splits_is_an_error_naming_both_lines(tmp_path):
    path = thesis_csv(tmp_path / "q.csv", [
        "song1,song2,song3,odd,split",
        "p/000.wav,p/001.wav,q/000.wav,q/000.wav,train",
        "p/002.wav,p/003.wav,q/001.wav,q/001.wav,test",
        "p/004.wav,p/001.wav,q/002.wav,q/002.wav,test",
        "p/005.wav,p/006.wav,q/003.wav,q/003.wav,dev",
    ])
    with pytest.raises(GroundTruthError) as err:
        parse(path)
    msg = str(err.value)
    assert msg.startswith("q.csv: 2 bad lines")
    assert ("line 4: song 'p/001.wav' is in a test quartet here and in a train quartet on "
            "line 2") in msg
    assert "line 5: split 'dev' is not one of train, val, test" in msg


def _designs():
    spec = importlib.util.spec_from_file_location("bench_splits", ROOT / "benchmarks" / "splits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("design", ["random_quartets", "clustered_quartets"])
def test_the_partition_keeps_at_least_as_many_quartets_as_the_hash_split(design):
    d = _designs()
    tracks = d.design_tracks(90, 9)
    q = getattr(d, design)(tracks, 600, np.random.default_rng(1)).drop_duplicates()
    hashed = gt.assign_splits(tracks, 42, 0.3, 0.15)
    parted = gt.partition_splits(tracks, q, hashed, 42, 0.3, 0.15)
    before, after = gt.judgement_counts(q, hashed), gt.judgement_counts(q, parted)
    assert after["all"]["kept"] >= before["all"]["kept"]
    assert after["test"]["kept"] >= before["test"]["kept"]
    n = parted["split"].value_counts()
    assert n["test"] == pytest.approx(27, abs=2) and n["val"] == pytest.approx(9, abs=1)
    for s in gt.SPLITS:  # the counts are what a loop over the quartets finds
        side = dict(zip(parted["track_id"], parted["split"]))
        kept = sum({side[a], side[b], side[c]} == {s} for a, b, c, _ in q.to_numpy())
        assert after[s]["kept"] == kept
    again = gt.partition_splits(tracks, q, hashed, 42, 0.3, 0.15)
    assert again.equals(parted)  # seeded


def test_groups_stay_whole_under_the_partition():
    tracks = make_tracks({"p": 30, "q": 30}, groups_of=3)
    d = _designs()
    q = d.random_quartets(tracks, 300, np.random.default_rng(2))
    parted = gt.partition_splits(tracks, q, gt.assign_splits(tracks, 1, 0.3, 0.15), 1, 0.3, 0.15)
    assert parted.groupby(tracks["group"])["split"].nunique().max() == 1


def test_few_validation_quartets_are_topped_up_from_training_and_said(tmp_path, capsys):
    ids = ANN_TRACKS["track_id"].tolist()
    by_side = {"train": ids[:22], "val": ids[22:26], "test": ids[26:]}
    rows = _side_rows(np.random.default_rng(5), by_side, {"train": 60, "val": 2, "test": 10})
    rows = list(dict.fromkeys(rows))
    path = thesis_csv(tmp_path / "q.csv", ["song1,song2,song3,odd,split"]
                      + [",".join(r) for r in rows])
    ann = parse(path)
    n_train = int((ann.quartets["split"] == "train").sum())  # after merging duplicates
    g = gt.build(ANN_TRACKS, 42, 0.3, 0.15, 0, 0, 0, annotations=ann, min_val_quartets=20)
    v = g.report["validation"]
    assert len(g.val_quartets) == 20 == v["quartets"]
    assert v["annotated_val_quartets"] == 2 and v["held_out_training_quartets"] == 18
    assert "held-out" in v["source"]
    assert len(g.train_triplets) == 2 * (n_train - 18)  # held-out quartets give no triplets
    held = {tuple(r) for r in g.val_quartets.iloc[2:].itertuples(index=False)}
    trip = {tuple(sorted(t)) for t in g.train_triplets.itertuples(index=False)}
    assert all(tuple(sorted(h[:3])) not in trip for h in held)
    assert any("held out for validation" in w for w in g.warnings)
    assert "2 annotated + 18 held-out" in gt.summary(g)
    tracks_csv = tmp_path / "tracks.csv"
    ANN_TRACKS.assign(duration_s=2.0, sample_rate=16000, channels=1, sha1="x").to_csv(
        tracks_csv, index=False)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"] = {**raw["data"], "source": "folder", "audio_dir": str(tmp_path),
                   "quartets": str(path)}
    raw["groundtruth"]["min_val_quartets"] = 20
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    rc = _load_stage("groundtruth").main([
        "--tracks", str(tracks_csv), "--out", str(tmp_path / "gt"), "--reports",
        str(tmp_path / "rep"), "--params", str(tmp_path / "params.yaml")])
    out, err = capsys.readouterr()
    assert rc == 0 and "18 held-out training quartets" in out and "held out" in err
    report = json.loads((tmp_path / "rep" / "groundtruth.json").read_text())
    assert report["validation"]["held_out_training_quartets"] == 18
    assert len(pd.read_csv(tmp_path / "gt" / "val_quartets.csv")) == 20
    assert report["annotations"]["judgements"]["val"] == {"kept": 2, "dropped": 0}


def test_split_method_and_min_val_quartets_are_params():
    from songspace import config
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = config.from_dict(raw)
    assert p.split.method == "partition" and p.groundtruth.min_val_quartets == 100
    raw["split"]["method"] = "random"
    with pytest.raises(config.ConfigError, match="split.method 'random' is unknown; choose one "
                                                 "of: partition, hash"):
        config.from_dict(raw)
