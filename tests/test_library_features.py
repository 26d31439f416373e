"""The features stage's per-song work: done once per song, keyed by content and settings, and
the same bytes whether it was computed now, earlier, or in other processes."""
from __future__ import annotations

import hashlib
import inspect
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from songspace import config, embed, features, filecheck, library_features, persong
from songspace.groundtruth import halves
from songspace.models import musicnn, musicnn_head
from tests.conftest import write_tone

PARAMS = {
    "model": "frozen",
    "models": {"frozen": {"arch": "musicnn", "pretrained": "MSD_musicnn", "freeze": "backbone",
                          "band_stats": True, "batch_size": 8}},
    "features": {"n_mels": 16, "n_fft": 256, "hop_length": 128, "segment_seconds": 0.5,
                 "segment_hop_seconds": 1.0, "max_segments": 3},
    "train": {"cached_segments": 3},
    # no spectrogram augmentation: the head trains on the stored trunk outputs
    "augment": {"view_p": 0.0, "noise": {"p": 0.0}, "random_mask": {"p": 0.0}, "time_mask": {"p": 0.0},
                "freq_mask": {"p": 0.0}},
}


def _params(tmp_path: Path, **over) -> config.Params:
    raw = {**PARAMS, "compute": {"cache_dir": str(tmp_path / "cache"), "workers": 1}}
    for key, value in over.items():
        section, name = key.split(".")
        raw[section] = {**raw.get(section, {}), name: value}
    return config.from_dict(raw)


def _tracks(tmp_path: Path, n: int = 3) -> pd.DataFrame:
    rows = []
    for i in range(n):
        path = write_tone(tmp_path / "audio" / f"t{i}.wav", freqs=(220.0 * (i + 1), 330.0), seconds=4.0, seed=i)
        rows.append({"track_id": f"t{i}", "path": str(path), "sha1": filecheck.sha1_of(path)})
    return pd.DataFrame(rows)


