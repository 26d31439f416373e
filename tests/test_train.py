import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from songspace import augment, config, embed, evaluate, features, train
from tests.tiny import TINY_PARAMS, make_project

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("tiny"))


def _data(paths):
    return train.load_data(paths["features"], paths["groundtruth"], paths["tracks"], paths["views"])


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_load_data_holds_whole_tracks_and_cached_views(project):
    params, paths = project
    data = _data(paths)
    assert len(data.train_tracks) == 8 and data.triplets.shape == (48, 3)
    # every track's whole log-mel (1.5 s at hop 128 / 16 kHz: 188 frames) + one view of two sections
    assert len(data.spectra.table) == 12 and set(data.spectra.table["frames"]) == {188}
    assert all(len(r) == 2 for r in data.view_rows) and data.views.shape[0] == 16
    assert data.val_quartets.shape == (20, 3) and set(data.val_odd) <= {0, 1, 2}


def test_triplet_training_learns_and_checkpoints(project, tmp_path):
    params, paths = project
    data = _data(paths)
    result = train.fit(params, data, tmp_path, progress=False)
    hist = result.history
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert all(np.isfinite(h["loss"]) for h in hist)
    assert hist[-1]["val_accuracy"] >= 0.8  # low vs high tones: an easy, real task
    model, meta = embed.load_checkpoint(tmp_path / "best.pt")
    assert meta["model_name"] == "model1" and meta["feature_params"] == params.features
    x = torch.from_numpy(data.spectra.segments()[0][:4]).unsqueeze(1)
    with torch.no_grad():
        assert model(x).shape == (4, 128)


def test_same_seed_same_weights(project, tmp_path):
    params, paths = project
    p = config.from_dict({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 1}})
    a = train.fit(p, _data(paths), tmp_path / "a", progress=False)
    b = train.fit(p, _data(paths), tmp_path / "b", progress=False)
    wa, wb = _weights(a.model), _weights(b.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.history == b.history


def test_contrastive_training_runs(project, tmp_path):
    _, paths = project
    p = config.from_dict({**TINY_PARAMS, "loss": "contrastive", "train": {**TINY_PARAMS["train"], "epochs": 2}})
    result = train.fit(p, _data(paths), tmp_path, progress=False)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["loss"])
    assert torch.load(tmp_path / "last.pt", weights_only=False)["projection"] is not None


WORKER = """
import sys, pickle
from songspace import config, train
from tests.tiny import TINY_PARAMS
paths = pickle.loads(bytes.fromhex(sys.argv[1]))
p = config.from_dict({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 6}})
train.fit(p, train.load_data(paths["features"], paths["groundtruth"], paths["tracks"], paths["views"]),
          sys.argv[2], progress=False)
"""


def test_resume_after_sigkill_matches_uninterrupted_run(project, tmp_path):
    import pickle

    _, paths = project
    p = config.from_dict({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 6}})
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, pickle.dumps(paths).hex(), str(killed)],
                            cwd=ROOT, env=env)
    deadline = time.time() + 120
    while not (killed / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(killed / "last.pt", weights_only=False)["state"]["epoch"]
    assert 1 <= done < 6, "the run should have been killed mid-training"
    resumed = train.fit(p, _data(paths), killed, progress=False)
    assert [h["epoch"] for h in resumed.history] == list(range(1, 7))
    straight = train.fit(p, _data(paths), tmp_path / "straight", progress=False)
    wr, ws = _weights(resumed.model), _weights(straight.model)
    assert all(torch.equal(wr[k], ws[k]) for k in wr)


def test_other_settings_do_not_resume(project, tmp_path, capsys):
    params, paths = project
    train.fit(config.from_dict({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 1}}),
              _data(paths), tmp_path, progress=False)
    p2 = config.from_dict({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 1, "lr": 0.01}})
    hist = train.fit(p2, _data(paths), tmp_path, progress=False).history
    assert len(hist) == 1 and "other settings" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_step_on_cuda_with_mixed_precision(project, tmp_path):
    _, paths = project
    p = config.from_dict({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 1, "device": "cuda",
                                                   "amp": True}})
    result = train.fit(p, _data(paths), tmp_path, progress=False)
    assert next(result.model.parameters()).is_cuda
    assert np.isfinite(result.history[0]["loss"])
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ckpt["grad_scaler"]["scale"] > 0  # the GradScaler really ran


