"""benchmarks/heads.py: the paired cross-validation's folds, overrides and interval."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from benchmarks import heads
from songspace import config, library_features


def test_folds_are_stratified_disjoint_and_their_quartets_lie_in_the_held_out_fold():
    labels = np.repeat(np.arange(4), [10, 7, 5, 12])
    units = heads.folds_of(labels, 5, 50, repeat=3)
    held = np.concatenate([u.held for u in units])
    assert sorted(held) == list(range(len(labels)))           # every track held out exactly once
    for u in units:
        assert not set(u.rest) & set(u.held)
        for c in range(4):                                      # stratified: a label's tracks spread
            n = int((labels[u.held] == c).sum())
            assert abs(n - (labels == c).sum() / 5) <= 1
        for (a, b, c), odd in zip(u.quartets, u.odd):           # two of one label, the odd of another
            lab = labels[u.held[[a, b, c]]]
            others = np.delete(lab, odd)
            assert others[0] == others[1] != lab[odd]
    again = heads.folds_of(labels, 5, 50, repeat=3)             # the same units for every candidate
    assert all(np.array_equal(u.quartets, v.quartets) and np.array_equal(u.held, v.held)
               for u, v in zip(units, again))


def test_the_corrected_interval_is_the_nadeau_bengio_formula():
    rng = np.random.default_rng(0)
    d = rng.normal(0.02, 0.03, 10)
    mean, low, high = heads.corrected_interval(d, 0.25)
    se = math.sqrt((1 / 10 + 0.25) * d.var(ddof=1))
    t = stats.t.ppf(0.975, 9)
    assert mean == pytest.approx(d.mean()) and low == pytest.approx(d.mean() - t * se)
    assert high == pytest.approx(d.mean() + t * se)
    plain = stats.t.interval(0.95, 9, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(10))
    assert high - low > plain[1] - plain[0]                     # wider than the naive t-interval
    assert math.isnan(heads.corrected_interval([0.1], 0.25)[1])


def test_overrides_reach_the_selected_models_own_settings_and_are_validated():
    raw = yaml.safe_load(open(config.PARAMS_FILE))
    p = heads.with_overrides(raw, {"@head_hidden": 64, "train.lr": 0.003})
    assert p.model_params.head_hidden == 64 and p.train.lr == 0.003
    assert heads.with_overrides(raw, {"model": "musicnn_mtt", "@embedding_dim": 32}).model_params.embedding_dim == 32
    assert raw["train"]["lr"] != 0.003                          # the loaded params are left as they were
    with pytest.raises(config.ConfigError):
        heads.with_overrides(raw, {"train.lr": -1.0})


def test_every_candidate_is_valid_params():
    raw = yaml.safe_load(open(config.PARAMS_FILE))
    for name, spec in heads.CANDIDATES.items():
        if isinstance(spec, dict):
            heads.with_overrides(raw, {k: v for k, v in spec.items() if not k.startswith("~")})


def test_the_table_pairs_each_candidate_with_the_reference():
    units = {"defaults": [{"cosine/none": a, "cosine/Normalizer": a} for a in (0.6, 0.62, 0.58, 0.61)],
             "other": [{"cosine/none": a, "cosine/Normalizer": a} for a in (0.65, 0.66, 0.63, 0.66)]}
    rows = {r["candidate"]: r for r in heads.table(units, "defaults", 0.25)}
    assert "diff" not in rows["defaults"]
    assert rows["other"]["diff"] == pytest.approx(0.0475) and rows["other"]["wins"] == 4
    assert rows["other"]["diff_low"] > 0


def test_judgement_triplets_keep_only_quartets_inside_the_training_tracks():
    quartets = pd.DataFrame([["a", "b", "c", "c"],      # inside: a~b, odd c
                             ["b", "d", "a", "b"],      # inside: d~a, odd b
                             ["a", "b", "x", "x"]],     # x is not a training track: left out
                            columns=["song1", "song2", "song3", "odd"])
    ids = ["d", "c", "b", "a"]
    got = heads.judgement_triplets(quartets, ids)
    named = {tuple(ids[i] for i in row) for row in got}
    assert named == {("a", "b", "c"), ("b", "a", "c"), ("d", "a", "b"), ("a", "d", "b")}
    assert got.dtype == np.int64 and got.shape == (4, 3)
    assert heads.judgement_triplets(quartets, ["a", "b"]).shape == (0, 3)


def test_open_set_folds_hold_whole_labels_and_their_quartets_only_unseen_labels():
    labels = np.repeat(np.arange(10), [6, 4, 5, 9, 3, 7, 4, 5, 6, 8])
    units = heads.folds_of(labels, 5, 40, repeat=1, open_set=True)
    assert sorted(np.concatenate([u.held for u in units])) == list(range(len(labels)))
    for u in units:
        held, seen = set(labels[u.held]), set(labels[u.rest])
        assert len(held) == 2 and not held & seen               # two labels, unseen in training
        for (a, b, c), odd in zip(u.quartets, u.odd):
            lab = labels[u.held[[a, b, c]]]
            others = np.delete(lab, odd)
            assert others[0] == others[1] != lab[odd]
    assert [set(labels[u.held]) for u in units] != \
        [set(labels[u.held]) for u in heads.folds_of(labels, 5, 40, repeat=2, open_set=True)]
    with pytest.raises(SystemExit, match="at least 2 labels a fold"):
        heads.folds_of(labels, 6, 40, repeat=1, open_set=True)


def test_unit_rows_have_length_one_and_leave_zero_rows_at_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    assert np.allclose(heads.unit_rows(x), [[0.6, 0.8], [0.0, 0.0]])


def test_pooled_studies_give_the_interval_over_all_their_units(tmp_path, capsys):
    rng = np.random.default_rng(1)
    paths, ref_all, cand_all = [], [], []
    for lib in range(2):
        ref, cand = rng.uniform(0.5, 0.7, 10), rng.uniform(0.5, 0.8, 10)
        ref_all.append(ref), cand_all.append(cand)
        units = {"defaults": [{"cosine/none": r, "cosine/Normalizer": r} for r in ref],
                 "wide": [{"cosine/none": c, "cosine/Normalizer": c} for c in cand],
                 **({"only here": [{"cosine/none": 0.5, "cosine/Normalizer": 0.5}] * 10} if lib else {})}
        path = tmp_path / f"lib{lib}.json"
        path.write_text(json.dumps({"design": {"folds": 5, "tracks": 100 + lib}, "units": units}))
        paths.append(str(path))
    rows = {r["candidate"]: r for r in heads.pooled(paths, "defaults")}
    assert set(rows) == {"defaults", "wide"}                    # only candidates scored in every study
    mean, low, high = heads.corrected_interval(np.concatenate(cand_all) - np.concatenate(ref_all), 0.25)
    assert rows["wide"]["units"] == 20
    assert (rows["wide"]["diff"], rows["wide"]["diff_low"], rows["wide"]["diff_high"]) == pytest.approx((mean, low, high))
    assert "20 units of 2 studies (100 tracks, 101 tracks)" in capsys.readouterr().out
    other = tmp_path / "three.json"
    other.write_text(json.dumps({"design": {"folds": 3, "tracks": 9}, "units": {"defaults": []}}))
    with pytest.raises(SystemExit, match="different numbers of folds"):
        heads.pooled([paths[0], str(other)], "defaults")
