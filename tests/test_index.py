"""The similar-song index: each distance's faiss form against the grid's own function, HNSW
recall, saving and loading, and a tiny real library (tones, a model trained for a few steps)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from songspace import Library, distances, index, scalers, train
from songspace.audio import AudioError
from tests.conftest import write_tone
from tests.tiny import make_project

K = 10


# ---------------------------------------------------------------- helpers


def random_library(n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    # a few clusters plus noise, so that neighbours mean something
    centres = rng.standard_normal((5, d)) * 2
    emb = (centres[rng.integers(5, size=n)] + rng.standard_normal((n, d))).astype(np.float32)
    tracks = pd.DataFrame({"track_id": [f"t{i:03d}" for i in range(n)],
                           "label": [f"c{i % 5}" for i in range(n)]})
    train_mask = rng.random(n) < 0.6
    queries = (centres[rng.integers(5, size=12)] + rng.standard_normal((12, d))).astype(np.float32)
    return emb, tracks, train_mask, queries


def grid_reference(emb, train_mask, queries, distance, scaler):
    """The grid's distances (q, n) of the queries to every track, fitted as evaluation fits."""
    tr, lib, q = scalers.fit_apply(scaler, emb[train_mask], emb, queries)
    ctx = distances.fit_context(distance, tr)
    return distances.pairwise(distance, q, lib, **ctx)


def assert_same_ranking(rows, dist, full, k=K, tol=1e-5):
    """The index's answer (rows, dist) (q, k) is a brute-force top-k of full (q, n), ties aside."""
    for j in range(len(full)):
        ref = full[j]
        order = np.argsort(ref, kind="stable")
        # distances: the grid's own values at the returned rows, and the k smallest overall
        np.testing.assert_allclose(dist[j], ref[rows[j]], rtol=tol, atol=tol)
        np.testing.assert_allclose(dist[j], ref[order[:k]], rtol=tol, atol=tol)
        # ids: every position whose distance is clear of its neighbours (no tie) agrees
        sorted_d = ref[order]
        for pos in range(k):
            lo = sorted_d[pos - 1] if pos > 0 else -np.inf
            hi = sorted_d[pos + 1] if pos + 1 < len(sorted_d) else np.inf
            if sorted_d[pos] - lo > tol and hi - sorted_d[pos] > tol:
                assert rows[j, pos] == order[pos], f"query {j}, rank {pos + 1}"


# ---------------------------------------------------------------- faiss forms


@pytest.mark.parametrize("scaler", scalers.NAMES)
@pytest.mark.parametrize("distance", distances.NAMES)
def test_exact_index_ranks_as_the_grid_distance(distance, scaler):
    emb, tracks, mask, queries = random_library()
    built = index.SongIndex.build(emb, tracks, mask, distance, scaler, progress=False)
    assert built.meta["exact"] and not built.approximate
    rows, dist = built.search(queries, K)
    assert_same_ranking(rows, dist, grid_reference(emb, mask, queries, distance, scaler))


def test_brute_force_chunks_agree_with_one_block(monkeypatch):
    emb, tracks, mask, queries = random_library(n=257)
    whole = index.SongIndex.build(emb, tracks, mask, "kulsinski", "StandardScaler", progress=False)
    expected = whole.search(queries, K)
    monkeypatch.setattr(index.forms, "BRUTE_CHUNK", 7)
    got = whole.search(queries, K)
    np.testing.assert_array_equal(got[1], expected[1])
    assert_same_ranking(*got, grid_reference(emb, mask, queries, "kulsinski", "StandardScaler"))


APPROXIMABLE = [d for d in distances.NAMES if index.FORMS[d][1] != "brute"]


@pytest.mark.parametrize("distance", APPROXIMABLE)
def test_hnsw_index_measures_its_recall_and_returns_grid_distances(distance):
    emb, tracks, mask, queries = random_library(n=600)
    built = index.SongIndex.build(emb, tracks, mask, distance, "StandardScaler", approximate_above=100,
                                  hnsw_m=16, hnsw_ef_search=64, progress=False)
    assert built.approximate and not built.meta["exact"]
    assert "HNSW" in built.meta["searcher"]
    recall = built.meta["recall"]
    assert recall["queries"] == index.RECALL_SAMPLE and recall["recall_at_k"] >= 0.9
    rows, dist = built.search(queries, K)
    full = grid_reference(emb, mask, queries, distance, "StandardScaler")
    np.testing.assert_allclose(dist, np.take_along_axis(full, rows, axis=1), rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(dist, axis=1) >= -1e-6)  # nearest first


