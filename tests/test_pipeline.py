"""End to end: the real `dvc repro` of the whole pipeline on tiny params, in a temporary copy: then
judgements made through the judge view's HTTP API train the next run, and an added song survives it."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_tone

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "corpus": {"classes": ["bach", "reel", "jig"], "pieces_per_class": 6, "bars": 4, "max_seconds": 8.0},
    "split": {"test_fraction": 0.4, "val_fraction": 0.25},
    "groundtruth": {"test_quartets": 40, "val_quartets": 20, "train_triplets": 60},
    "features": {"segment_seconds": 1.0, "segment_hop_seconds": 1.0, "max_segments": 3, "n_mels": 32},
    "augment": {"views": 1, "segments": 2},
    "train": {"epochs": 2, "labels_per_batch": 3, "tracks_per_label": 3, "steps_per_epoch": 4},
    "evaluate": {"bootstrap": 100},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _run(cmd, cwd, env):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def project_copy(repo: Path, over: dict) -> tuple[dict, Path]:
    """The project's own files (no outputs) copied to repo as a git repository, params.yaml with
    `over` merged in; returns (environment, the venv's bin folder)."""
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        src = ROOT / name
        outputs = name.startswith(("data/", "metrics/", "plots/", "dvclive/")) and \
            not name.startswith(("data/added/", "data/judgements/"))  # inputs: added songs, judgements
        if src.is_file() and not outputs and name != "dvc.lock":
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(_merge(params, over), sort_keys=False))
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "tiny"], repo, env)
    return env, venv_bin


MIN_JUDGED = 6   # judged quartets wanted in train and in test


def judge_through_the_api(repo: Path, questions: int | None = None) -> list[dict]:
    """A listener who hears labels answers the judge view's questions over HTTP (the odd song is
    the one of another label; skipped when the three share a label or all differ), two
    annotators taking turns, until train and test hold MIN_JUDGED judged quartets each (or
    `questions` are answered). Returns the answers given."""
    from songspace.explorer import data, judge
    from tests.test_explorer import fetch, running
    from tests.test_judge import post

    cwd = os.getcwd()
    os.chdir(repo)  # the index's track paths are relative to the project
    try:
        explorer = data.Explorer.open("data/index", "data/models/best.pt", "data/corpus", None, None, None)
        referee = judge.open_judge(explorer, "data/judgements/quartets.csv", "data/groundtruth/splits.csv",
                                   0.5, seed=42, test_fraction=0.4, val_fraction=0.25)
        labels = dict(zip(explorer.lib.index.tracks["track_id"], explorer.lib.index.tracks["label"]))
        count, answers = {"train": 0, "test": 0}, []
        with running(explorer, judge=referee) as base:
            for i in range(questions or 400):
                if questions is None and min(count.values()) >= MIN_JUDGED:
                    break
                who = ("ann", "bob")[i % 2]
                q = json.loads(fetch(f"{base}/api/judge/next?annotator={who}")[2])
                songs = q["songs"]
                odd = [s for s in songs if sum(labels[s] == labels[t] for t in songs) == 1]
                if len(odd) == 1 or questions:  # a fixed number of questions: each one answered
                    verdict = {"verdict": "odd", "odd": (odd or songs)[0]}
                else:
                    verdict = {"verdict": "skip"}
                assert post(base, {"id": q["id"], "annotator": who, "seconds": 2, **verdict})[0] == 200
                if len(odd) == 1:
                    answers.append({"songs": songs, "odd": odd[0], "split": q["split"]})
                    count[q["split"]] = count.get(q["split"], 0) + 1
    finally:
        os.chdir(cwd)
    assert questions is not None or min(count.values()) >= MIN_JUDGED, count
    return answers


