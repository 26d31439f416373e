"""Benchmarks (`benchmarks/`) at tiny sizes: the JSON structure, the sides' consistency and the helpers.

These are structure tests, not timing assertions: the machines are shared and slow.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import bench, extraction, grid, harness, queries, training
from songspace import audio, config, features
from songspace.config import FeatureParams, ModelParams
from tests.tiny import TINY_PARAMS

ROOT = Path(__file__).resolve().parents[1]
SMALL = FeatureParams(n_mels=16, n_fft=256, hop_length=128, segment_seconds=1.0)
TINY_MODELS = {
    "model3": ModelParams(arch="cnn", channels=(4, 8), fc=(16, 8), embedding_dim=8, batch_size=6),
    "model1": ModelParams(arch="cnn", channels=(4,), fc=(16, 8), embedding_dim=8, batch_size=6),
}


def check_item(it: dict) -> None:
    """Every item: both sides' medians, ratio = alt / ours, a goal verdict consistent with the goal."""
    assert set(it) >= {"item", "group", "title", "ours", "alt", "ratio", "goal", "goal_value", "goal_met", "extra"}
    for s in (it["ours"], it["alt"]):
        assert s["label"] and s["median_s"] > 0
        if s["runs_s"] is not None:
            assert s["median_s"] == pytest.approx(float(np.median(s["runs_s"])))
        if "rate" in s:
            assert s["rate"] > 0 and s["rate_unit"]
    assert it["ratio"] == pytest.approx(it["alt"]["median_s"] / it["ours"]["median_s"])
    if it["goal"] is None:
        assert it["goal_met"] is None
    else:
        assert isinstance(it["goal_met"], bool) and it["goal_value"] is not None
    json.dumps(it)  # JSON-able