@pytest.mark.parametrize("distance", APPROXIMABLE)
def test_rescore_gives_the_grid_distance(distance):
    emb, tracks, mask, queries = random_library(n=80)
    built = index.SongIndex.build(emb, tracks, mask, distance, "StandardScaler", progress=False)
    ids = np.random.default_rng(1).integers(-1, 80, size=(len(queries), 6))
    got = index.rescore(distance, built.vectors(queries), built.vectors(emb), ids, built.ctx, built.dim)
    full = grid_reference(emb, mask, queries, distance, "StandardScaler")
    for j in range(len(queries)):
        for c in range(6):
            want = np.inf if ids[j, c] < 0 else full[j, ids[j, c]]
            assert got[j, c] == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_kulsinski_stays_exact_above_the_threshold():
    emb, tracks, mask, queries = random_library()
    built = index.SongIndex.build(emb, tracks, mask, "kulsinski", "MinMaxScaler", approximate_above=10,
                                  progress=False)
    assert built.meta["exact"] and built.meta["recall"] is None
    assert "brute force" in built.meta["searcher"]


def test_recall_at_k_against_a_loop():
    rng = np.random.default_rng(3)
    exact_d = np.sort(rng.random((20, 5)), axis=1)
    approx_d = np.sort(rng.random((20, 5)), axis=1)
    approx_i = rng.integers(-1, 50, size=(20, 5))
    hits = 0
    for j in range(20):
        for c in range(5):
            hits += approx_i[j, c] >= 0 and approx_d[j, c] <= exact_d[j, 4] * (1 + index.RECALL_RTOL) + 1e-9
    assert index.recall_at_k(exact_d, approx_d, approx_i, 5) == pytest.approx(hits / 100)


def test_search_excludes_rows_and_pads_short_libraries():
    emb, tracks, mask, queries = random_library(n=12)
    built = index.SongIndex.build(emb, tracks, mask, "euclidean", "StandardScaler", progress=False)
    first, _ = built.search(queries[:1], 3)
    rows, dist = built.search(queries[:1], 3, exclude=[{int(first[0, 0])}])
    assert first[0, 0] not in rows[0] and list(rows[0, :2]) == list(first[0, 1:])
    rows, dist = built.search(queries[:1], 20)
    assert (rows[0, :12] >= 0).all() and (rows[0, 12:] == -1).all() and np.isnan(dist[0, 12:]).all()


@pytest.mark.parametrize("distance,approx", [("minkowski", True), ("hamming", True), ("kulsinski", False),
                                             ("seuclidean", False), ("cosine", True)])
def test_save_and_load_give_the_same_answers(tmp_path, distance, approx):
    emb, tracks, mask, queries = random_library(n=400)
    built = index.SongIndex.build(emb, tracks, mask, distance, "MinMaxScaler",
                                  approximate_above=100 if approx else 10**6, hnsw_ef_search=40,
                                  progress=False)
    built.save(tmp_path / "ix")
    loaded = index.SongIndex.load(tmp_path / "ix")
    assert loaded.meta == json.loads(json.dumps(built.meta))
    np.testing.assert_allclose(loaded.scaler.transform(emb.astype(float)), built.scaler.transform(emb.astype(float)))
    for a, b in zip(built.search(queries, K), loaded.search(queries, K)):
        np.testing.assert_array_equal(a, b)
    if approx:
        assert loaded.searcher.hnsw.efSearch == 40


def test_add_extends_the_index_and_new_tracks_are_found():
    emb, tracks, mask, queries = random_library(n=50)
    built = index.SongIndex.build(emb, tracks, mask, "cosine", "StandardScaler", progress=False)
    new = queries[:2] * 1.0
    built.add(new, pd.DataFrame({"track_id": ["n0", "n1"], "label": ["x", "x"]}))
    rows, dist = built.search(queries[:2], 1)
    assert list(built.tracks["track_id"].iloc[rows[:, 0]]) == ["n0", "n1"]
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-6)
    assert built.meta["n_tracks"] == 52 and built.meta["added_tracks"] == 2
    with pytest.raises(ValueError, match="already in the index"):
        built.add(new[:1], pd.DataFrame({"track_id": ["n0"]}))