def test_finished_run_is_not_resumed_and_new_data_restart(project, tmp_path, capsys):
    _, paths = project
    p = config.from_dict({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 1}})
    data = _data(paths)
    train.fit(p, data, tmp_path, progress=False)
    again = train.fit(p, data, tmp_path, progress=False)
    assert len(again.history) == 1 and "finished run" in capsys.readouterr().out
    data.triplets = data.triplets[::-1].copy()  # other inputs, same settings
    assert train.run_identity(p, data) != train.run_identity(p, _data(paths))


def test_ground_truth_naming_tracks_without_features_is_counted(project, tmp_path):
    import shutil

    import pandas as pd

    _, paths = project
    gt = tmp_path / "gt"
    shutil.copytree(paths["groundtruth"], gt)
    trip = pd.read_csv(gt / "train_triplets.csv")
    trip.loc[:2, "anchor"] = "not-decoded"
    trip.to_csv(gt / "train_triplets.csv", index=False)
    data = train.load_data(paths["features"], gt, paths["tracks"], paths["views"])
    assert data.dropped == {"train_triplets": 3, "val_quartets": 0}
    assert len(data.triplets) == len(trip) - 3


def test_pk_batches_hold_k_tracks_of_p_labels():
    labels = np.repeat(np.arange(6), [5, 5, 4, 6, 5, 5])
    order = train.pk_order(labels, p=3, k=4, n_batches=20, rng=np.random.default_rng(0))
    assert order.shape == (20 * 12,)
    for batch in order.reshape(20, 12):
        per_label = batch.reshape(3, 4)
        assert all(len(set(labels[g])) == 1 for g in per_label)          # K of one label each
        assert len({labels[g[0]] for g in per_label}) == 3                # P different labels
        assert all(len(set(g)) == 4 for g in per_label)                   # K different tracks
    again = train.pk_order(labels, p=3, k=4, n_batches=20, rng=np.random.default_rng(0))
    assert np.array_equal(order, again)


def test_epoch_crops_differ_between_epochs_and_are_seeded(project):
    params, paths = project
    data = _data(paths)
    aug = config.from_dict({**TINY_PARAMS, "augment": {"views": 1, "segments": 2, "view_p": 0.0,
                                                       "noise": {"p": 0.0}, "random_mask": {"p": 0.0},
                                                       "time_mask": {"p": 0.0}, "freq_mask": {"p": 0.0}}}).augment
    order = np.arange(len(data.train_tracks))
    e0 = train.TrackSamples(data, aug, 7, order, epoch=0)
    e0_again = train.TrackSamples(data, aug, 7, order, epoch=0)
    e1 = train.TrackSamples(data, aug, 7, order, epoch=1)
    a = torch.stack([e0[i][0] for i in range(len(order))])
    assert torch.equal(a, torch.stack([e0_again[i][0] for i in range(len(order))]))
    b = torch.stack([e1[i][0] for i in range(len(order))])
    assert not torch.equal(a, b)
    # each crop is a window of its own track's log-mel
    track = data.train_tracks[0]
    whole = torch.from_numpy(data.spectra.track(track))
    crop = a[0, 0, 0]
    frames = crop.shape[-1]
    assert any(torch.allclose(crop, whole[:, s:s + frames]) for s in range(whole.shape[1] - frames + 1))


def test_label_with_fewer_than_k_tracks_still_trains(tmp_path, capsys):
    params, paths = make_project(tmp_path / "p", tracks_per_label=4)  # 2 training tracks per label
    p = config.from_dict({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 1,
                                                   "tracks_per_label": 3, "labels_per_batch": 4}})
    data = _data(paths)
    plan = train.plan_batches(p, data)
    assert plan.sampler == "pk" and plan.batch == 2 * 3
    result = train.fit(p, data, tmp_path / "out", progress=False)
    out = capsys.readouterr().out
    assert "fewer than train.tracks_per_label=3" in out and "only 2 labels" in out
    assert np.isfinite(result.history[0]["loss"]) and (tmp_path / "out" / "best.pt").exists()


