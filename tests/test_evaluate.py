"""The quartet grid against a per-quartet scipy loop, ties, bootstrap, headline, baselines, retrieval."""
import json

import numpy as np
import pytest
import torch
from scipy.fft import dct
from scipy.spatial import distance as sd
from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler

from songspace import distances, evaluate
from songspace.config import EvaluateParams

SKLEARN = {"MinMaxScaler": MinMaxScaler, "StandardScaler": StandardScaler, "Normalizer": Normalizer}


def kulsinski_loop(a, b):
    ctt = sum(1 for x, y in zip(a, b) if x and y)
    ctf = sum(1 for x, y in zip(a, b) if x and not y)
    cft = sum(1 for x, y in zip(a, b) if y and not x)
    return (ctf + cft - ctt + len(a)) / (ctf + cft + len(a))


def loop_score(dists, odd):
    """One quartet's score from its three pair distances, by the documented tie rule."""
    dmin = min(dists)
    tied = [d - dmin <= evaluate.TIE_ATOL + evaluate.TIE_RTOL * abs(dmin) for d in dists]
    return tied[odd] / sum(tied), sum(tied) > 1


def loop_grid(train, test, quartets, odd, p=3.0):
    """Scores (q, 27) and ties, one quartet and one pair at a time with scipy."""
    scores = np.zeros((len(quartets), len(evaluate.CELLS)))
    ties = np.zeros_like(scores, dtype=bool)
    for c, (name, scaler) in enumerate(evaluate.CELLS):
        fitted = SKLEARN[scaler]().fit(train)
        tr, te = fitted.transform(train), fitted.transform(test)
        if name == "minkowski":
            fn = lambda a, b: sd.minkowski(a, b, p=p)  # noqa: E731
        elif name == "seuclidean":
            var = np.var(tr, axis=0, ddof=1)
            fn = lambda a, b: sd.seuclidean(a, b, var)  # noqa: E731
        elif name in ("hamming", "kulsinski"):
            med = np.median(tr, axis=0)
            base = sd.hamming if name == "hamming" else kulsinski_loop
            fn = lambda a, b, base=base, med=med: base(a > med, b > med)  # noqa: E731
        else:
            fn = getattr(sd, name)
        for i, ((a, b, c3), o) in enumerate(zip(quartets, odd)):
            songs = te[[a, b, c3]]
            dists = [fn(songs[1], songs[2]), fn(songs[0], songs[2]), fn(songs[0], songs[1])]
            scores[i, c], ties[i, c] = loop_score(dists, o)
    return scores, ties


@pytest.fixture(scope="module")
def symmetric_data():
    """Embeddings whose statistics are the same in every dimension, plus cyclic triples.

    Training rows come in all 6 permutations of their 3 coordinates, so every scaler and
    every fitted context treats the dimensions alike; a test triple (x, Px, P^2 x), P a
    cyclic shift, is then equidistant under all nine distances: an exact three-way tie.
    """
    rng = np.random.default_rng(3)
    base = rng.standard_normal((8, 3)) * [1.0, 2.0, 0.5] + [0.3, -0.2, 1.0]
    perms = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    train = np.vstack([base[:, list(pm)] for pm in perms])
    x = rng.standard_normal((5, 3))
    cyc = np.vstack([x, np.roll(x, 1, axis=1), np.roll(x, 2, axis=1)])  # track i, i+5, i+10
    test = np.vstack([cyc, rng.standard_normal((15, 3))])
    quartets, odd = evaluate.random_quartets(len(test), 120, rng)
    triples = np.array([[i, i + 5, i + 10] for i in range(5)])
    quartets = np.vstack([quartets, triples])
    odd = np.concatenate([odd, rng.integers(0, 3, len(triples))])
    return train, test, quartets, odd


@pytest.mark.parametrize("path", ["rows", "matrix", "auto"])
def test_vectorised_grid_equals_a_per_quartet_scipy_loop(symmetric_data, path):
    train, test, quartets, odd = symmetric_data
    scores, ties = evaluate.cell_scores(train, test, quartets, odd, path=path)
    ref_scores, ref_ties = loop_grid(train, test, quartets, odd)
    for c, cell in enumerate(evaluate.CELLS):
        np.testing.assert_allclose(scores[:, c], ref_scores[:, c], atol=1e-12, err_msg=str(cell))
        np.testing.assert_array_equal(ties[:, c], ref_ties[:, c], err_msg=str(cell))
    # the cyclic triples tie three ways in every cell
    np.testing.assert_allclose(scores[-5:], 1 / 3)
    assert ties[-5:].all()