def test_the_scaler_is_refitted_on_its_training_rows_when_loaded(tmp_path):
    emb, tracks, mask, queries = random_library(n=60)
    built = index.SongIndex.build(emb, tracks, mask, "euclidean", "StandardScaler", progress=False)
    built.add(queries[:3] * 1.0, pd.DataFrame({"track_id": ["n0", "n1", "n2"]}))
    built.save(tmp_path / "ix")
    loaded = index.SongIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(loaded.fitted_on, np.concatenate([mask, np.zeros(3, bool)]))
    x = np.concatenate([emb, queries]).astype(float)
    np.testing.assert_array_equal(loaded.scaler.transform(x), built.scaler.transform(x))
    state = tmp_path / "ix" / index.FILES["state"]
    with np.load(state) as z:
        arrays = {k: z[k] for k in z.files}
    for bad in (np.zeros(63, bool), np.ones(62, bool), arrays["fitted_on"].astype(np.uint8)):
        with state.open("wb") as f:
            np.savez(f, **{**arrays, "fitted_on": bad})
        with pytest.raises(index.IndexNotFound, match="inconsistent index"):
            index.SongIndex.load(tmp_path / "ix")


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(index.IndexNotFound, match="dvc repro index"):
        index.SongIndex.load(tmp_path / "nowhere")


def test_resolve_cell_reads_the_evaluation(tmp_path):
    assert index.resolve_cell("cosine", "Normalizer", None)[:2] == ("cosine", "Normalizer")
    with pytest.raises(KeyError, match="choose one of"):
        index.resolve_cell("cosinus", "Normalizer", None)
    with pytest.raises(index.LibraryError, match="dvc repro evaluate"):
        index.resolve_cell("best", "best", tmp_path / "eval.json")
    result = {"headline": {"best_distance": "correlation", "best_scaler": "MinMaxScaler"},
              "grid": [{"distance": "euclidean", "scaler": "Normalizer", "accuracy": 0.7},
                       {"distance": "euclidean", "scaler": "StandardScaler", "accuracy": 0.6},
                       {"distance": "correlation", "scaler": "MinMaxScaler", "accuracy": 0.8}]}
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(result))
    assert index.resolve_cell("best", "best", path)[:2] == ("correlation", "MinMaxScaler")
    assert index.resolve_cell("euclidean", "best", path)[:2] == ("euclidean", "Normalizer")
    assert index.resolve_cell("best", "StandardScaler", path)[:2] == ("euclidean", "StandardScaler")


# ---------------------------------------------------------------- a tiny real library


def build_tiny_library(root: Path) -> dict:
    """Tone tracks of two labels, a model1 trained a few steps, and its index under root."""
    params, paths = make_project(root, index={"distance": "cosine", "scaler": "StandardScaler"})
    data = train.load_data(paths["features"], paths["groundtruth"], paths["tracks"], paths["views"])
    train.fit(params, data, root / "models", progress=False)
    built = index.build_from_pipeline(paths["features"], paths["tracks"], paths["groundtruth"] / "splits.csv",
                                      root / "models" / "best.pt", params, eval_json=None, progress=False)
    built.save(root / "index")
    return {"root": root, "index": root / "index", "model": root / "models" / "best.pt",
            "tracks": pd.read_csv(paths["tracks"], dtype=str), "params": params, "paths": paths}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_library(tmp_path_factory.mktemp("library"))