@pytest.mark.parametrize("loss,mining", [("triplet", "batch_hard"), ("triplet", "semihard"),
                                         ("multisimilarity", "none"), ("supcon", "none"),
                                         ("contrastive", "none")])
def test_pk_losses_train(project, tmp_path, loss, mining):
    params, paths = project
    p = config.from_dict({**TINY_PARAMS, "loss": loss,
                          "train": {**TINY_PARAMS["train"], "epochs": 1, "mining": mining}})
    result = train.fit(p, _data(paths), tmp_path, progress=False)
    assert np.isfinite(result.history[0]["loss"]) and result.history[0]["loss"] > 0


@pytest.mark.slow
def test_dvclive_curves_continue_after_a_killed_run_resumes(project, tmp_path):
    """The train stage killed mid-run and started again: its dvclive curves hold every epoch,
    steps continuing, not only the resumed ones from step 0."""
    import yaml

    _, paths = project
    epochs = 40  # a tiny epoch takes a fraction of a second: enough of them that the kill lands mid-run
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": epochs, "patience": epochs,
                                   "steps_per_epoch": 3}}))
    cmd = [sys.executable, str(ROOT / "stages" / "train.py"), "--features", str(paths["features"]),
           "--views", str(paths["views"]), "--groundtruth", str(paths["groundtruth"]),
           "--tracks", str(paths["tracks"]), "--out", str(tmp_path / "models"),
           "--live", str(tmp_path / "live"), "--params", str(tmp_path / "params.yaml")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "models" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["state"]["epoch"]
    assert 1 <= killed_at < epochs, "the run should have been killed mid-training"
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and f"resuming from {last} after epoch {killed_at}" in out.stdout
    loss = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    steps = [int(line.split("\t")[0]) for line in loss[1:]]
    assert steps[0] == 0 and all(b > a for a, b in zip(steps, steps[1:]))  # never back to step 0
    val = (tmp_path / "live" / "plots" / "metrics" / "val" / "odd_one_out_accuracy.tsv").read_text()
    assert len(val.splitlines()) - 1 >= epochs - killed_at + 1  # the first run's epochs are still there


# ---------------------------------------------------------------- a frozen trunk, cached


MUSICNN_HEAD = {"arch": "musicnn", "pretrained": "MSD_musicnn", "freeze": "backbone", "head_hidden": 16,
                "band_stats": True, "batch_size": 8}


@pytest.fixture(scope="module")
def musicnn_project(project):
    params, paths = project
    tracks = pd.read_csv(paths["tracks"], dtype=str)
    spectra, _ = features.extract_library(tracks, params.features, "musicnn", workers=1, progress=False)
    features.save(paths["features"], spectra)
    raw = {**TINY_PARAMS, "model": "head", "models": {"head": MUSICNN_HEAD},
           "train": {**TINY_PARAMS["train"], "epochs": 2, "steps_per_epoch": 3, "cached_segments": 2,
                     "labels_per_batch": 2, "tracks_per_label": 4},
           "augment": {"views": 0, "view_p": 0.0, **{name: {"p": 0.0} for name in augment.SPECTROGRAM_AUGMENTATIONS}}}
    data = train.load_data(paths["features"], paths["groundtruth"], paths["tracks"], frontend="musicnn")
    return config.from_dict(raw), data


def test_a_frozen_trunk_is_computed_once_and_only_the_head_trains(musicnn_project, tmp_path):
    params, data = musicnn_project
    result = train.fit(params, data, tmp_path, progress=False)
    cache = data.trunk_cache
    assert cache is not None and cache.train.shape[1] == 200 + 2 * 96
    # 1.5 s tracks fit one 3 s musicnn segment: one cached row per training track, in track order
    assert [len(r) for r in cache.rows] == [1] * len(data.train_tracks)
    model, _ = embed.load_checkpoint(tmp_path / "last.pt")
    fresh = embed.build(params.model_params, params.features)
    trained, untouched = model.state_dict(), fresh.state_dict()
    changed = {k for k in trained if not torch.equal(trained[k], untouched[k])}
    assert changed and all(k.startswith("backbone.head.") for k in changed)
    assert result.history[-1]["val_accuracy"] == pytest.approx(
        train.validation_accuracy(model, dataclasses.replace(data, trunk_cache=None), "cpu", 8))
    # the head on cached trunk outputs gives the whole network's embeddings
    windows, _ = data.spectra.segments(data.train_tracks[:3])
    whole = embed.embed_segments(model, windows)
    via_trunk = embed.apply_head(model, embed.embed_segments(embed.Trunk(model), windows))
    np.testing.assert_allclose(via_trunk, whole, atol=1e-5)


def test_a_draw_of_cached_segments_is_the_mean_of_distinct_ones(project):
    """`train.segments_per_draw`: each draw of a track averages that many distinct cached segments of
    it (all of them when it has fewer); 1 draws one, as before."""
    params, paths = project
    n_tracks = len(_data(paths).train_tracks)
    counts = [5 if t % 2 else 2 for t in range(n_tracks)]
    starts = np.cumsum([0] + counts)
    rows = [np.arange(a, b) for a, b in zip(starts[:-1], starts[1:])]
    table = torch.randn(int(starts[-1]), 6)
    cache = embed.TrunkCache(table, rows, torch.zeros(0, 6), pd.DataFrame({"track_id": []}))
    data = dataclasses.replace(_data(paths), trunk_cache=cache)
    order = np.arange(n_tracks)
    one = train.TrackSamples(data, params.augment, 7, order, epoch=0, views=2)
    assert torch.equal(torch.stack([one[i][0] for i in order]),
                       torch.stack([train.TrackSamples(data, params.augment, 7, order, 0, 2, per_draw=1)[i][0]
                                    for i in order]))
    for i in order:
        for x in one[i][0]:
            assert any(torch.equal(x, table[r]) for r in rows[i])
    three = train.TrackSamples(data, params.augment, 7, order, epoch=0, views=2, per_draw=3)
    subsets = {}
    for i in order:
        x = three[i][0]
        assert x.shape == (2, 6)
        if counts[i] == 2:   # fewer than 3: the mean of all of them
            torch.testing.assert_close(x[0], table[rows[i]].mean(0))
        else:                # some 3 distinct segments of the track
            from itertools import combinations
            means = [table[list(c)].mean(0) for c in combinations(rows[i], 3)]
            assert all(any(torch.allclose(v, m) for m in means) for v in x)
            subsets[i] = x
    again = train.TrackSamples(data, params.augment, 7, order, epoch=0, views=2, per_draw=3)
    assert all(torch.equal(again[i][0], x) for i, x in subsets.items())


def test_segments_per_draw_without_a_trunk_cache_says_it_is_ignored(project, tmp_path, capsys):
    params, paths = project
    p = config.from_dict({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 1, "segments_per_draw": 3}})
    train.fit(p, _data(paths), tmp_path, progress=False)
    assert "train.segments_per_draw: 3 is ignored" in capsys.readouterr().out


