"""The explorer: the real server on a free loopback port, its routes, safety, and the static export.

Everything runs on a folder library whose track ids are relative paths through nested
folders with spaces, `#`, `?`, `%`, `+`, `&`, quotes, commas and non-ASCII names.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from songspace import features, filecheck, groundtruth, index, ingest  # noqa: E402
from songspace.cli import main  # noqa: E402
from songspace.explorer import data, export, guard, server  # noqa: E402
from songspace.index import StaleIndex  # noqa: E402
from tests.conftest import write_tone  # noqa: E402
from tests.test_index import build_tiny_library  # noqa: E402

UPLOAD_LIMIT = 200_000  # bytes: the tiny tone tracks are ~48 kB
# Sub-folders (below each label's folder) and file names of the folder library: what users'
# own music folders hold, and what a URL reads as separators, a fragment, a query or an escape.
AWKWARD_FOLDERS = ("Ärger & Co/Disc 1", "Café, \"Live\"/50% off? #2", "日本語/a+b=c&d;e")
AWKWARD_NAMES = ("01 #1 100% ?.wav", "02 a+b=c&d=%2F.wav", "03 it's (live) ..%2e.wav",
                 "04 Ünïcødé «ß» 日本.wav", "05 x%20y %zz.wav", "06   two  spaces.wav")


def folder_library(root: Path) -> dict:
    """The tiny tone tracks as a folder library (label/<awkward folders>/<awkward name>),
    ingested as a folder and indexed with the tiny model: track ids are relative paths."""
    tiny = build_tiny_library(root / "project")
    audio = root / "library"
    for row in tiny["tracks"].itertuples():
        i = int(row.track_id[-1])
        dest = audio / row.label / AWKWARD_FOLDERS[i % len(AWKWARD_FOLDERS)] / AWKWARD_NAMES[i]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row.path, dest)
    found = ingest.find_in_folder(audio, "folders", keep_unlabelled=False)
    checks = filecheck.check_files([c.path for c in found.candidates], 0.5, workers=1, progress=False)
    tracks = ingest.assemble(found, checks, "folder").tracks
    assert len(tracks) == len(tiny["tracks"]) and all("/" in t for t in tracks["track_id"])
    ingest.write_tracks(tracks, root / "tracks.csv")
    spectra, _ = features.extract_library(tracks, tiny["params"].features, workers=1, progress=False)
    features.save(root / "features", spectra)
    groundtruth.write_splits(pd.DataFrame({"track_id": tracks["track_id"], "split": "train"}),
                             root / "splits.csv")
    built = index.build_from_pipeline(root / "features", root / "tracks.csv", root / "splits.csv",
                                      tiny["model"], tiny["params"], eval_json=None, progress=False)
    built.save(root / "index")
    return {"root": root, "index": root / "index", "model": tiny["model"], "tracks": tracks,
            "audio": audio, "params": tiny["params"]}


def tiny_run(root: Path) -> dict:
    """A tiny folder library, model and index, with an eval.json and dvclive curves beside them."""
    tiny = folder_library(root)
    head = {"best_distance": "cosine", "best_scaler": "StandardScaler", "accuracy": 0.8, "ci_low": 0.7,
            "ci_high": 0.9, "chance": 1 / 3, "n_quartets": 20, "best_baseline": "mfcc_stats",
            "best_baseline_accuracy": 0.6, "margin_over_baseline": 0.2, "margin_significant": True}
    grid = [{"distance": d, "scaler": s, "accuracy": a, "ci_low": a - 0.1, "ci_high": a + 0.1}
            for d, s, a in [("cosine", "StandardScaler", 0.8), ("euclidean", "StandardScaler", 0.7),
                            ("cosine", "Normalizer", 0.75), ("euclidean", "Normalizer", float("nan"))]]
    baselines = {"mfcc_stats": {"distance": "cosine", "scaler": "Normalizer", "accuracy": 0.6,
                                "ci_low": 0.5, "ci_high": 0.7}}
    (root / "eval.json").write_text(json.dumps({"headline": head, "grid": grid, "baselines": baselines}))
    curves = root / "dvclive" / "plots" / "metrics" / "train"
    curves.mkdir(parents=True)
    (curves / "loss.tsv").write_text("step\tloss\n0\t0.2\n1\t0.15\n2\t0.1\n")
    return {**tiny, "eval": root / "eval.json", "live": root / "dvclive"}


_RUNS: dict[Path, dict] = {}


def shared_run(tmp_path_factory) -> dict:
    """One `tiny_run` per test session, shared by the explorer's test modules (none changes it)."""
    root = tmp_path_factory.getbasetemp() / "explorer-run"
    if root not in _RUNS:
        root.mkdir()
        _RUNS[root] = tiny_run(root)
    return _RUNS[root]


