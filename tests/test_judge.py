"""The judge view's server side: the judgements file, the questions, the answers, over HTTP.

On the folder library of tests/test_explorer.py (track ids are paths with commas, quotes,
`;`, `#`, `%` and non-ASCII names), its 12 tracks put half in train and half in test.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import distance as scipy_distance

pytest.importorskip("starlette")

from songspace import groundtruth  # noqa: E402
from songspace.explorer import judge as judging  # noqa: E402
from songspace.explorer.judgements import JUDGEMENT_COLUMNS, JudgementsError, JudgementStore, log_path  # noqa: E402
from tests.test_explorer import fetch, open_explorer, running, shared_run  # noqa: E402

JSON = {"Content-Type": "application/json"}


def half_splits(tracks: pd.DataFrame, path: Path) -> dict[str, str]:
    """Every other track in test, the rest in train, written as a splits.csv."""
    splits = {t: ("test" if i % 2 else "train") for i, t in enumerate(sorted(tracks["track_id"]))}
    groundtruth.write_splits(pd.DataFrame({"track_id": list(splits), "split": list(splits.values())}), path)
    return splits


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def explorer(run):
    return open_explorer(run)


def make_judge(explorer, run, tmp_path, share=0.5) -> tuple[judging.Judge, dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    splits = half_splits(run["tracks"], tmp_path / "splits.csv")
    j = judging.open_judge(explorer, tmp_path / "judgements" / "quartets.csv", tmp_path / "splits.csv",
                           share, seed=0, test_fraction=0.3, val_fraction=0.2)
    return j, splits


def post(base: str, body, headers=JSON) -> tuple[int, dict]:
    status, _, raw = fetch(base + "/api/judge", json.dumps(body).encode(), headers)
    return status, json.loads(raw)


def test_pair_distances_and_the_models_odd_song_match_a_plain_loop(explorer):
    space = explorer.space()
    rows = np.array([[0, 1, 2], [3, 7, 11], [5, 4, 9]])
    d = judging.pair_distances(space, rows)
    for row, got in zip(rows, d):
        for (a, b), value in zip(judging.PAIRS, got):
            want = scipy_distance.cdist(space.vectors[[row[a]]], space.vectors[[row[b]]], space.distance)[0, 0]
            assert value == pytest.approx(want, abs=1e-9)
        closest = int(np.argmin(got))
        odd = ({0, 1, 2} - set(judging.PAIRS[closest])).pop()
        assert judging.model_odd(got[None])[0] == odd
        assert judging.certainty_gap(got[None])[0] == pytest.approx(sorted(got)[1] - sorted(got)[0])


def test_judgements_file_reads_back_through_the_pipelines_own_reader(explorer, run, tmp_path):
    j, splits = make_judge(explorer, run, tmp_path)
    answered = []
    for _ in range(6):
        q = j.ask("ann")
        assert len({splits[s] for s in q["songs"]}) == 1 and q["split"] == splits[q["songs"][0]]
        j.answer({"id": q["id"], "verdict": "odd", "odd": q["songs"][2], "annotator": "ann", "seconds": 3.25})
        answered.append(q)
    path = j.store.path
    assert path.read_text().splitlines()[0] == ",".join(f'"{c}"' for c in JUDGEMENT_COLUMNS)
    parsed = groundtruth.parse_quartets(groundtruth.read_quartet_rows(path),
                                        groundtruth.track_lookup(run["tracks"]), source=str(path))
    assert parsed.has_split and parsed.rows == 6
    got = {frozenset(r[:3]): (r.odd, r.split) for r in parsed.quartets.itertuples(index=False)}
    assert got == {frozenset(q["songs"]): (q["songs"][2], q["split"]) for q in answered}
    rows = j.store.read()
    assert [r["chosen_by"] for r in rows] == [q["chosen_by"] for q in answered]
    assert all(r["annotator"] == "ann" and r["seconds"] == "3.2" and r["judged_at"].endswith("+00:00") for r in rows)


def test_no_pair_twice_in_a_row_and_every_question_logged_with_how_it_was_chosen(explorer, run, tmp_path):
    j, _ = make_judge(explorer, run, tmp_path)
    asked = [j.ask("") for _ in range(30)]
    for a, b in zip(asked, asked[1:]):
        assert not judging._pairs(a["songs"]) & judging._pairs(b["songs"]), (a["songs"], b["songs"])
    log = [e for e in j.store.read_log() if e["event"] == "asked"]
    assert [e["id"] for e in log] == [a["id"] for a in asked]
    assert {e["chosen_by"] for e in log} == {"uncertain", "random"}
    assert all(set(e) >= {"songs", "split", "gap", "model_odd", "at"} for e in log)
    # the uncertain question is the draw with the smallest gap: never above a random draw's median
    gaps = {c: [e["gap"] for e in log if e["chosen_by"] == c] for c in ("uncertain", "random")}
    assert max(gaps["uncertain"]) <= np.median(gaps["random"])
    j1, _ = make_judge(explorer, run, tmp_path / "all", share=1.0)
    assert {j1.ask("x")["chosen_by"] for _ in range(5)} == {"uncertain"}


def test_model_agreement_counts_the_judged_quartets_it_answers_alike(explorer, run, tmp_path):
    j, _ = make_judge(explorer, run, tmp_path, share=0.0)
    for agree in (True, True, False):
        q = j.ask("")
        odd = q["model_odd"] if agree else next(s for s in q["songs"] if s != q["model_odd"])
        stats = j.answer({"id": q["id"], "odd": odd})["stats"]
    assert stats["judged"] == 3
    assert stats["agreement"] == {"agree": 2, "of": 3, "fraction": pytest.approx(2 / 3, abs=1e-4)}
    assert stats["agreement_random"]["of"] == 3  # share 0: every question is a random one


def test_alike_and_skip_go_to_the_log_not_the_csv(explorer, run, tmp_path):
    j, _ = make_judge(explorer, run, tmp_path)
    for verdict in ("alike", "skip"):
        q = j.ask("")
        assert j.answer({"id": q["id"], "verdict": verdict})["recorded"] == verdict
    assert j.store.read() == [] and not j.store.path.exists()
    assert [e["event"] for e in j.store.read_log()] == ["asked", "alike", "asked", "skip"]
    with pytest.raises(judging.UnknownQuestion):
        j.answer({"id": q["id"], "verdict": "skip"})  # answered already


def test_a_line_torn_by_a_kill_is_cut_off_and_a_foreign_csv_refused(tmp_path):
    store = JudgementStore(tmp_path / "q.csv")
    row = dict(zip(JUDGEMENT_COLUMNS, ["a", "b", "c", "c", "train", "", "t", "random", "1"]))
    store.append(row)
    with open(store.path, "a") as f:
        f.write('"a","b","c","b","tr')  # a write killed half-way
    store.append({**row, "odd": "a"})
    assert [r["odd"] for r in store.read()] == ["c", "a"]
    assert store.path.read_text().count("\n") == 3
    assert log_path(store.path) == tmp_path / "q.log.jsonl"
    other = tmp_path / "mine.csv"
    other.write_text("song1,song2,song3,odd\na,b,c,c\n")
    with pytest.raises(JudgementsError, match="not a judgements file"):
        JudgementStore(other)


def test_without_a_splits_file_each_track_takes_its_hash_split(explorer):
    ids = explorer.space().ids
    splits, source = judging.track_splits(ids, None, 7, 0.3, 0.2)
    want = groundtruth.assign_splits(pd.DataFrame({"track_id": ids, "group": ""}), 7, 0.3, 0.2)
    assert splits == dict(zip(want["track_id"], want["split"])) and "hash" in source


def test_http_answers_errors_and_the_origin_check(explorer, run, tmp_path):
    j, _ = make_judge(explorer, run, tmp_path)
    with running(explorer, judge=j) as base:
        status, _, raw = fetch(base + "/api/judge/next?annotator=Zo%C3%AB")
        q = json.loads(raw)
        assert status == 200 and len(q["songs"]) == 3 and len(q["names"]) == 3
        assert post(base, {"id": q["id"], "odd": "nope"})[0] == 400
        assert post(base, {"id": "unknown", "odd": q["songs"][0]})[0] == 404
        assert post(base, {"id": q["id"], "verdict": "maybe"})[0] == 400
        assert post(base, {"id": q["id"], "odd": q["songs"][0], "seconds": -1})[0] == 400
        assert fetch(base + "/api/judge", b"{not json", JSON)[0] == 400
        foreign = {**JSON, "Origin": "http://evil.example"}
        assert post(base, {"id": q["id"], "odd": q["songs"][0]}, foreign)[0] == 403
        assert fetch(base + "/api/judge/next", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
        status, answer = post(base, {"id": q["id"], "odd": q["songs"][1], "annotator": "Zoë"},
                              {**JSON, "Origin": base})
        assert status == 200 and answer["stats"]["by_you"] == 1 and answer["stats"]["annotator"] == "Zoë"
        status, _, raw = fetch(base + "/api/judge/stats?annotator=Zo%C3%AB")
        assert status == 200 and json.loads(raw)["judged"] == 1
    with running(explorer) as base:  # no judge given: the routes say it is off
        assert fetch(base + "/api/judge/next")[0] == 404


def test_two_clients_posting_at_once_lose_nothing(explorer, run, tmp_path):
    j, splits = make_judge(explorer, run, tmp_path)
    errors: list[str] = []

    def client(name: str) -> None:
        for _ in range(100):
            status, _, raw = fetch(f"{base}/api/judge/next?annotator={name}")
            q = json.loads(raw)
            status, body = post(base, {"id": q["id"], "odd": q["songs"][0], "annotator": name, "seconds": 1})
            if status != 200:
                errors.append(f"{status} {body}")

    with running(explorer, judge=j) as base:
        threads = [threading.Thread(target=client, args=(n,)) for n in ("ann", "bob")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors
    rows = j.store.read()
    assert len(rows) == 200 and sorted(r["annotator"] for r in rows) == ["ann"] * 100 + ["bob"] * 100
    parsed = groundtruth.parse_quartets(groundtruth.read_quartet_rows(j.store.path),
                                        groundtruth.track_lookup(run["tracks"]))
    assert parsed.rows == 200 and len(parsed.quartets) + parsed.merged == 200
    assert all(len({splits[s] for s in r[:3]}) == 1 for r in parsed.quartets.itertuples(index=False))
    assert sum(e["event"] == "asked" for e in j.store.read_log()) == 200