def test_paired_runs_round_robin_and_item_ratio():
    calls = []
    runs = harness.paired_runs({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4 and len(runs["a"]) == len(runs["b"]) == 3
    it = harness.item("x", "g", "t", harness.side("ours", [1.0, 3.0, 2.0], 10.0, "x"), harness.side("alt", [4.0, 6.0]))
    assert it["ours"]["median_s"] == 2.0 and it["alt"]["median_s"] == 5.0 and it["ratio"] == 2.5
    assert it["ours"]["rate"] == 5.0 and it["goal_met"] is None


def test_machine_info():
    m = harness.machine_info()
    assert m["cores"] >= 1 and m["usable_cores"] >= 1 and m["cpu_model"]
    assert (m["gpu"] is None) == (not torch.cuda.is_available())
    assert {"torch", "numpy", "faiss", "librosa"} <= set(m["versions"]) and m["versions"]["faiss"]
    assert harness.busy_warning({"usable_cores": 2, "load_average": [0.1, 0, 0], "load_average_end": [0.2, 0, 0]}) == []
    assert "load average up to 1.5" in harness.busy_warning({"usable_cores": 2, "load_average": [1.5, 1, 1]})[0]


def test_test_audio_is_stereo_music_in_every_format(tmp_path):
    files = extraction.write_test_audio(tmp_path, 1, 2.0, 1, 3.0, ("wav", "ogg", "mp3"), rate=22050, progress=False)
    assert len(files) == 6 and set(files["format"]) == {"wav", "ogg", "mp3"}
    assert list(files["kind"]).count("song") == 3
    for row in files.itertuples():
        info = audio.info(row.path)
        assert info.channels == 2 and info.sample_rate == 22050
        assert row.duration_s == pytest.approx(2.0 if row.kind == "clip" else 3.0, abs=0.1)
        wave = audio.load(row.path, 16000)
        assert not audio.is_silent(wave) and np.abs(wave).max() <= 1.0
    # harmonic content, not noise: the spectrum is peaky
    spec = np.abs(np.fft.rfft(extraction.synth_music(2.0, 16000, np.random.default_rng(0), channels=1)[:, 0]))
    assert spec.max() > 20 * np.median(spec)


def test_librosa_computes_the_same_logmel(tmp_path):
    files = extraction.write_test_audio(tmp_path, 1, 1.5, 1, 6.0, ("wav", "mp3"), progress=False)
    fe = features.frontend("db", SMALL)
    for path, duration in zip(files["path"], files["duration_s"]):
        ours = features.track_spectrogram(path, fe, SMALL)
        lib = extraction.librosa_logmel(path, SMALL)
        # the whole track either way: 1 + samples // hop frames
        assert ours.shape == lib.shape == (SMALL.n_mels, 1 + round(duration * SMALL.sample_rate) // SMALL.hop_length)
        # librosa with torchaudio's mel scale: the same spectrogram but for the resamplers
        assert np.corrcoef(ours.ravel(), lib.ravel())[0, 1] > 0.99
        assert np.median(np.abs(ours - lib)) < 0.1  # dB


def test_bench_extraction_items(tmp_path):
    files = extraction.write_test_audio(tmp_path, 2, 1.5, 1, 6.0, ("wav",), progress=False)
    items = extraction.bench_extraction(files, SMALL, repeats=1, workers=2, parallel_files=8, warmup=0,
                                        progress=False)
    assert [it["item"] for it in items] == [
        "extract.1core.clip.wav", "extract.2cores.clip.wav", "extract.1core.song.wav", "extract.2cores.song.wav"]
    for it in items:
        check_item(it)
        assert it["ours"]["rate_unit"] == "x real time"
    one = {it["item"]: it for it in items}
    assert one["extract.1core.clip.wav"]["goal"].startswith(">= 300x real time")
    assert one["extract.1core.clip.wav"]["goal_value"] == one["extract.1core.clip.wav"]["ours"]["rate"]
    song = one["extract.1core.song.wav"]
    assert song["goal"] == f">= {extraction.SONG_SPEEDUP_GOAL:g}x librosa" and song["goal_value"] == song["ratio"]
    assert song["ours"]["rate"] == pytest.approx(song["extra"]["audio_s"] / song["ours"]["median_s"])
    par = one["extract.2cores.clip.wav"]
    assert par["extra"]["files"] == 8 and par["extra"]["distinct_files"] == 2
    assert par["extra"]["scaling_vs_one_core"] == pytest.approx(
        par["ours"]["rate"] / one["extract.1core.clip.wav"]["ours"]["rate"])


def test_bench_grid_item():
    (it,) = grid.bench_grid(n_quartets=200, bootstrap=20, repeats=2, n_tracks=30, dim=6, loop_quartets=20)
    check_item(it)
    assert len(it["ours"]["runs_s"]) == 2 and it["extra"]["agree"]
    assert it["goal_value"] == it["ratio"] and it["goal_met"] == (it["ratio"] >= grid.GRID_SPEEDUP_GOAL)
    out = grid.time_grid(n_quartets=200, n_tracks=30, dim=6, bootstrap=20, loop_quartets=20, repeats=1)
    assert out["agree"] and out["cells"] == 27 and out["vectorised_s"] > 0 and out["loop_s"] > 0


def test_bench_training_items_against_the_reference():
    items = training.bench_training(TINY_MODELS, 16, 20, names=["model1"], batch=6, steps=1, repeats=2,
                                 threads=1, cuda=False, progress=False)
    assert [it["item"] for it in items] == ["train.cpu.model3", "train.cpu.model1"]  # reference added
    for it in items:
        check_item(it)
        assert it["ours"]["rate_unit"] == "segments/s"
        assert it["ours"]["rate"] == pytest.approx(6 / it["ours"]["median_s"])
        assert it["alt"]["runs_s"] == items[0]["ours"]["runs_s"]  # model3's own runs
    assert items[0]["ratio"] == 1.0
    with pytest.raises(ValueError, match="unknown model"):
        training.bench_training(TINY_MODELS, 16, 20, names=["nope"], cuda=False, progress=False)


def test_contrastive_step_times():
    runs = training.train_step_times(TINY_MODELS["model1"], 16, 20, batch=4, steps=1, repeats=2, loss="contrastive")
    assert len(runs) == 2 and min(runs) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_training_cuda_with_and_without_amp():
    items = training.bench_training(TINY_MODELS, 16, 20, batch=6, steps=1, repeats=1, progress=False)
    keys = {it["item"] for it in items}
    assert {"train.cuda.model1", "train.cuda_amp.model1", "train.cuda_amp.model3"} <= keys
    for it in items:
        check_item(it)


def test_bench_musicnn_item():
    (it,) = extraction.bench_musicnn(seconds=3.0, repeats=1)
    assert it["item"] == "embed.1core.musicnn" and it["group"] == "musicnn"
    assert it["ours"]["rate_unit"] == "x real time"
    assert it["ours"]["rate"] == pytest.approx(3.0 / it["ours"]["median_s"])
    assert 0 < it["extra"]["frontend_share"] < 1


def test_bench_queries_items():
    base = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    items = queries.bench_queries(base, "test vectors", n_synthetic=2000, n_queries=10, brute_timed=5,
                                threads=1, progress=False)
    assert [it["item"] for it in items] == ["queries.library.exact", "queries.library.hnsw",
                                            "queries.synthetic.exact", "queries.synthetic.hnsw"]
    for it in items:
        check_item(it)
        assert it["alt"]["recall_at_10"] == 1.0 and it["extra"]["base"] == "test vectors"
    assert items[2]["extra"]["n"] == 2000


def test_gaussian_mixture_follows_the_base_cloud():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 8)) * np.array([5, 1, 1, 1, 0.1, 0.1, 0.1, 0.1])
    synth = queries.gaussian_mixture(base, 20_000, np.random.default_rng(1), spread=0.25)
    assert synth.shape == (20_000, 8) and synth.dtype == np.float32
    # each point lies near some base row, and the spread follows the base's own shape
    nearest = np.sqrt(((synth[:500, None, :] - base[None]) ** 2).sum(-1)).min(axis=1)
    assert np.median(nearest) < 0.5 * np.median(np.sqrt(((base[:, None] - base[None]) ** 2).sum(-1)))
    assert synth[:, 0].std() > 10 * synth[:, 4].std()


def test_time_queries_small():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 16)) * 2  # a few clusters, so that neighbours mean something
    emb = (centres[rng.integers(5, size=200)] + rng.standard_normal((200, 16))).astype(np.float32)
    out = queries.time_queries(emb, n_synthetic=3000, n_queries=10, progress=False)
    for where in ("library", "synthetic"):
        r = out[where]
        assert r["faiss_hnsw"]["recall_at_10"] >= 0.9 and r["numpy"]["recall_at_10"] == 1.0
        assert r["faiss_exact"]["median_ms"] > 0 and r["faiss_hnsw"]["build_s"] >= 0
    assert out["synthetic"]["n"] == 3000
    # numpy's brute force against a plain loop
    q = emb[:3] + 0.1
    d2, ids = queries.numpy_knn(emb, (emb * emb).sum(axis=1), q, 5)
    for row in range(3):
        loop = sorted(range(len(emb)), key=lambda j: float(((emb[j] - q[row]) ** 2).sum()))[:5]
        assert list(ids[row]) == loop