def _digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha1(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def _no_work(monkeypatch):
    def refuse(self, plan, device="cpu"):
        raise AssertionError("a song was computed again")
    monkeypatch.setattr(persong.SongWorker, "__init__", refuse)


def test_reusing_everything_and_computing_everything_write_the_same_bytes(tmp_path, monkeypatch):
    params, tracks = _params(tmp_path), _tracks(tmp_path)
    library_features.build(tracks, params, tmp_path / "a", progress=False)
    first = _digests(tmp_path / "a")
    assert {"trunk-MSD_musicnn.npy", "trunk-MSD_musicnn.csv", "baselines.npz", "baselines.csv"} <= set(first)
    assert not any(name.startswith(("db.", "musicnn.")) for name in first)  # no whole log-mels kept
    with monkeypatch.context() as m:
        _no_work(m)
        library_features.build(tracks, params, tmp_path / "b", progress=False)
    assert _digests(tmp_path / "b") == first
    shutil.rmtree(tmp_path / "cache")
    two = _params(tmp_path, **{"compute.workers": 2, "compute.batch_size": 1})
    library_features.build(tracks, two, tmp_path / "c", progress=False)  # two worker processes
    assert _digests(tmp_path / "c") == first


def test_a_moved_renamed_song_is_not_computed_again(tmp_path, monkeypatch):
    params, tracks = _params(tmp_path), _tracks(tmp_path)
    library_features.build(tracks, params, tmp_path / "a", progress=False)
    moved = tmp_path / "elsewhere" / "renamed.wav"
    moved.parent.mkdir()
    shutil.move(tracks.loc[0, "path"], moved)
    tracks.loc[0, ["track_id", "path"]] = ["renamed", str(moved)]
    _no_work(monkeypatch)
    library_features.build(tracks, params, tmp_path / "b", progress=False)
    rows = library_features.load_trunk(tmp_path / "b", "MSD_musicnn")
    assert "renamed" in rows and "t0" not in rows


def test_a_setting_recomputes_only_the_products_it_shapes(tmp_path):
    params, tracks = _params(tmp_path), _tracks(tmp_path)
    library_features.build(tracks, params, tmp_path / "a", progress=False)
    keys = library_features.song_key(tracks)
    before = library_features.plan(params).products(params.compute.cache_dir)
    more_bands = _params(tmp_path, **{"features.n_mels": 24})   # the db front end only
    after = library_features.plan(more_bands).products(params.compute.cache_dir)
    assert after["handcrafted"].missing(keys) == list(keys)
    for ckpt in musicnn.CHECKPOINTS:
        assert after[f"trunk-{ckpt}"].dir == before[f"trunk-{ckpt}"].dir
        assert after[f"trunk-{ckpt}"].missing(keys) == []
    fewer = _params(tmp_path, **{"features.max_segments": 2})  # the segments: every product
    assert library_features.plan(fewer).products(params.compute.cache_dir)["trunk-MSD_musicnn"].missing(keys)


def test_the_heads_settings_and_code_stamp_no_stored_network_output(tmp_path):
    """What the head reads and how it is built live apart from the network (`musicnn_head`): a
    change to either leaves every song's stored network outputs valid."""
    plain = library_features.plan(_params(tmp_path)).products(tmp_path / "cache")
    other = _params(tmp_path, **{"models.frozen": {**PARAMS["models"]["frozen"], "band_flux": True, "head_hidden": 64}})
    more = library_features.plan(other).products(tmp_path / "cache")
    assert set(more) == set(plain) | {"flux"}
    assert all(more[n].dir == plain[n].dir for n in plain)
    everything = persong.Plan(other.features, ("db", "musicnn"), musicnn.CHECKPOINTS, True, musicnn.CHECKPOINTS, True)
    head_file = Path(inspect.getfile(musicnn_head.MusicnnEmbedding)).name
    assert head_file != Path(musicnn.__file__).name
    assert not [n for n, p in everything.products(tmp_path / "cache").items() if head_file in p.about["code"]]


def test_the_stored_trunk_is_the_models_own_trunk(tmp_path):
    params, tracks = _params(tmp_path), _tracks(tmp_path, 2)
    library_features.build(tracks, params, tmp_path / "a", progress=False)
    rows = library_features.load_trunk(tmp_path / "a", "MSD_musicnn")
    spectra, _ = features.extract_library(tracks, params.features, "musicnn", workers=1, progress=False)
    windows, index = spectra.segments()
    model = embed.build(params.model_params, params.features).eval()
    with torch.no_grad():
        expected = embed.embed_segments(embed.Trunk(model), windows)
    got, got_index = rows.segments(list(tracks["track_id"]))
    assert list(got_index["track_id"]) == list(index["track_id"])
    assert np.allclose(got_index["offset_s"], index["offset_s"], atol=1e-3)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    stored, names = library_features.load_baselines(tmp_path / "a")
    assert names == ["t0", "t1"] and stored["musicnn_msd"].shape == (2, musicnn.PENULTIMATE_UNITS)
    np.testing.assert_allclose(stored["musicnn_msd"][0], expected[index["track_id"] == "t0", :200].mean(0),
                               rtol=1e-4, atol=1e-4)


def test_the_trunk_of_both_networks_joins_their_stored_outputs(tmp_path):
    params, tracks = _params(tmp_path), _tracks(tmp_path, 2)
    library_features.build(tracks, params, tmp_path / "one", progress=False)
    both = config.from_dict({**PARAMS, "compute": {"cache_dir": str(tmp_path / "cache"), "workers": 1},
                             "models": {"frozen": {**PARAMS["models"]["frozen"],
                                                   "pretrained": "MSD_musicnn+MTT_musicnn"}}})
    library_features.build(tracks, both, tmp_path / "both", progress=False)
    joined = library_features.load_trunk(tmp_path / "both", "MSD_musicnn+MTT_musicnn")
    msd = library_features.load_trunk(tmp_path / "one", "MSD_musicnn")
    mtt = library_features.export_trunk(tracks, params, "MTT_musicnn", tmp_path / "mtt")
    assert joined.array.shape[1] == library_features.persong_dim("MSD_musicnn+MTT_musicnn") == 592
    np.testing.assert_array_equal(joined.array[:, :392], msd.array)
    np.testing.assert_array_equal(joined.array[:, 392:], mtt.array[:, :200])
    assert joined.index.equals(msd.index)
    # the model's own trunk over the same segments gives those rows
    spectra, _ = features.extract_library(tracks, both.features, "musicnn", workers=1, progress=False)
    windows, _ = spectra.segments()
    model = embed.build(both.model_params, both.features).eval()
    with torch.no_grad():
        expected = embed.embed_segments(embed.Trunk(model), windows)
    np.testing.assert_allclose(joined.array, expected, rtol=1e-4, atol=1e-4)


def test_halves_and_a_silent_song(tmp_path):
    params, tracks = _params(tmp_path, **{"data.labels": "none"}), _tracks(tmp_path, 2)
    silent = tmp_path / "audio" / "silent.wav"
    import soundfile as sf
    sf.write(silent, np.zeros(16000 * 3, np.float32), 16000)
    tracks = pd.concat([tracks, pd.DataFrame([{"track_id": "silent", "path": str(silent),
                                               "sha1": filecheck.sha1_of(silent)}])], ignore_index=True)
    skipped = library_features.build(tracks, params, tmp_path / "a", progress=False)
    assert list(skipped["track_id"]) == ["silent"] and "silent" in skipped["detail"].iloc[0]
    rows = library_features.load_trunk(tmp_path / "a", "MSD_musicnn")
    for t in ("t0", "t1"):
        assert t in rows and all(h in rows for h in halves.half_ids(t))
    _, names = library_features.load_baselines(tmp_path / "a")
    assert names == ["t0", *halves.half_ids("t0"), "t1", *halves.half_ids("t1")]


def test_a_crop_trained_model_keeps_its_whole_log_mels(tmp_path):
    params = config.from_dict(
        {**PARAMS, "model": "small", "models": {"small": {"arch": "cnn", "channels": [4], "fc": [8], "embedding_dim": 8}},
         "compute": {"cache_dir": str(tmp_path / "cache"), "workers": 1}})
    tracks = _tracks(tmp_path, 2)
    library_features.build(tracks, params, tmp_path / "a", progress=False)
    spectra = features.load_spectra(tmp_path / "a", "db")
    expected, _ = features.extract_library(tracks, params.features, "db", workers=1, progress=False)
    assert np.array_equal(np.asarray(spectra.array), expected.array)
    assert not (tmp_path / "a" / "trunk-MSD_musicnn.npy").exists()


def test_an_unreadable_store_entry_is_named(tmp_path):
    params, tracks = _params(tmp_path), _tracks(tmp_path, 1)
    library_features.build(tracks, params, tmp_path / "a", progress=False)
    product = library_features.plan(params).products(params.compute.cache_dir)["handcrafted"]
    key = library_features.song_key(tracks)[0]
    product.path(key).write_bytes(b"not a zip")
    from songspace.songstore import StoreError
    with pytest.raises(StoreError, match="delete it to recompute"):
        product.load(key)


def test_a_song_too_short_for_the_network_is_skipped_with_its_reason(tmp_path):
    params, tracks = _params(tmp_path), _tracks(tmp_path, 1)
    short = write_tone(tmp_path / "audio" / "blip.wav", seconds=0.01)
    tracks = pd.concat([tracks, pd.DataFrame([{"track_id": "blip", "path": str(short),
                                               "sha1": filecheck.sha1_of(short)}])], ignore_index=True)
    skipped = library_features.build(tracks, params, tmp_path / "a", progress=False)
    assert list(skipped["track_id"]) == ["blip"] and "samples" in skipped["detail"].iloc[0]
    assert library_features.load_trunk(tmp_path / "a", "MSD_musicnn").track_ids == ["t0"]


@pytest.mark.parametrize("over,name,width", [
    ({"mid_end": True}, "MSD_musicnn~midend", 392 + 2 * musicnn.POOLED_FEATURES),
    ({"band_stats": False}, "MSD_musicnn~nobands", 200),
    ({"band_stats": False, "mid_end": True, "pretrained": "MSD_musicnn+MTT_musicnn"},
     "MSD_musicnn+MTT_musicnn~nobands~midend", 400 + 2 * musicnn.POOLED_FEATURES),
    ({"band_flux": True}, "MSD_musicnn~flux", 392 + 96),
    ({"band_flux": True, "mid_end": True, "pretrained": "MSD_musicnn+MTT_musicnn"},
     "MSD_musicnn+MTT_musicnn~flux~midend", 592 + 96 + 2 * musicnn.POOLED_FEATURES),
])
def test_the_trunk_file_holds_exactly_the_heads_inputs(tmp_path, monkeypatch, over, name, width):
    """Band statistics and the mid-end pools are in the stored rows only where the head reads them,
    in the columns of the model's own trunk; the pools are kept once per song, like the trunk."""
    raw = {**PARAMS, "compute": {"cache_dir": str(tmp_path / "cache"), "workers": 1},
           "models": {"frozen": {**PARAMS["models"]["frozen"], **over}}}
    params, tracks = config.from_dict(raw), _tracks(tmp_path, 2)
    assert library_features.trunk_checkpoint(params) == name
    assert library_features.persong_dim(name) == width == embed.build(params.model_params, params.features).backbone.trunk_dim
    library_features.build(tracks, params, tmp_path / "a", progress=False)
    rows = library_features.load_trunk(tmp_path / "a", name)
    spectra, _ = features.extract_library(tracks, params.features, "musicnn", workers=1, progress=False)
    windows, index = spectra.segments()
    model = embed.build(params.model_params, params.features).eval()
    with torch.no_grad():
        expected = embed.embed_segments(embed.Trunk(model), windows)
    assert rows.array.shape == (len(index), width)
    np.testing.assert_allclose(rows.array, expected, rtol=1e-4, atol=1e-4)
    stored = set(library_features.plan(params).products(params.compute.cache_dir))
    assert ("pools-MSD_musicnn" in stored) == bool(over.get("mid_end"))
    assert ("flux" in stored) == bool(over.get("band_flux"))
    assert library_features.load_trunk(tmp_path / "a", name).array.shape[1] == width
    with monkeypatch.context() as m:              # found again: nothing computed, the same bytes
        _no_work(m)
        library_features.build(tracks, params, tmp_path / "b", progress=False)
    assert _digests(tmp_path / "b") == _digests(tmp_path / "a")
    # the store of a run without mid-end pools gives them to a study that asks for them
    plain = _params(tmp_path)
    exported = library_features.export_trunk(tracks, plain, name, tmp_path / "c")
    np.testing.assert_array_equal(exported.array, rows.array)


def test_an_unknown_trunk_flag_is_named():
    with pytest.raises(features.FeatureError, match="~bogus"):
        library_features.trunk_parts("MSD_musicnn~bogus")
    with pytest.raises(features.FeatureError, match="in this order"):  # one name for one set of columns
        library_features.trunk_parts("MSD_musicnn~midend~flux")
