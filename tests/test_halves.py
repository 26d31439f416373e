"""No labels (`data.labels: none`): quartets of track halves, halves as tracks of a library's
log-mels, and a real self-supervised training run judged on them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from songspace import features, groundtruth as gt, library_features, train
from songspace.groundtruth import halves
from songspace.ingest import UNLABELLED
from tests.test_groundtruth import make_tracks
from tests.tiny import make_project


def test_half_quartets_pair_a_tracks_halves_against_another_tracks_half():
    ids = [f"t{i}" for i in range(6)]
    q = halves.quartets(ids, 40, np.random.default_rng(0))
    assert len(q) == 40 and not q.duplicated().any()
    for s1, s2, s3, odd in q.itertuples(index=False):
        wholes = [halves.whole_id(s) for s in (s1, s2, s3)]
        pair = [w for w in wholes if wholes.count(w) == 2]
        assert len(set(pair)) == 1 and halves.whole_id(odd) not in pair and odd in (s1, s2, s3)
        assert sorted(s for s in (s1, s2, s3) if halves.whole_id(s) == pair[0]) == list(halves.half_ids(pair[0]))
    assert len(halves.quartets(ids[:2], 100, np.random.default_rng(0))) == 2 * 1 * 2  # every distinct one
    assert halves.quartets(ids[:1], 10, np.random.default_rng(0)).empty


def test_halves_are_tracks_of_the_spectra(tmp_path):
    params, paths = make_project(tmp_path, tracks_per_label=4)
    spectra = features.load_spectra(paths["features"], "db", params.features)
    t = spectra.track_ids[0]
    wrapped = halves.with_halves(spectra, [t])
    a, b = halves.half_ids(t)
    (start, n), (sa, na), (sb, nb) = wrapped.span(t), wrapped.span(a), wrapped.span(b)
    assert (sa, sa + na, sb + nb) == (start, sb, start + n) and abs(na - nb) <= 1
    np.testing.assert_array_equal(np.concatenate([wrapped.track(a), wrapped.track(b)], axis=1), spectra.track(t))
    _, index = wrapped.segments([a, b])
    assert set(index["track_id"]) == {a, b}


def test_groundtruth_without_labels_judges_halves():
    tracks = make_tracks({UNLABELLED: 30})
    g = gt.build(tracks, 1, 0.3, 0.2, 50, 20, 100, halves=True)
    assert g.report["mode"] == "halves" and g.train_triplets.empty
    side = dict(zip(g.splits["track_id"], g.splits["split"]))
    for quartets, split in ((g.test_quartets, "test"), (g.val_quartets, "val")):
        assert len(quartets) > 0
        named = {halves.whole_id(s) for s in quartets[["song1", "song2", "song3"]].to_numpy().ravel()}
        assert {side[t] for t in named} == {split}
    assert "ground truth from halves" in gt.summary(g)


def test_a_self_supervised_run_learns_to_match_a_tracks_halves(tmp_path):
    params, paths = make_project(tmp_path, tracks_per_label=6, train={"epochs": 4, "lr": 0.003, "batch_size": 8,
                                                                      "patience": 10, "num_workers": 0,
                                                                      "labels_per_batch": 4, "tracks_per_label": 2,
                                                                      "steps_per_epoch": 6})
    tracks = pd.read_csv(paths["tracks"], dtype=str).assign(label=UNLABELLED, group="")
    g = gt.build(tracks, 3, 0.2, 0.3, 20, 20, 0, halves=True)
    gt.write(g, paths["groundtruth"], tmp_path / "reports")
    data = train.load_data(paths["features"], paths["groundtruth"], paths["tracks"], paths["views"],
                           self_supervised=True)
    assert data.self_supervised and data.n_labels == len(data.train_tracks)
    assert len(data.val_quartets) > 0 and all(t in data.spectra for t in data.val_tracks)
    plan = train.plan_batches(params, data)
    assert plan.sampler == "pk" and any("self-supervised" in n for n in plan.notes)
    result = train.fit(params, data, tmp_path / "models", progress=False)
    accs = [h["val_accuracy"] for h in result.history]
    assert len(accs) == 4 and all(np.isfinite(accs)) and max(accs) > 1 / 3


def test_judgements_without_labels_train_from_their_triplets_not_from_halves(tmp_path):
    from songspace import config

    assert halves.in_use(config.DataParams(labels="none"))
    assert not halves.in_use(config.DataParams(labels="none", quartets="judged.csv"))
    assert not halves.in_use(config.DataParams(labels="folders"))
    params, paths = make_project(tmp_path, tracks_per_label=6, train={"epochs": 1, "num_workers": 0,
                                                                      "steps_per_epoch": 3})
    # no labels: the tracks table says nothing, the triplets (as quartets give them) are all there is
    tracks = pd.read_csv(paths["tracks"], dtype=str).assign(label=UNLABELLED)
    tracks.to_csv(paths["tracks"], index=False)
    data = train.load_data(paths["features"], paths["groundtruth"], paths["tracks"], paths["views"],
                           self_supervised=halves.in_use(config.DataParams(labels="none", quartets="q.csv")))
    assert not data.self_supervised and data.n_labels == 1 and len(data.triplets) > 0
    plan = train.plan_batches(params, data)
    assert plan.sampler == "triplets" and plan.make is train.TripletSamples
    result = train.fit(params, data, tmp_path / "models", progress=False)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["loss"])


@pytest.mark.slow
def test_the_evaluate_stage_judges_halves_without_labels(tmp_path):
    import json
    import subprocess
    import sys

    import yaml

    from tests.tiny import TINY_PARAMS

    raw = {**TINY_PARAMS, "data": {"labels": "none"}, "evaluate": {"bootstrap": 50},
           "compute": {"cache_dir": str(tmp_path / "cache"), "workers": 1}}
    params, paths = make_project(tmp_path, tracks_per_label=6, **{k: v for k, v in raw.items() if k != "seed"})
    tracks = pd.read_csv(paths["tracks"], dtype=str).assign(label=UNLABELLED, group="")
    skipped = library_features.build(tracks, params, paths["features"], progress=False)
    assert skipped.empty
    g = gt.build(tracks, 3, 0.3, 0.3, 30, 20, 0, halves=True)
    gt.write(g, paths["groundtruth"], tmp_path / "reports")
    data = train.load_data(paths["features"], paths["groundtruth"], paths["tracks"], paths["views"],
                           self_supervised=True)
    train.fit(params, data, tmp_path / "models", progress=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "stages" / "evaluate.py"), "--model", str(tmp_path / "models" / "best.pt"),
         "--features", str(paths["features"]), "--groundtruth", str(paths["groundtruth"]),
         "--tracks", str(paths["tracks"]), "--metrics", str(tmp_path / "eval.json"), "--plots",
         str(tmp_path / "plots"), "--params", str(tmp_path / "params.yaml")],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "halves are the tracks to judge" in done.stdout
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["headline"]["n_quartets"] == len(g.test_quartets) > 0
    assert 0 <= result["headline"]["accuracy"] <= 1 and "mfcc_stats" in result["baselines"]