def open_explorer(run: dict, **kw) -> data.Explorer:
    args = {"index_dir": run["index"], "model_path": run["model"], "library_root": run["audio"],
            "eval_json": run["eval"], "live_dir": run["live"], "cache_dir": run["root"] / "cache"}
    return data.Explorer.open(**{**args, **kw})


@contextlib.contextmanager
def running(explorer: data.Explorer, allowed: tuple[str, ...] = (), **app_kw):
    """Serve the explorer with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL.

    app_kw go to `server.create_app` (max_upload_bytes defaults to UPLOAD_LIMIT); allowed: more
    Host names (--allowed-host).
    """
    sock = server.bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = server.create_app(explorer, app_kw.pop("max_upload_bytes", UPLOAD_LIMIT),
                            hosts=guard.allowed_hosts("127.0.0.1", port, allowed), **app_kw)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


def q(track_id: str) -> str:
    """A track id as the page's script sends it (encodeURIComponent)."""
    return urllib.parse.quote(track_id, safe="-_.!~*'()")


def fetch(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def explorer(run):
    return open_explorer(run)


@pytest.fixture(scope="module")
def url(explorer):
    with running(explorer, k=4) as base:
        yield base


def test_page_and_its_files_are_served_without_any_network(url):
    status, headers, body = fetch(url + "/")
    assert status == 200 and "text/html" in headers["content-type"]
    page = body.decode()
    assert 'src="static/explorer.js"' in page and 'href="static/explorer.css"' in page
    for name in ("explorer.js", "explorer.css"):
        status, _, text = fetch(f"{url}/static/{name}")
        assert status == 200 and len(text) > 1000
        assert "cdn" not in text.decode().lower() and "import " not in text.decode()
    assert "http" not in page.replace("http-equiv", "")


def test_track_list_holds_every_track_on_the_map(url, run):
    status, _, body = fetch(url + "/api/tracks")
    result = json.loads(body)
    assert status == 200
    assert [t["id"] for t in result["tracks"]] == list(run["tracks"]["track_id"])
    assert {t["name"] for t in result["tracks"]} == set(AWKWARD_NAMES)
    assert result["labels"] == ["high", "low"] and result["projection"] == "t-SNE"
    xs = [t["x"] for t in result["tracks"]] + [t["y"] for t in result["tracks"]]
    assert min(xs) >= 0 and max(xs) <= 1 and max(xs) - min(xs) > 0.5
    assert result["index"]["distance"] == "cosine" and result["index"]["tracks"] == 12
    # the projection is cached: a second explorer reads it back instead of recomputing
    assert len(list((run["root"] / "cache").glob("map-*.npz"))) == 1


def test_every_track_of_a_folder_library_has_neighbours_and_audio(url, run):
    """Ids like `low/Ärger & Co/Disc 1/01 #1 100% ?.wav`, sent as the page sends them."""
    for track, path in zip(run["tracks"]["track_id"], run["tracks"]["path"]):
        status, _, body = fetch(f"{url}/api/neighbours?id={q(track)}&k=3")
        result = json.loads(body)
        assert status == 200 and result["query"] == track and len(result["neighbours"]) == 3
        assert track not in [n["track_id"] for n in result["neighbours"]]
        status, _, audio = fetch(f"{url}/audio?id={q(track)}")
        assert status == 200 and audio == Path(path).read_bytes()


def test_neighbours_equal_songspace_similar_json(url, run, capsys):
    for track in run["tracks"]["track_id"].iloc[[0, 7]]:
        status, _, body = fetch(f"{url}/api/neighbours?id={q(track)}&k=5")
        assert status == 200
        assert main(["similar", track, "-k", "5", "--json", "--index", str(run["index"]),
                     "--model", str(run["model"])]) == 0
        assert json.loads(body) == json.loads(capsys.readouterr().out)


def test_audio_range_request_returns_206_with_the_right_bytes(url, run):
    track, path = run["tracks"]["track_id"].iloc[3], Path(run["tracks"]["path"].iloc[3])
    whole = path.read_bytes()
    status, headers, body = fetch(f"{url}/audio?id={q(track)}", headers={"Range": "bytes=100-1099"})
    assert status == 206
    assert body == whole[100:1100]
    assert headers["content-range"] == f"bytes 100-1099/{len(whole)}"
    status, headers, body = fetch(f"{url}/audio?id={q(track)}")
    assert status == 200 and body == whole and headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize("attempt", ["audio?id=..%2F..%2F..%2Fetc%2Fpasswd", "audio?id=%2Fetc%2Fpasswd",
                                     "audio?id=no-such-track", "audio?id=..%2Flibrary%2Flow",
                                     "audio/..%2F..%2Fetc%2Fpasswd", "audio", "api/neighbours?id=%2Fetc"])
def test_paths_and_unknown_ids_are_refused(url, run, attempt):
    status, _, body = fetch(f"{url}/{attempt}")
    assert status in (400, 403, 404)
    assert b"root:" not in body and b"RIFF" not in body


def test_a_file_path_is_not_an_id(url, run):
    status, _, body = fetch(f"{url}/audio?id={q(run['tracks']['path'].iloc[0])}")
    assert status == 404 and b"no track with that id" in body


def test_files_outside_the_library_are_forbidden(run, tmp_path):
    """A track whose file is a symlink out of the library folder gets 403, never its bytes."""
    folder = tmp_path / "index"
    shutil.copytree(run["index"], folder)
    outside = write_tone(tmp_path / "secret.wav", seconds=0.5)
    link = run["audio"] / "low" / "link out #1.wav"
    link.symlink_to(outside)
    try:
        table = pd.read_csv(folder / "tracks.csv", dtype=str, keep_default_na=False)
        table.loc[0, "path"] = str(link)
        table.to_csv(folder / "tracks.csv", index=False)
        explorer = open_explorer(run, index_dir=folder, cache_dir=None)
        with running(explorer) as base:
            status, _, body = fetch(f"{base}/audio?id={q(table['track_id'][0])}")
            assert status == 403 and b"outside the library folder" in body
            assert fetch(f"{base}/audio?id={q(table['track_id'][1])}")[0] == 200
    finally:
        link.unlink()


def test_uploads_give_neighbours_or_a_clear_4xx_and_write_nothing(url, run, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in run["index"].iterdir()}
    audio_before = sorted(p.relative_to(run["audio"]) for p in run["audio"].rglob("*"))

    song = write_tone(tmp_path / "query.wav", freqs=(1800.0, 2700.0), seconds=1.5, seed=3)
    name = "Ärger #1 100% ?.wav"
    status, _, body = fetch(f"{url}/api/query?filename={q(name)}&k=3", data=song.read_bytes())
    result = json.loads(body)
    assert status == 200 and result["query"] == name
    assert [n["label"] for n in result["neighbours"]][0] == "high" and len(result["neighbours"]) == 3

    status, _, body = fetch(f"{url}/api/query?filename=notes.mp3", data=b"these are my notes, not a song\n" * 20)
    assert 400 <= status < 500
    message = json.loads(body)["error"]
    assert message.startswith("notes.mp3: ") and "songspace-upload" not in message

    status, _, body = fetch(f"{url}/api/query?filename=empty.wav", data=b"")
    assert status == 400 and json.loads(body)["error"] == "empty.wav: the file is empty"

    status, _, body = fetch(f"{url}/api/query?filename=big.wav", data=b"\0" * (UPLOAD_LIMIT + 1))
    assert status == 413 and "upload limit" in json.loads(body)["error"]

    assert {p: p.stat().st_mtime_ns for p in run["index"].iterdir()} == before
    assert sorted(p.relative_to(run["audio"]) for p in run["audio"].rglob("*")) == audio_before


def test_evaluation_has_the_grid_baselines_curves_and_words(url):
    status, _, body = fetch(url + "/api/evaluation")
    result = json.loads(body)
    assert status == 200 and result["available"] is True
    assert len(result["grid"]) == 4 and result["grid"][3]["accuracy"] is None  # NaN is not JSON
    assert set(result["baselines"]) == {"model", "mfcc_stats"} and result["baselines"]["model"]["accuracy"] == 0.8
    assert result["curves"]["train/loss"] == [[0.0, 0.2], [1.0, 0.15], [2.0, 0.1]]
    assert "80.0% of 20 test quartets" in result["words"] and "20.0 points ahead, significantly" in result["words"]


def test_stale_index_is_refused_with_the_cli_message(run, tmp_path, capsys):
    model = tmp_path / "best.pt"
    shutil.copyfile(run["model"], model)
    with model.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(StaleIndex) as err:
        open_explorer(run, model_path=model)
    track = run["tracks"]["track_id"].iloc[0]
    assert main(["similar", track, "--index", str(run["index"]), "--model", str(model)]) == 2
    similar_err = capsys.readouterr().err
    assert main(["serve", "--index", str(run["index"]), "--model", str(model), "--library", str(run["audio"]),
                 "--port", "1"]) == 2
    serve_err = capsys.readouterr().err
    assert serve_err == similar_err == f"songspace: error: {err.value}\n"


def test_a_model_changed_while_serving_refuses_uploads(run, tmp_path):
    model = tmp_path / "best.pt"
    shutil.copyfile(run["model"], model)
    explorer = open_explorer(run, model_path=model, cache_dir=None)
    with running(explorer) as base:
        with model.open("ab") as f:
            f.write(b"\0")
        song = run["tracks"]["path"].iloc[0]
        status, _, body = fetch(f"{base}/api/query?filename=a.wav", data=Path(song).read_bytes())
        assert status == 409 and "the index is stale; run `dvc repro index`" in json.loads(body)["error"]


def test_static_export_is_self_contained_with_encoded_relative_audio(explorer, run):
    out = export.write_html(explorer, run["root"] / "plots" / "explorer.html", k=3)
    html = out.read_text()
    assert "<script src" not in html and "<link" not in html
    start = html.index("window.SONGSPACE_DATA = ") + len("window.SONGSPACE_DATA = ")
    payload = json.loads(html[start: html.index(";</script>", start)])
    ids = list(run["tracks"]["track_id"])
    assert [t["id"] for t in payload["tracks"]["tracks"]] == ids
    for track, path in zip(ids, run["tracks"]["path"]):
        link = payload["audio"][track]
        # a relative URL: nothing a browser reads as a fragment, query, escape or separator
        assert link.startswith("../library/") and not set(link) & set(" #?&+\"'")
        parts = urllib.parse.urlsplit(link)
        assert parts.path == link and not parts.query and not parts.fragment
        assert (out.parent / urllib.parse.unquote(link)).resolve() == Path(path).resolve()
    for track in ids[:3]:  # the same neighbours the server lists
        listed = explorer.neighbours(track, 3)["neighbours"]
        assert [n["track_id"] for n in payload["neighbours"][track]] == [n["track_id"] for n in listed]
    assert payload["evaluation"]["grid"] and "upload" in html
