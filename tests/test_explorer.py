"""The explorer: the real server on a free loopback port, its routes, safety, and the static export."""
from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from songspace.cli import main  # noqa: E402
from songspace.explorer import data, export, server  # noqa: E402
from songspace.index import StaleIndex  # noqa: E402
from tests.conftest import write_tone  # noqa: E402
from tests.test_index import build_tiny_library  # noqa: E402

UPLOAD_LIMIT = 200_000  # bytes: the tiny tone tracks are ~48 kB


def tiny_run(root: Path) -> dict:
    """A tiny library, model and index, with an eval.json and dvclive curves beside them."""
    tiny = build_tiny_library(root)
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
    return {**tiny, "audio": root / "audio", "eval": root / "eval.json", "live": root / "dvclive"}


def open_explorer(run: dict, **kw) -> data.Explorer:
    args = {"index_dir": run["index"], "model_path": run["model"], "library_root": run["audio"],
            "eval_json": run["eval"], "live_dir": run["live"], "cache_dir": run["root"] / "cache"}
    return data.Explorer.open(**{**args, **kw})


@contextlib.contextmanager
def running(app):
    """Serve app with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
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
    return tiny_run(tmp_path_factory.mktemp("explorer"))


@pytest.fixture(scope="module")
def explorer(run):
    return open_explorer(run)


@pytest.fixture(scope="module")
def url(explorer):
    with running(server.create_app(explorer, UPLOAD_LIMIT, k=4)) as base:
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
    assert result["labels"] == ["high", "low"] and result["projection"] == "t-SNE"
    xs = [t["x"] for t in result["tracks"]] + [t["y"] for t in result["tracks"]]
    assert min(xs) >= 0 and max(xs) <= 1 and max(xs) - min(xs) > 0.5
    assert result["index"]["distance"] == "cosine" and result["index"]["tracks"] == 12
    # the projection is cached: a second explorer reads it back instead of recomputing
    assert len(list((run["root"] / "cache").glob("map-*.npz"))) == 1


def test_neighbours_equal_songspace_similar_json(url, run, capsys):
    for track in run["tracks"]["track_id"].iloc[[0, 7]]:
        status, _, body = fetch(f"{url}/api/tracks/{track}/neighbours?k=5")
        assert status == 200
        assert main(["similar", track, "-k", "5", "--json", "--index", str(run["index"]),
                     "--model", str(run["model"])]) == 0
        assert json.loads(body) == json.loads(capsys.readouterr().out)


def test_audio_range_request_returns_206_with_the_right_bytes(url, run):
    path = Path(run["tracks"]["path"].iloc[3])
    whole = path.read_bytes()
    status, headers, body = fetch(f"{url}/audio/{run['tracks']['track_id'].iloc[3]}",
                                  headers={"Range": "bytes=100-1099"})
    assert status == 206
    assert body == whole[100:1100]
    assert headers["content-range"] == f"bytes 100-1099/{len(whole)}"
    status, headers, body = fetch(f"{url}/audio/{run['tracks']['track_id'].iloc[3]}")
    assert status == 200 and body == whole and headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize("attempt", ["..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "no-such-track",
                                     "..%2Faudio%2Flow0.wav"])
def test_paths_and_unknown_ids_are_refused(url, attempt):
    status, _, body = fetch(f"{url}/audio/{attempt}")
    assert status in (403, 404)
    assert b"root:" not in body and b"RIFF" not in body


def test_files_outside_the_library_are_forbidden(run, tmp_path):
    """A track whose file is a symlink out of the library folder gets 403, never its bytes."""
    index = tmp_path / "index"
    shutil.copytree(run["index"], index)
    outside = write_tone(tmp_path / "secret.wav", seconds=0.5)
    link = run["audio"] / "link-out.wav"
    link.symlink_to(outside)
    try:
        table = (index / "tracks.csv").read_text().splitlines()
        first = table[1].split(",")
        first[1] = str(link)
        (index / "tracks.csv").write_text("\n".join([table[0], ",".join(first), *table[2:]]) + "\n")
        explorer = open_explorer(run, index_dir=index, cache_dir=None)
        with running(server.create_app(explorer, UPLOAD_LIMIT)) as base:
            status, _, body = fetch(f"{base}/audio/{first[0]}")
            assert status == 403 and b"outside the library folder" in body
            assert fetch(f"{base}/audio/{table[2].split(',')[0]}")[0] == 200
    finally:
        link.unlink()


def test_uploads_give_neighbours_or_a_clear_4xx_and_write_nothing(url, run, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in run["index"].iterdir()}
    audio_before = sorted(p.name for p in run["audio"].iterdir())

    song = write_tone(tmp_path / "query.wav", freqs=(1800.0, 2700.0), seconds=1.5, seed=3)
    status, _, body = fetch(f"{url}/api/query?filename=query.wav&k=3", data=song.read_bytes())
    result = json.loads(body)
    assert status == 200 and result["query"] == "query.wav"
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
    assert sorted(p.name for p in run["audio"].iterdir()) == audio_before


def test_evaluation_has_the_grid_baselines_curves_and_words(url):
    status, _, body = fetch(url + "/api/evaluation")
    result = json.loads(body)
    assert status == 200
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
    assert main(["similar", "low0", "--index", str(run["index"]), "--model", str(model)]) == 2
    similar_err = capsys.readouterr().err
    assert main(["serve", "--index", str(run["index"]), "--model", str(model), "--library", str(run["audio"]),
                 "--port", "1"]) == 2
    serve_err = capsys.readouterr().err
    assert serve_err == similar_err == f"songspace: error: {err.value}\n"


def test_a_model_changed_while_serving_refuses_uploads(run, tmp_path):
    model = tmp_path / "best.pt"
    shutil.copyfile(run["model"], model)
    explorer = open_explorer(run, model_path=model, cache_dir=None)
    with running(server.create_app(explorer, UPLOAD_LIMIT)) as base:
        with model.open("ab") as f:
            f.write(b"\0")
        song = run["tracks"]["path"].iloc[0]
        status, _, body = fetch(f"{base}/api/query?filename=a.wav", data=Path(song).read_bytes())
        assert status == 409 and "the index is stale; run `dvc repro index`" in json.loads(body)["error"]


def test_static_export_is_self_contained_with_relative_audio(explorer, run):
    out = export.write_html(explorer, run["root"] / "plots" / "explorer.html", k=3)
    html = out.read_text()
    assert "<script src" not in html and "<link" not in html
    start = html.index("window.SONGSPACE_DATA = ") + len("window.SONGSPACE_DATA = ")
    payload = json.loads(html[start: html.index(";</script>", start)])
    ids = list(run["tracks"]["track_id"])
    assert [t["id"] for t in payload["tracks"]["tracks"]] == ids
    assert payload["audio"][ids[0]] == "../audio/" + Path(run["tracks"]["path"].iloc[0]).name
    assert all((out.parent / link).is_file() for link in payload["audio"].values())
    for track in ids[:3]:  # the same neighbours the server lists
        listed = explorer.neighbours(track, 3)["neighbours"]
        assert [n["track_id"] for n in payload["neighbours"][track]] == [n["track_id"] for n in listed]
    assert payload["evaluation"]["grid"] and "upload" in html