def test_grid_rows_carry_accuracy_ci_and_tie_rate(symmetric_data):
    train, test, quartets, odd = symmetric_data
    rows = evaluate.grid(train, test, quartets, odd, bootstrap=200, seed=1)
    scores, ties = evaluate.cell_scores(train, test, quartets, odd)
    assert [(r["distance"], r["scaler"]) for r in rows] == list(evaluate.CELLS)
    for c, r in enumerate(rows):
        assert set(r) == {"distance", "scaler", "accuracy", "ci_low", "ci_high", "n", "tie_rate"}
        assert r["accuracy"] == pytest.approx(scores[:, c].mean())
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
        assert r["tie_rate"] == pytest.approx(ties[:, c].mean())
        assert r["n"] == len(quartets)


def test_ties_score_the_expected_accuracy_of_a_random_tie_break():
    pair = np.array([
        [1.0, 1.0, 1.0],            # three-way tie: 1/3 whatever the answer
        [1.0, 1.0, 2.0],            # right pair among two tied: 1/2
        [1.0, 1.0, 2.0],            # right pair not among the tied: 0
        [2.0, 1.0, 3.0],            # clear answer, right
        [2.0, 1.0, 3.0],            # clear answer, wrong
        [1.0, 1.0 + 1e-13, 5.0],    # rounding-level difference: a tie
        [1.0, 1.001, 5.0],          # a real difference: no tie
        [0.0, 0.0, 1e-20],          # zero distances tie (absolute tolerance)
    ])
    odd = np.array([2, 0, 2, 1, 0, 1, 1, 2])
    scores, tied = evaluate.tie_scores(pair, odd)
    np.testing.assert_allclose(scores, [1 / 3, 1 / 2, 0, 1, 0, 1 / 2, 0, 1 / 3])
    np.testing.assert_array_equal(tied.sum(1), [3, 2, 2, 1, 1, 2, 1, 3])


def test_exact_geometric_ties_through_the_grid():
    """Three corners of an equilateral triangle and a duplicated song."""
    train = np.random.default_rng(0).standard_normal((20, 3))
    test = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 1.0, 0], [5.0, 5.0, 5.0]])
    # (0, 1, 2): equilateral; (4, 1, 3): songs 1 and 3 are identical, 4 is far -> clear
    # (0, 1, 3) under euclidean: d(1,3) = 0 closest -> odd is song 0
    quartets = np.array([[0, 1, 2], [4, 1, 3], [0, 1, 3]])
    odd = np.array([0, 0, 0])
    assert evaluate.odd_one_out_accuracy(test, quartets[:1], odd[:1], "euclidean") == pytest.approx(1 / 3)
    assert evaluate.odd_one_out_accuracy(test, quartets[1:], odd[1:], "euclidean") == 1.0


def test_bootstrap_equals_resampling_quartet_indices():
    rng = np.random.default_rng(0)
    scores = rng.choice([0.0, 1 / 3, 0.5, 1.0], size=(300, 4))
    b = 50
    means = evaluate.bootstrap_means(scores, b, seed=7)
    idx = np.random.default_rng(7).integers(0, 300, size=(b, 300))
    np.testing.assert_allclose(means, scores[idx].mean(axis=1), rtol=0, atol=1e-15)
    # general scores (not multiples of 1/6) take the float64 path: same resamples
    odd_scores = rng.random((300, 2))
    np.testing.assert_allclose(evaluate.bootstrap_means(odd_scores, b, seed=7),
                               odd_scores[idx].mean(axis=1), atol=1e-12)
    # one column alone sees the same resamples as inside a matrix (paired bootstrap)
    np.testing.assert_allclose(evaluate.bootstrap_means(scores[:, 2], b, 7), means[:, 2])
    np.testing.assert_array_equal(evaluate.bootstrap_means(scores, b, 7), means)
    assert not np.array_equal(evaluate.bootstrap_means(scores, b, 8), means)


def test_bootstrap_ci_contains_the_accuracy_and_narrows_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for q in (100, 10_000):
        scores = (rng.random(q) < 0.6).astype(float)
        lo, hi = evaluate.percentile_ci(evaluate.bootstrap_means(scores, 1000, 0), 0.95)
        assert lo < scores.mean() < hi
        widths.append(hi - lo)
        # close to the normal approximation 2 * 1.96 * sqrt(p (1 - p) / q)
        assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.24 / q), rel=0.2)
    assert widths[1] < widths[0] / 5


