"""End to end: judgements made through the judge view's HTTP API train the next `dvc repro`.

A tiny project copy is built up to its index; a simulated listener (the odd song is the one of
another label) answers the server's questions; with data.quartets pointing at the judgements
file, `dvc repro train` reruns the groundtruth stage on them and trains on them.
"""
from __future__ import annotations

import json

import pytest
import yaml

pytest.importorskip("starlette")

from songspace.explorer import data, judge as judging  # noqa: E402
from tests.test_explorer import fetch, running  # noqa: E402
from tests.test_judge import post  # noqa: E402
from tests.test_pipeline import TINY, _run, project_copy  # noqa: E402

MIN_PER_SPLIT = 6   # judged quartets wanted in train and in test
MAX_QUESTIONS = 400


def listen(base: str, labels: dict[str, str]) -> list[dict]:
    """Answer questions as a listener who hears labels: the odd song is the one of another label
    (skipped when the three share a label or all differ); two annotators take turns."""
    count = {"train": 0, "test": 0}
    answers = []
    for i in range(MAX_QUESTIONS):
        if min(count.values()) >= MIN_PER_SPLIT:
            break
        who = ("ann", "bob")[i % 2]
        q = json.loads(fetch(f"{base}/api/judge/next?annotator={who}")[2])
        songs = q["songs"]
        odd = [s for s in songs if sum(labels[s] == labels[t] for t in songs) == 1]
        verdict = {"verdict": "odd", "odd": odd[0]} if len(odd) == 1 else {"verdict": "skip"}
        status, _ = post(base, {"id": q["id"], "annotator": who, "seconds": 2, **verdict})
        assert status == 200
        if len(odd) == 1:
            answers.append({"songs": songs, "odd": odd[0], "split": q["split"]})
            if q["split"] in count:
                count[q["split"]] += 1
    assert min(count.values()) >= MIN_PER_SPLIT, count
    return answers


@pytest.mark.slow
def test_judgements_made_through_the_api_are_used_by_dvc_repro(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    env, venv_bin = project_copy(repo, TINY)
    dvc = str(venv_bin / "dvc")
    _run([dvc, "repro", "index"], repo, env)

    monkeypatch.chdir(repo)  # the index's track paths are relative to the project
    explorer = data.Explorer.open("data/index", "data/models/best.pt", "data/corpus", None, None, None)
    referee = judging.open_judge(explorer, "data/judgements/quartets.csv", "data/groundtruth/splits.csv",
                                 0.5, seed=42, test_fraction=0.4, val_fraction=0.25)
    tracks = explorer.lib.index.tracks
    with running(explorer, judge=referee) as base:
        answers = listen(base, dict(zip(tracks["track_id"], tracks["label"])))

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["quartets"] = "data/judgements/quartets.csv"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run([dvc, "repro", "train"], repo, env)
    assert "Running stage 'groundtruth'" in out and "Running stage 'train'" in out

    report = json.loads((repo / "data" / "reports" / "groundtruth.json").read_text())
    a = report["annotations"]
    distinct = {(frozenset(x["songs"]), x["odd"]): x["split"] for x in answers}
    assert report["mode"] == "annotations" and report["split"]["method"] == "file"
    assert a["lines"] == len(answers) and a["split_column"]
    assert a["quartets"]["test"] == sum(s == "test" for s in distinct.values()) == report["test_quartets"]
    assert a["judgements"]["all"] == {"kept": len(distinct), "dropped": 0}
    assert a["annotators"]["annotators"] == 2
    test_csv = (repo / "data" / "groundtruth" / "test_quartets.csv").read_text().splitlines()[1:]
    assert len(test_csv) == report["test_quartets"]

    # one more judgement: the groundtruth stage is out of date again (data/judgements is its input)
    with running(explorer, judge=referee) as base:
        listen_once = json.loads(fetch(f"{base}/api/judge/next")[2])
        assert post(base, {"id": listen_once["id"], "odd": listen_once["songs"][0]})[0] == 200
    status = json.loads(_run([dvc, "status", "--json"], repo, env))
    assert "groundtruth" in status