def folder_bytes(folder: Path) -> dict:
    """Each file under folder (relative posix path) -> its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rebuilding_the_index_on_unchanged_inputs_writes_the_same_bytes(tiny, tmp_path):
    paths = tiny["paths"]
    again = index.build_from_pipeline(paths["features"], paths["tracks"], paths["groundtruth"] / "splits.csv",
                                      tiny["model"], tiny["params"], eval_json=None, progress=False)
    again.save(tmp_path / "index")
    first, second = folder_bytes(tiny["index"]), folder_bytes(tmp_path / "index")
    assert sorted(first) == sorted(second) and "meta.json" in first
    assert [name for name in first if first[name] != second[name]] == []
    assert again.timings["build_seconds"] >= 0 and again.timings["device"] == "cpu"
    assert not {"built_at", "build_seconds", "embed_seconds", "device"} & set(again.meta)


def test_library_track_is_not_its_own_neighbour_and_labels_cluster(tiny):
    lib = Library.open(tiny["index"], tiny["model"])
    tracks = tiny["tracks"]
    label = dict(zip(tracks["track_id"], tracks["label"]))
    same, total = 0, 0
    for t in tracks["track_id"]:
        found = lib.similar(t, k=3)
        assert len(found) == 3 and t not in [n.track_id for n in found]
        assert all(isinstance(n.distance, float) for n in found)
        same += sum(label[n.track_id] == label[t] for n in found)
        total += 3
    chance = 5 / 11  # other tracks of the same label among the other 11
    assert same / total >= chance + 0.35


def test_a_file_in_the_library_by_path_or_bytes_is_excluded(tiny, tmp_path):
    lib = Library.open(tiny["index"], tiny["model"])
    row = tiny["tracks"].iloc[0]
    by_path = lib.similar(row["path"], k=11)
    assert row["track_id"] not in [n.track_id for n in by_path] and len(by_path) == 11
    copy = tmp_path / "elsewhere" / "renamed.wav"
    copy.parent.mkdir()
    shutil.copyfile(row["path"], copy)
    by_bytes = lib.similar(copy, k=11, as_frame=True)
    assert row["track_id"] not in set(by_bytes["track_id"])
    assert list(by_bytes.columns) == ["rank", "track_id", "name", "label", "distance", "similarity", "path"]
    # a song outside the library: everything may be returned, nearest first
    outside = write_tone(tmp_path / "new.wav", freqs=(230.0, 340.0), seconds=1.5, seed=11)
    found = lib.similar(outside, k=12)
    assert len(found) == 12 and found[0].label == "low"
    assert [n.distance for n in found] == sorted(n.distance for n in found)


def test_add_then_similar_finds_the_added_song(tiny, tmp_path):
    work = tmp_path / "index"
    shutil.copytree(tiny["index"], work)
    lib = Library.open(work, tiny["model"])
    song = write_tone(tmp_path / "added" / "middle.wav", freqs=(700.0, 1050.0), seconds=1.5, seed=1)
    report = lib.add([song], label="middle")
    assert report["added"].tolist() == [True] and report["track_id"].tolist() == ["middle"]
    again = lib.add([song])  # same bytes: not added twice
    assert again["added"].tolist() == [False]
    reopened = Library.open(work, tiny["model"])
    assert reopened.index.n_tracks == len(tiny["tracks"]) + 1
    near = write_tone(tmp_path / "query.wav", freqs=(700.0, 1050.0), seconds=1.5, seed=2)
    first = reopened.similar(near, k=1)[0]
    assert first.track_id == "middle" and first.label == "middle"
    assert "middle" not in [n.track_id for n in reopened.similar(song, k=5)]  # itself, by bytes


def test_undecodable_file_leaves_the_index_unchanged(tiny, tmp_path):
    work = tmp_path / "index"
    shutil.copytree(tiny["index"], work)
    lib = Library.open(work, tiny["model"])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    good = write_tone(tmp_path / "good.wav", freqs=(500.0,), seconds=1.5)
    with pytest.raises(AudioError, match="bad.wav"):
        lib.add([good, bad])
    assert Library.open(work, tiny["model"]).index.n_tracks == len(tiny["tracks"])
    with pytest.raises(AudioError, match="bad.wav"):
        lib.similar(bad)
    with pytest.raises(index.UnknownTrack, match="no such file"):
        lib.similar(tmp_path / "missing.wav")


def test_stale_index_is_refused(tiny, tmp_path):
    other = tmp_path / "other.pt"
    ckpt = torch.load(tiny["model"], weights_only=False)
    ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, other)
    with pytest.raises(index.StaleIndex, match="dvc repro index"):
        Library.open(tiny["index"], other)
    info = Library.open(tiny["index"], other, check_model=False).info()
    assert info["model_status"].startswith("STALE")
    fresh = Library.open(tiny["index"], tiny["model"]).info()
    assert fresh["model_status"] == "up to date" and fresh["model"] == "model1"
    assert fresh["tracks"] == len(tiny["tracks"]) and fresh["distance"] == "cosine" and fresh["exact"]


def test_embed_matches_the_pipeline_embedding(tiny):
    lib = Library.open(tiny["index"], tiny["model"])
    row = 3
    path = lib.index.tracks["path"].iloc[row]
    emb = lib.embed([path], progress=False)
    assert emb.shape == (1, lib.index.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[0], lib.index.embeddings[row], rtol=1e-4, atol=1e-4)