CELLS3 = (("a", "s"), ("b", "s"), ("c", "s"))


def headline_of(scores, b=1000):
    return evaluate.headline(scores, evaluate.bootstrap_means(scores, b, 0), 0.95, cells=CELLS3)


def test_headline_best_clearly_above_runner_up_and_chance():
    rng = np.random.default_rng(0)
    q = 1000
    best = (rng.random(q) < 0.8).astype(float)
    nxt = np.where(rng.random(q) < 0.3, 0.0, best)  # the runner-up loses 30% of the best's hits
    worst = np.full(q, 1 / 3)
    h = headline_of(np.stack([nxt, best, worst], 1))
    assert (h["best_distance"], h["next_distance"]) == ("b", "a")
    assert h["significant_vs_next"] and h["diff_ci_low"] > 0
    assert h["above_chance"] and h["ci_low"] > 1 / 3
    assert h["equivalent_cells"] == ""
    for key in ("accuracy", "ci_low", "ci_high", "next_accuracy", "diff_ci_low"):
        assert isinstance(h[key], float)


def test_headline_close_runner_up_is_not_significant_and_identical_cells_are_grouped():
    rng = np.random.default_rng(0)
    q = 1000
    best = (rng.random(q) < 0.5).astype(float)
    nxt = best.copy()
    flip = np.flatnonzero(best == 1)[:2]
    nxt[flip] = 0.0  # two quartets apart
    h = headline_of(np.stack([best, nxt, best.copy()], 1))
    assert h["best_distance"] == "a"
    assert h["equivalent_cells"] == "c/s"  # the very same answers: grouped, not compared
    assert h["next_distance"] == "b"
    assert not h["significant_vs_next"] and h["diff_ci_low"] <= 0 <= h["diff_ci_high"]


def test_headline_at_chance_is_not_above_chance():
    rng = np.random.default_rng(0)
    scores = rng.choice([0.0, 1.0], size=(200, 3), p=[2 / 3, 1 / 3])
    h = headline_of(scores)
    assert h["ci_low"] < 1 / 3 < h["ci_high"]
    assert not h["above_chance"]


# ---------------------------------------------------------------- baselines


def test_handcrafted_features_match_a_loop_and_librosa_mfcc():
    import librosa

    rng = np.random.default_rng(0)
    logmel = rng.standard_normal((7, 24, 11)) * 10 - 40
    seg = np.array([0, 0, 1, 2, 2, 2, 1])
    feats = evaluate.handcrafted_features(logmel, seg)
    assert feats["logmel_stats"].shape == (3, 48)
    assert feats["mfcc_stats"].shape == (3, 40)
    for t in range(3):
        frames = np.concatenate(list(logmel[seg == t]), axis=1)  # (n_mels, all frames)
        np.testing.assert_allclose(feats["logmel_stats"][t], np.r_[frames.mean(1), frames.std(1)])
        mfcc = librosa.feature.mfcc(S=frames, n_mfcc=20)  # DCT-II (ortho) over the mel axis
        np.testing.assert_allclose(mfcc, dct(frames, type=2, axis=0, norm="ortho")[:20], atol=1e-9)
        np.testing.assert_allclose(feats["mfcc_stats"][t], np.r_[mfcc.mean(1), mfcc.std(1)], atol=1e-9)


def test_handcrafted_baselines_split_train_and_test():
    rng = np.random.default_rng(0)
    logmel = rng.standard_normal((10, 24, 5))
    seg = np.repeat(np.arange(5), 2)
    out = evaluate.handcrafted_baselines(logmel, seg, train_tracks=[4, 0], test_tracks=[2])
    full = evaluate.handcrafted_features(logmel, seg)
    np.testing.assert_allclose(out["mfcc_stats"][0], full["mfcc_stats"][[4, 0]])
    np.testing.assert_allclose(out["logmel_stats"][1], full["logmel_stats"][[2]])
    with pytest.raises(ValueError, match="no segments"):
        evaluate.handcrafted_baselines(logmel, seg, train_tracks=[0], test_tracks=[7])


# ---------------------------------------------------------------- retrieval and confusion


def loop_retrieval(dist, labels):
    """p@1, p@10, R-precision, MAP@R by their definitions, one query at a time."""
    p1, p10, rp, mapr = [], [], [], []
    for i in range(len(labels)):
        others = np.array([j for j in range(len(labels)) if j != i])
        order = others[np.argsort(dist[i, others], kind="stable")]
        rel = labels[order] == labels[i]
        r = int(rel.sum())
        if r == 0:
            continue
        p1.append(rel[0])
        p10.append(rel[:10].mean())
        rp.append(rel[:r].mean())
        mapr.append(sum(rel[:k].mean() for k in range(1, r + 1) if rel[k - 1]) / r)
    return np.mean(p1), np.mean(p10), np.mean(rp), np.mean(mapr), len(p1)


