"""The command line: output of each command, --json, and exit code 2 with one line for user errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from songspace import Library, config, models
from songspace.cli import main
from tests.conftest import write_tone
from tests.test_index import build_tiny_library

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_library(tmp_path_factory.mktemp("cli_library"))


@pytest.fixture
def work(tiny, tmp_path):
    """A writable copy of the tiny index."""
    shutil.copytree(tiny["index"], tmp_path / "index")
    return {**tiny, "index": tmp_path / "index"}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("songspace: error: "), err
    for needle in needles:
        assert needle in lines[0]


def test_similar_json_ranks_neighbours_without_the_song_itself(tiny, capsys):
    song = tiny["tracks"]["path"].iloc[0]
    code, out, _ = run(capsys, "similar", song, "-k", 4, "--json", "--index", tiny["index"], "--model", tiny["model"])
    assert code == 0
    result = json.loads(out)
    assert result["distance"] == "cosine" and result["scaler"] == "StandardScaler" and result["k"] == 4
    found = result["neighbours"]
    assert [n["rank"] for n in found] == [1, 2, 3, 4]
    assert set(found[0]) == {"rank", "track_id", "name", "label", "distance", "similarity", "path"}
    assert tiny["tracks"]["track_id"].iloc[0] not in [n["track_id"] for n in found]
    dists = [n["distance"] for n in found]
    sims = [n["similarity"] for n in found]
    assert dists == sorted(dists) and sims == sorted(sims, reverse=True) and 0 <= sims[-1] <= sims[0] <= 1
    assert [n["name"] for n in found] == [Path(n["path"]).name for n in found]  # untagged: the file name


def test_similar_table(tiny, capsys):
    code, out, _ = run(capsys, "similar", "high2", "-k", 3, "--index", tiny["index"], "--model", tiny["model"])
    assert code == 0
    lines = out.strip().splitlines()
    assert "cosine after StandardScaler" in lines[0]
    assert lines[1].split() == ["rank", "track_id", "label", "distance"]
    assert len(lines) == 5 and all("high2" not in line.split() for line in lines[2:])


def test_user_errors_exit_2_with_one_line(tiny, tmp_path, capsys):
    opts = ["--index", tiny["index"], "--model", tiny["model"]]
    code, _, err = run(capsys, "similar", tmp_path / "missing.mp3", *opts)
    assert_user_error(code, err, "missing.mp3", "no such file")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    code, _, err = run(capsys, "similar", bad, *opts)
    assert_user_error(code, err, "bad.wav")
    code, _, err = run(capsys, "similar", bad, "--index", tmp_path / "noindex", "--model", tiny["model"])
    assert_user_error(code, err, "noindex", "dvc repro index")
    code, _, err = run(capsys, "similar", "high2", "--index", tiny["index"], "--model", tmp_path / "none.pt")
    assert_user_error(code, err, "none.pt", "no such model checkpoint")
    code, _, err = run(capsys, "embed", bad, "-o", tmp_path / "x.npy", "--model", tiny["model"])
    assert_user_error(code, err, "bad.wav")
    code, _, err = run(capsys, "models", "--params", tmp_path / "nope.yaml")
    assert_user_error(code, err, "nope.yaml")


def test_stale_index_exits_2(tiny, tmp_path, capsys):
    other = tmp_path / "retrained.pt"
    ckpt = torch.load(tiny["model"], weights_only=False)
    ckpt["state"] = {**ckpt.get("state", {}), "note": "another run"}
    torch.save(ckpt, other)
    code, _, err = run(capsys, "similar", "high2", "--index", tiny["index"], "--model", other)
    assert_user_error(code, err, "stale", "dvc repro index")
    code, out, _ = run(capsys, "info", "--index", tiny["index"], "--model", other)
    assert code == 0 and "STALE" in out


def test_embed_writes_the_embeddings(tiny, tmp_path, capsys):
    files = list(tiny["tracks"]["path"].iloc[[1, 7]])
    out_file = tmp_path / "out" / "emb.npy"
    code, out, _ = run(capsys, "embed", *files, "-o", out_file, "--model", tiny["model"])
    assert code == 0 and "2 x 128" in out
    emb = np.load(out_file)
    lib = Library.open(tiny["index"], tiny["model"])
    np.testing.assert_allclose(emb, lib.index.embeddings[[1, 7]], rtol=1e-4, atol=1e-4)


def test_add_then_similar(work, tmp_path, capsys):
    opts = ["--index", work["index"], "--model", work["model"]]
    song = write_tone(tmp_path / "songs" / "fifth.wav", freqs=(600.0, 900.0), seconds=1.5, seed=5)
    code, out, _ = run(capsys, "add", song, "--label", "fifths", *opts)
    assert code == 0 and "added fifth (fifths)" in out and f"{len(work['tracks']) + 1} tracks" in out
    near = write_tone(tmp_path / "near.wav", freqs=(600.0, 900.0), seconds=1.5, seed=6)
    code, out, _ = run(capsys, "similar", near, "-k", 1, "--json", *opts)
    assert json.loads(out)["neighbours"][0]["track_id"] == "fifth"
    code, out, _ = run(capsys, "add", song, *opts)
    assert code == 0 and "skipped" in out and "same bytes as track fifth" in out
    code, _, err = run(capsys, "add", tmp_path / "absent.wav", *opts)
    assert_user_error(code, err, "absent.wav")


def test_info(tiny, capsys):
    code, out, _ = run(capsys, "info", "--json", "--index", tiny["index"], "--model", tiny["model"])
    info = json.loads(out)
    assert code == 0 and info["tracks"] == len(tiny["tracks"]) and info["model"] == "model1"
    assert info["model_status"] == "up to date" and info["exact"] is True and info["written_at"]
    code, out, _ = run(capsys, "info", "--index", tiny["index"], "--model", tiny["model"])
    assert "distance" in out and "cosine" in out and "IndexFlat (exact)" in out


def test_models_lists_the_registry(capsys):
    code, out, _ = run(capsys, "models", "--params", ROOT / "params.yaml")
    assert code == 0
    configured = config.load(ROOT / "params.yaml").model
    assert f"* {configured} " in out and "resnet50" in out and "parameters" in out
    row = next(line for line in out.splitlines() if " model3 " in f" {line} ")
    name, arch, count = row.lstrip("* ").split()[:3]
    assert (name, arch) == ("model3", "cnn")
    assert int(count.replace(",", "")) == models.count_parameters(
        models.build_by_name("model3", config.load(ROOT / "params.yaml").models, 64, 94))


def test_report_prints_the_headline_and_survives_missing_keys(tmp_path, capsys):
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "grid.png").write_bytes(b"png")
    head = {"best_distance": "cosine", "best_scaler": "StandardScaler", "accuracy": 0.812,
            "ci_low": 0.79, "ci_high": 0.833, "confidence": 0.95, "chance": 1 / 3, "n_quartets": 2000,
            "best_baseline": "mfcc", "best_baseline_accuracy": 0.6, "margin_over_baseline": 0.212,
            "margin_ci_low": 0.18, "margin_ci_high": 0.24, "next_distance": "euclidean",
            "next_scaler": "Normalizer", "next_accuracy": 0.8, "significant_vs_next": False}
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"headline": head}))
    code, out, _ = run(capsys, "report", "--metrics", metrics, "--plots", plots)
    assert code == 0
    assert "cosine / StandardScaler" in out and "0.812 (95% CI 0.790 to 0.833)" in out
    assert "2000" in out and "margin +0.212" in out and "mfcc" in out and "grid.png" in out
    metrics.write_text(json.dumps({"headline": {"best_distance": "hamming", "accuracy": None}}))
    code, out, _ = run(capsys, "report", "--metrics", metrics, "--plots", tmp_path / "none")
    assert code == 0 and "hamming / ?" in out and "none under" in out
    code, _, err = run(capsys, "report", "--metrics", tmp_path / "absent.json")
    assert_user_error(code, err, "absent.json", "dvc repro evaluate")


def test_python_m_songspace_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "songspace", "similar", "x.wav", "--index", str(tmp_path / "ix")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "dvc repro index" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_report_shows_judgements_kept_and_dropped_per_split(tmp_path, capsys):
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"headline": {"best_distance": "cosine", "accuracy": 0.7}}))
    judgements = {"train": {"kept": 542, "dropped": 1100}, "val": {"kept": 21, "dropped": 300},
                  "test": {"kept": 191, "dropped": 900}, "all": {"kept": 754, "dropped": 1246}}
    report = {"split": {"method": "partition", "hash_split_judgements": {
                  **judgements, "all": {"kept": 337, "dropped": 1663}}},
              "annotations": {"judgements": judgements}}
    gt_json = tmp_path / "groundtruth.json"
    gt_json.write_text(json.dumps(report))
    code, out, _ = run(capsys, "report", "--metrics", metrics, "--plots", tmp_path,
                       "--groundtruth", gt_json)
    assert code == 0
    assert "partition keeping quartets; quartets kept / dropped: train 542 / 1100, val 21 / 300, " \
           "test 191 / 900; all 754 / 1246" in out
    assert "hash split would keep" in out and "all 337 / 1663" in out
