"""The ingest and groundtruth stages end a user error with one line and exit code 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from songspace import errors, ingest

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path: Path, **data) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start(stage: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen([sys.executable, str(ROOT / "stages" / f"{stage}.py"), *map(str, args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, list[str]]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.strip().splitlines()


def test_ingest_and_groundtruth_user_errors_exit_2_with_one_line(tmp_path):
    missing = tmp_path / "no music here"
    (tmp_path / "i").mkdir()
    ingest_params = _params(tmp_path / "i", source="folder", audio_dir=str(missing))
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("track_id,path,label,source,duration_s\n")
    bad_ingest = _start("ingest", "--corpus", corpus, "--out", tmp_path / "lib", "--reports",
                        tmp_path / "rep", "--params", ingest_params)

    (tmp_path / "g").mkdir()
    tracks = pd.DataFrame({"track_id": ["jazz/a.wav", "jazz/b.wav", "folk/c.wav"],
                           "path": ["/m/jazz/a.wav", "/m/jazz/b.wav", "/m/folk/c.wav"],
                           "label": ["jazz", "jazz", "folk"], "group": ["a", "b", "c"],
                           "duration_s": [2.0] * 3, "sample_rate": [16000] * 3,
                           "channels": [1] * 3, "sha1": ["1", "2", "3"]})
    ingest.write_tracks(tracks, tmp_path / "g" / "tracks.csv")
    quartets = tmp_path / "g" / "quartets.csv"
    quartets.write_text("song1,song2,song3,odd\njazz/a.wav,jazz/b.wav,folk/c.wav,folk/c.wav\n"
                        "jazz/a.wav,jazz/b.wav,folk/nowhere.wav,folk/nowhere.wav\n")
    gt_params = _params(tmp_path / "g", source="folder", audio_dir=str(tmp_path / "g"),
                        quartets=str(quartets))
    bad_gt = _start("groundtruth", "--tracks", tmp_path / "g" / "tracks.csv", "--out",
                    tmp_path / "gt", "--reports", tmp_path / "rep", "--params", gt_params)

    code, lines = _finish(bad_ingest)
    assert code == errors.EXIT_USER_ERROR and len(lines) == 1, lines
    assert lines[0].startswith("ingest: error: ") and str(missing) in lines[0]
    code, lines = _finish(bad_gt)
    assert code == errors.EXIT_USER_ERROR and len(lines) == 1, lines
    assert lines[0].startswith("groundtruth: error: ") and "line 3" in lines[0]
    assert "folk/nowhere.wav" in lines[0]