@pytest.mark.parametrize("distance,scaler", [("cityblock", "StandardScaler"), ("hamming", "MinMaxScaler"),
                                             ("kulsinski", "Normalizer")])
def test_retrieval_matches_the_metric_definitions(distance, scaler, monkeypatch):
    monkeypatch.setattr(evaluate.labels, "_KNN_BLOCK", 5)  # several query blocks
    rng = np.random.default_rng(0)
    labels = np.array(list("aaaaabbbbbbbcccccccccd"))  # 'd' occurs once: no relevant result
    centres = {k: rng.standard_normal(8) * 2 for k in "abcd"}
    test = np.stack([centres[k] for k in labels]) + rng.standard_normal((len(labels), 8))
    train = rng.standard_normal((30, 8)) * 2
    got = evaluate.retrieval(train, test, labels, distance, scaler)
    fitted = SKLEARN[scaler]().fit(train)
    # AccuracyCalculator ranks float32 copies of the scaled embeddings
    tr, te = fitted.transform(train), fitted.transform(test).astype(np.float32).astype(np.float64)
    ctx = distances.fit_context(distance, tr)
    dist = distances.pairwise(distance, te, te, **ctx)
    p1, p10, rp, mapr, n = loop_retrieval(dist, labels)
    assert got["distance"] == distance and got["scaler"] == scaler
    assert got["n_queries"] == n == len(labels) - 1
    assert got["precision_at_1"] == pytest.approx(p1)
    assert got["precision_at_10"] == pytest.approx(p10)
    assert got["r_precision"] == pytest.approx(rp)
    assert got["map_at_r"] == pytest.approx(mapr)


def test_confusion_counts_the_label_pairs_of_wrong_answers():
    rng = np.random.default_rng(0)
    labels = np.array(["x", "y", "z"])[rng.integers(0, 3, 30)]
    quartets, odd = evaluate.random_quartets(30, 200, rng)
    pair = rng.integers(0, 3, (200, 3)).astype(float)  # small integers: many ties
    names, m = evaluate.confusion_counts(pair, quartets, odd, labels)
    assert names == ["x", "y", "z"]
    ref = np.zeros((3, 3))
    for (a, b, c), o, d in zip(quartets, odd, pair):
        tied = [x == d.min() for x in d]
        for j, (s, t) in enumerate(((b, c), (a, c), (a, b))):
            if tied[j] and j != o:
                i1, i2 = names.index(labels[s]), names.index(labels[t])
                ref[i1, i2] += 1 / sum(tied)
                if i1 != i2:
                    ref[i2, i1] += 1 / sum(tied)
    np.testing.assert_allclose(m, ref)
    scores, _ = evaluate.tie_scores(pair, odd)
    assert np.triu(m).sum() == pytest.approx(len(odd) * (1 - scores.mean()))


def test_odd_one_out_accuracy_matches_a_loop_and_takes_tensors():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((20, 5))
    quartets, odd = evaluate.random_quartets(20, 50, rng)
    ref = np.mean([
        loop_score([sd.cosine(emb[b], emb[c]), sd.cosine(emb[a], emb[c]), sd.cosine(emb[a], emb[b])], o)[0]
        for (a, b, c), o in zip(quartets, odd)
    ])
    assert evaluate.odd_one_out_accuracy(emb, quartets, odd) == pytest.approx(ref)
    tensor = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
    assert evaluate.odd_one_out_accuracy(tensor, quartets, odd) == pytest.approx(ref)
    for name in distances.NAMES:
        assert 0.0 <= evaluate.odd_one_out_accuracy(emb, quartets, odd, name) <= 1.0


def test_bad_quartets_and_embeddings_name_the_problem():
    emb = np.zeros((5, 3))
    with pytest.raises(ValueError, match="outside the 5 test tracks"):
        evaluate.odd_one_out_accuracy(emb, [[0, 1, 5]], [0])
    with pytest.raises(ValueError, match="0, 1 or 2"):
        evaluate.odd_one_out_accuracy(emb, [[0, 1, 2]], [3])
    with pytest.raises(ValueError, match=r"\(q, 3\)"):
        evaluate.odd_one_out_accuracy(emb, [[0, 1]], [0])
    bad = emb.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf .*row 2"):
        evaluate.odd_one_out_accuracy(bad, [[0, 1, 2]], [0])
    with pytest.raises(KeyError, match="unknown distance"):
        evaluate.odd_one_out_accuracy(emb, [[0, 1, 2]], [0], "manhattan")