def test_trunk_cache_is_off_with_spectrogram_augmentation(musicnn_project, tmp_path, capsys):
    params, data = musicnn_project
    raw_aug = dataclasses.replace(params.augment, time_mask=dataclasses.replace(params.augment.time_mask, p=0.5))
    params = dataclasses.replace(params, augment=raw_aug)
    train.fit(params, data, tmp_path, progress=False)
    assert data.trunk_cache is None
    assert "train.cached_segments is ignored" in capsys.readouterr().out


def test_the_frozen_trunk_gives_the_pretrained_baseline_as_evaluate_shares_it(musicnn_project):
    params, data = musicnn_project
    model = embed.build(params.model_params, params.features).eval()
    train_ids, test_ids = data.train_tracks[:2], data.val_tracks[:2]
    windows, _ = data.spectra.segments(train_ids + test_ids)
    trunk = embed.embed_segments(embed.Trunk(model), windows)
    computed = evaluate.pretrained_baselines(data.spectra, train_ids, test_ids, progress=False)
    shared = evaluate.pretrained_baselines(data.spectra, train_ids, test_ids, progress=False,
                                           known={"MSD_musicnn": trunk[:, :200]})
    for name in ("musicnn_msd", "musicnn_mtt"):
        for ours, theirs in zip(shared[name], computed[name]):
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
    with pytest.raises(ValueError, match="rows"):
        evaluate.pretrained_baselines(data.spectra, train_ids, test_ids, progress=False,
                                      known={"MSD_musicnn": trunk[:1, :200]})