@pytest.mark.slow
def test_dvc_repro_on_tiny_params(tmp_path):
    repo = tmp_path / "repo"
    env, venv_bin = project_copy(repo, TINY)
    out = _run([str(venv_bin / "dvc"), "repro"], repo, env)
    assert "Running stage 'evaluate'" in out

    result = json.loads((repo / "metrics" / "eval.json").read_text())
    assert len(result["grid"]) == 27
    assert {(r["distance"], r["scaler"]) for r in result["grid"]} == {
        (d, s) for d in ["chebyshev", "euclidean", "minkowski", "hamming", "cosine", "cityblock",
                         "seuclidean", "correlation", "kulsinski"]
        for s in ["MinMaxScaler", "StandardScaler", "Normalizer"]}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in result["grid"])
    for png in ["grid.png", "baselines.png", "embedding_map.png", "confusion.png", "augmentations.png"]:
        assert (repo / "plots" / png).stat().st_size > 10_000, png
    explorer = (repo / "plots" / "explorer.html").read_text()
    assert "window.SONGSPACE_DATA" in explorer and "../data/corpus/" in explorer
    assert (repo / "dvc.lock").exists()
    # everything is up to date afterwards but the scan of the library folder, which always reruns
    status = json.loads(_run([str(venv_bin / "dvc"), "status", "--json"], repo, env))
    assert status == {"scan": ["always changed"]}
    # the augmentation figure persists: a rerun of its stage keeps it rather than drawing it again
    figure = (repo / "plots" / "augmentations.png").read_bytes()
    again = _run([str(venv_bin / "dvc"), "repro", "-f", "-s", "augment"], repo, env)
    assert "unchanged, kept" in again and (repo / "plots" / "augmentations.png").read_bytes() == figure
    # judgements made in the explorer's judge view, then a parameter change pointing at them
    # (`dvc exp run -S`): the stages that depend on it rerun and train on the judgements
    answers = judge_through_the_api(repo)
    shown = _run([str(venv_bin / "dvc"), "exp", "run", "-S", "data.quartets=data/judgements/quartets.csv"],
                 repo, env)
    assert "Running stage 'groundtruth'" in shown and "Running stage 'train'" in shown
    assert "Running stage 'corpus'" not in shown and "Running stage 'features'" not in shown
    report = json.loads((repo / "data" / "reports" / "groundtruth.json").read_text())
    a, distinct = report["annotations"], {(frozenset(x["songs"]), x["odd"]): x["split"] for x in answers}
    assert report["mode"] == "annotations" and report["split"]["method"] == "file"
    assert a["lines"] == len(answers) and a["split_column"] and a["annotators"]["annotators"] == 2
    assert a["quartets"]["test"] == sum(s == "test" for s in distinct.values()) == report["test_quartets"]
    assert a["judgements"]["all"] == {"kept": len(distinct), "dropped": 0}
    # one more judgement: the groundtruth stage is out of date again (data/judgements is its
    # input; the judge's lock file and question log are not: .dvcignore)
    assert "groundtruth" not in json.loads(_run([str(venv_bin / "dvc"), "status", "--json"], repo, env))
    judge_through_the_api(repo, questions=1)
    assert "groundtruth" in json.loads(_run([str(venv_bin / "dvc"), "status", "--json"], repo, env))

    # a song added with `songspace add` survives the next `dvc repro` (the index stage takes it in)
    extra = write_tone(tmp_path / "outside" / "new song.wav", freqs=(330.0, 495.0), seconds=6.0)
    songspace = [str(venv_bin / "python"), "-m", "songspace"]
    _run([*songspace, "add", str(extra), "--label", "added"], repo, env)
    assert "Running stage 'index'" in _run([str(venv_bin / "dvc"), "repro"], repo, env)
    indexed = (repo / "data" / "index" / "tracks.csv").read_text()
    assert f"{extra},added," in indexed
    # its neighbours are answered from the index, the song itself left out
    info = json.loads(_run([*songspace, "similar", str(extra), "-k", "3", "--json"], repo, env))
    assert len(info["neighbours"]) == 3 and all(n["path"] != str(extra) for n in info["neighbours"])
