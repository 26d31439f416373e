"""The index folder on disk: every damaged file is one line and exit 2 from the real CLI, a save
killed at any step is settled by the next read or write, and a held lock is announced."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from songspace import checkpoint, index
from songspace.cli import main
from songspace.index import folder

N = 20


def random_index(n=N, d=8, distance="euclidean", seed=0) -> index.SongIndex:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, d)).astype(np.float32)
    tracks = pd.DataFrame({"track_id": [f"t{i}" for i in range(n)], "label": ["a", "b"] * (n // 2)})
    return index.SongIndex.build(emb, tracks, np.arange(n) < n // 2, distance, "StandardScaler", progress=False)


@pytest.fixture
def saved(tmp_path) -> Path:
    return random_index().save(tmp_path / "data" / "index")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("songspace: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _meta(folder_: Path, **changes) -> None:
    path = folder_ / index.FILES["meta"]
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _narrow_vectors(folder_: Path) -> None:
    other = random_index(d=4).save(folder_.parent / "narrow")
    shutil.copyfile(other / index.FILES["vectors"], folder_ / index.FILES["vectors"])


def _nan_row(folder_: Path) -> None:
    emb = np.load(folder_ / index.FILES["embeddings"])
    emb[3, 1] = np.nan
    np.save(folder_ / index.FILES["embeddings"], emb)


DAMAGE = {
    "empty embeddings": (lambda f: (f / "embeddings.npy").write_bytes(b""), ["embeddings.npy", "unreadable"]),
    "empty state": (lambda f: (f / "state.npz").write_bytes(b""), ["state.npz", "unreadable"]),
    "truncated state": (lambda f: (f / "state.npz").write_bytes((f / "state.npz").read_bytes()[:150]),
                        ["state.npz", "unreadable"]),
    "meta list": (lambda f: (f / "meta.json").write_text("[1, 2]"), ["meta.json", "JSON object, found list"]),
    "unknown distance": (lambda f: _meta(f, distance="manhattan"), ["meta.json", "unknown distance 'manhattan'"]),
    "unknown scaler": (lambda f: _meta(f, scaler="RobustScaler"), ["meta.json", "unknown scaler 'RobustScaler'"]),
    "recall a list": (lambda f: _meta(f, recall=[0.9]), ["meta.json", "recall is [0.9]"]),
    "tracks without track_id": (lambda f: (f / "tracks.csv").write_text("id,path,label,sha1\nx,,,\n"),
                                ["tracks.csv", "missing column(s) track_id"]),
    "1-D embeddings": (lambda f: np.save(f / "embeddings.npy", np.zeros(N, np.float32)),
                       ["embeddings.npy", "(n, d)", "shape (20,)"]),
    "narrower embeddings": (lambda f: np.save(f / "embeddings.npy", np.zeros((N, 4), np.float32)),
                            ["meta.json", "dim 8", "width 4"]),
    "faiss file of another width": (_narrow_vectors, ["vectors.faiss", "width 4", "8-wide embeddings"]),
    "NaN embedding": (_nan_row, ["embeddings.npy", "NaN or inf", "row 3, track t3"]),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_index_file_is_one_line_and_exit_2(saved, damage, capsys):
    spoil, needles = DAMAGE[damage]
    spoil(saved)
    for command in (["info"], ["similar", "t0"]):
        code, out, err = run(capsys, *command, "--index", saved, "--model", saved.parent / "absent.pt")
        assert_one_line_error(code, err, *needles, "dvc repro index")
        assert out == ""


def test_similar_refuses_nan_embeddings_instead_of_answering_nothing(saved, capsys):
    _nan_row(saved)
    with pytest.raises(index.IndexNotFound, match="NaN"):
        index.Library.open(saved, check_model=False)


def test_info_on_a_folder_that_is_not_an_index(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "info", "--index", ".")
    assert_one_line_error(code, err, str(tmp_path), "no song index here")


def test_a_damaged_distance_context_is_named(tmp_path, capsys):
    saved = random_index(distance="seuclidean").save(tmp_path / "index")
    state = saved / index.FILES["state"]
    with np.load(state) as z:
        arrays = {k: z[k] for k in z.files}
    with state.open("wb") as f:
        np.savez(f, **{**arrays, "ctx.variances": arrays["ctx.variances"][:3]})
    code, _, err = run(capsys, "info", "--index", saved)
    assert_one_line_error(code, err, "state.npz", "ctx.variances", "shape (8,)")


# ---------------------------------------------------------------- a save killed at each step


def grown(saved: Path) -> index.SongIndex:
    """The saved index with one more track: what the killed save was writing."""
    bigger = index.SongIndex.load(saved)
    bigger.add(np.ones((1, bigger.dim), np.float32), pd.DataFrame({"track_id": ["new"]}))
    return bigger


def kill_while_writing(saved):       # the new folder is not complete (meta.json comes last)
    new = folder.write_aside(saved, grown(saved).write_files)
    (new / index.FILES["meta"]).unlink()


def kill_before_the_swap(saved):     # the new folder complete, the swap not begun
    folder.write_aside(saved, grown(saved).write_files)


def kill_between_the_renames(saved):  # the old index moved aside, the new one not yet in place
    folder.write_aside(saved, grown(saved).write_files)
    folder.move_aside(saved)


def kill_before_dropping_the_old(saved):  # the new index in place, the old one still aside
    new = folder.write_aside(saved, grown(saved).write_files)
    folder.move_aside(saved)
    os.replace(new, saved)  # the swap's second rename, as `folder.commit` does it


KILLS = {  # kill point -> the tracks the index holds afterwards
    kill_while_writing: N,
    kill_before_the_swap: N,
    kill_between_the_renames: N + 1,
    kill_before_dropping_the_old: N + 1,
}


@pytest.mark.parametrize("kill", KILLS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("then", ["read", "write"])
def test_a_killed_save_is_settled_by_the_next_read_or_write(saved, kill, then):
    kill(saved)
    assert list(saved.parent.glob(".index.*-*"))  # the kill left something aside
    if then == "read":
        assert index.SongIndex.load(saved).n_tracks == KILLS[kill]
    else:
        random_index(seed=1).save(saved)
        assert index.SongIndex.load(saved).n_tracks == N
    assert not list(saved.parent.glob(".index.*-*"))


def test_only_an_old_folder_left_is_put_back(saved):
    new = folder.write_aside(saved, grown(saved).write_files)
    (new / index.FILES["meta"]).unlink()
    folder.move_aside(saved)
    assert index.SongIndex.load(saved).n_tracks == N
    assert not list(saved.parent.glob(".index.*-*"))


# ---------------------------------------------------------------- the lock


def _hold_lock(path: Path, ready: threading.Event, seconds: float) -> threading.Thread:
    def hold():
        with index.index_lock(path):
            ready.set()
            time.sleep(seconds)
    thread = threading.Thread(target=hold)
    thread.start()
    assert ready.wait(10)
    return thread


def test_similar_says_it_waits_for_a_held_lock(tmp_path, capsys):
    model = tmp_path / "model.pt"  # a track-id query reads stored embeddings: the model is only checked
    model.write_bytes(b"the checkpoint the index was built with")
    built = random_index()
    built.meta["model"] = checkpoint.identity(model)
    saved = built.save(tmp_path / "index")
    holder = _hold_lock(saved, threading.Event(), 0.5)
    t0 = time.perf_counter()
    code, out, err = run(capsys, "similar", "t0", "-k", 3, "--index", saved, "--model", model)
    holder.join()
    assert code == 0 and len(out.strip().splitlines()) == 5 and time.perf_counter() - t0 >= 0.4
    assert "waiting for the index lock held by another songspace process" in err
    assert str(tmp_path / ".index.lock") in err
    code, _, err = run(capsys, "similar", "t0", "--index", saved, "--model", model)
    assert code == 0 and err == ""  # a free lock: not a word