# ---------------------------------------------------------------- the whole evaluation


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(0)
    n_labels, d = 4, 8
    centres = rng.standard_normal((n_labels, d)) * 3
    y_train = rng.integers(0, n_labels, 40)
    y_test = np.repeat(np.arange(n_labels), 6)
    train = centres[y_train] + rng.standard_normal((40, d))
    test = centres[y_test] + rng.standard_normal((24, d))
    quartets, odd = [], []
    for _ in range(150):  # two songs of one label, the odd one from another
        a, b = rng.choice(n_labels, 2, replace=False)
        pair = rng.choice(np.flatnonzero(y_test == a), 2, replace=False)
        other = rng.choice(np.flatnonzero(y_test == b))
        pos = rng.integers(3)
        quartets.append(np.insert(pair, pos, other))
        odd.append(pos)
    baselines = {"random_weights": (rng.standard_normal((40, d)), rng.standard_normal((24, d)))}
    names = np.array(["bach", "jig", "reel", "palestrina"])[y_test]
    return train, test, baselines, np.array(quartets), np.array(odd), names


def test_run_produces_flat_headline_grid_baselines_and_retrieval(clustered):
    train, test, baselines, quartets, odd, labels = clustered
    params = EvaluateParams(minkowski_p=3.0, bootstrap=200, confidence=0.95)
    res = evaluate.run(train, test, baselines, quartets, odd, labels, params, seed=0)
    assert set(res) >= {"headline", "grid", "baselines", "retrieval", "n_quartets"}
    assert len(res["grid"]) == 27 and res["n_quartets"] == 150
    head = res["headline"]
    assert all(not isinstance(v, (dict, list)) for v in head.values())
    assert head["accuracy"] > 0.8 and head["above_chance"]
    assert set(res["baselines"]) == {"random_weights", "chance"}
    assert res["baselines"]["chance"]["accuracy"] == pytest.approx(1 / 3)
    best_base = max(res["baselines"].values(), key=lambda b: b["accuracy"])
    assert head["margin_over_baseline"] == pytest.approx(head["accuracy"] - best_base["accuracy"])
    assert head["margin_ci_low"] <= head["margin_over_baseline"] <= head["margin_ci_high"]
    assert head["margin_significant"]
    # a paired margin over every baseline, the best one's equal to the headline's
    assert set(res["margins"]) == set(res["baselines"])
    for name, m in res["margins"].items():
        assert m["margin"] == pytest.approx(head["accuracy"] - res["baselines"][name]["accuracy"])
        assert m["ci_low"] <= m["margin"] <= m["ci_high"] and m["significant"] == (m["ci_low"] > 0)
    assert res["margins"][head["best_baseline"]]["ci_low"] == head["margin_ci_low"]
    assert len(res["baseline_grids"]["random_weights"]) == 27
    assert res["retrieval"]["distance"] == head["best_distance"]
    assert res["retrieval"]["precision_at_1"] > 0.8
    json.dumps(res)  # plain JSON types throughout
    with pytest.raises(ValueError, match="reserved"):
        evaluate.run(train, test, {"chance": baselines["random_weights"]}, quartets, odd, labels, params, 0)


def test_evaluate_and_plot_writes_metrics_and_plots(clustered, tmp_path):
    train, test, baselines, quartets, odd, labels = clustered
    params = EvaluateParams(bootstrap=100)
    res = evaluate.evaluate_and_plot(train, test, baselines, quartets, odd, labels, params, seed=0,
                                     metrics_path=tmp_path / "metrics" / "eval.json",
                                     plots_dir=tmp_path / "plots")
    saved = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert saved["headline"]["accuracy"] == pytest.approx(res["headline"]["accuracy"])
    for name in ("grid.png", "baselines.png", "embedding_map.png", "confusion.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 10_000
    lines = (tmp_path / "plots" / "grid.csv").read_text().splitlines()
    assert lines[0] == "distance,scaler,cell,accuracy,ci_low,ci_high,tie_rate" and len(lines) == 28
    base = (tmp_path / "plots" / "baselines.csv").read_text().splitlines()
    assert base[0].startswith("embedding,") and len(base) == 4  # model, random_weights, chance