def test_base_embeddings_fallbacks(tmp_path):
    emb, source = queries.base_embeddings(tmp_path / "index", tmp_path / "features", tmp_path / "best.pt")
    assert emb.shape == (240, 128) and "Gaussian" in source
    params = config.from_dict(TINY_PARAMS)
    fp = params.features
    fe = features.frontend("db", fp)
    # three whole-track log-mels of 2, 1 and 3 segments' length
    frames = [2 * fe.segment_frames, fe.segment_frames, 3 * fe.segment_frames]
    array = np.random.default_rng(0).standard_normal((sum(frames), fp.n_mels)).astype(features.STORE_DTYPE)
    table = pd.DataFrame({"track_id": ["a", "b", "c"], "start": np.cumsum([0, *frames[:-1]]), "frames": frames})
    features.save(tmp_path / "features", features.Spectra(array, table, fe, fp))
    emb, source = queries.base_embeddings(tmp_path / "index", tmp_path / "features", tmp_path / "best.pt", params)
    assert emb.shape == (3, 128) and "untrained model1" in source


def test_read_stage_times(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages:\n  corpus: {cmd: x}\n  ingest: {cmd: x}\n  train: {cmd: x}\n")
    f = tmp_path / "times.txt"
    f.write_text("# dvc repro -s -f, timed\ncorpus 10.5\ningest 0:04.50\n"
                 "Command exited with non-zero status 1\ncorpus 12.5\nextra 1\n\ntotal 40\n")
    out = harness.read_stage_times(f, tmp_path / "dvc.yaml")
    stages = {s["stage"]: s for s in out["stages"]}
    assert stages["corpus"]["median_s"] == 11.5 and stages["corpus"]["runs_s"] == [10.5, 12.5]
    assert stages["ingest"]["median_s"] == 4.5
    assert out["stages_sum_s"] == 17.0 and out["total_s"] == 40 and out["outside_stages_s"] == 23.0
    assert sum(s["share"] for s in out["stages"]) == pytest.approx(1.0)
    assert out["missing"] == ["train"] and out["unknown"] == ["extra"] and out["skipped_lines"] == [4]
    assert harness._seconds("1:00:02") == 3602.0
    (tmp_path / "empty.txt").write_text("nothing here\n")
    with pytest.raises(ValueError, match="empty.txt"):
        harness.read_stage_times(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        harness.read_stage_times(tmp_path / "nope.txt")


def test_run_save_and_print(tmp_path):
    f = tmp_path / "times.txt"
    f.write_text("corpus 3\ntrain 9\n")
    sizes = bench.Sizes(n_quartets=200, bootstrap=20, loop_quartets=20)
    params = config.load(ROOT / "params.yaml")
    result = bench.run(["grid", "pipeline"], sizes, params, repeats=1, stage_times=f, root=ROOT, progress=False)
    path = harness.save(result, tmp_path / "out" / "bench.json")
    back = json.loads(path.read_text())
    assert set(back) == {"machine", "settings", "items", "pipeline", "ratios"}
    assert set(back["ratios"]) == {it["item"] for it in back["items"]}
    for it in back["items"]:
        assert back["ratios"][it["item"]]["ratio"] == it["ratio"]
    assert back["machine"]["cpu_model"] and back["settings"]["repeats"] == 1
    assert [it["item"] for it in back["items"]] == ["grid"] and back["pipeline"]["stages_sum_s"] == 12
    table = harness.format_table(back)
    assert "grid" in table and "ratio" in table and "train" in table
    assert ("GOALS MISSED" in table) == (back["items"][0]["goal_met"] is False)
    md = harness.markdown_table(back)
    assert md.startswith("| benchmark |") and "| train | 9.0 s | 75% |" in md
    with pytest.raises(ValueError, match="unknown benchmark"):
        bench.run(["nope"], sizes, params)


def test_cli_pipeline_only(tmp_path):
    f = tmp_path / "times.txt"
    f.write_text("features 2.5\n")
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--out", str(out), "--only", "pipeline",
                           "--stage-times", str(f)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["pipeline"]["stages"][0]["stage"] == "features"
    assert "| features | 2.5 s |" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--out", str(out), "--only", "pipeline"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--stage-times" in bad.stderr


def test_bench_scaling_items_at_a_tiny_size():
    from benchmarks.scaling import bench_scaling

    flat, added = bench_scaling(config.load(ROOT / "params.yaml"), songs=2, seconds=3.0, factors=(1, 2),
                                workers=1)
    for it in (flat, added):
        check_item(it)
    extra = flat["extra"]
    assert extra["fixed_start_s"] == min(extra["fixed_start_runs_s"]) > 0
    runs = extra["runs"]
    assert (runs[1]["songs"], runs[2]["songs"]) == (2, 4)
    beyond = extra["per_song_beyond_start_s"]
    assert flat["goal_value"] == pytest.approx(max(beyond.values()) / min(beyond.values()), rel=1e-3)
    assert flat["goal_met"] == (flat["goal_value"] <= 1.2)
    assert added["extra"]["runs"]["added"]["songs"] == 1 and added["goal_met"] == (added["goal_value"] <= 0.05)
