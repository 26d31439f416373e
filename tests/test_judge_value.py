"""The simulated listener and the choice of judgements in benchmarks/judge_value.py."""
import numpy as np
import pandas as pd

from benchmarks.judge_value import ALIKE, choose, first_answered, listener_odd
from songspace import playlists


def test_listener_picks_the_song_of_another_label_and_skips_the_rest():
    labels = np.array([["a", "b", "b"], ["a", "c", "a"], ["a", "a", "c"], ["a", "a", "a"], ["a", "b", "c"]])
    assert listener_odd(labels).tolist() == [0, 1, 2, ALIKE, ALIKE]


def test_first_answered_counts_the_questions_asked():
    odd = np.array([ALIKE, 1, ALIKE, 0, 2])
    chosen, asked = first_answered(np.array([4, 0, 2, 3, 1]), odd, 2)
    assert chosen.tolist() == [4, 3] and asked == 4


def test_uncertain_judgements_have_smaller_gaps_than_random_ones():
    ids = [f"t{i}" for i in range(12)]
    rng = np.random.default_rng(0)
    space = playlists.Space(rng.normal(size=(12, 4)), "euclidean", {}, pd.DataFrame({"track_id": ids}))
    label_of = {t: i % 3 for i, t in enumerate(ids)}
    out = choose(space, ids, label_of, 5, 200, seed=1)
    for how in ("uncertain", "random"):
        q = out["judgements"][how]
        assert len(q) == 5 and q.apply(lambda r: r["odd"] in (r["song1"], r["song2"], r["song3"]), axis=1).all()
    assert out["mean_gap"]["uncertain"] < out["mean_gap"]["random"]
    assert out["asked"]["uncertain"] >= 5 and out["alike"] > 0
