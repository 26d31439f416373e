"""The explorer server's defences and failures, over real HTTP on a free loopback port:
the Host names it answers, cross-origin uploads, the query duration limit, a damaged
checkpoint or eval.json, aborted uploads, neighbours while an upload embeds, and how
`songspace serve` refuses a bad port, a port in use and warns of a network-wide bind."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from songspace import config  # noqa: E402
from songspace.cli import main  # noqa: E402
from songspace.explorer import guard, server  # noqa: E402
from tests.test_explorer import fetch, open_explorer, q, running, shared_run  # noqa: E402
from tests.tiny import TINY_PARAMS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def explorer(run):
    return open_explorer(run, cache_dir=None)


@pytest.fixture(scope="module")
def served(explorer):
    with running(explorer, allowed=("music.example",), max_query_seconds=5.0) as base:
        yield base, int(base.rsplit(":", 1)[1])


def song_bytes(run) -> bytes:
    return Path(run["tracks"]["path"].iloc[0]).read_bytes()


# ---------------------------------------------------------------- Host and Origin


def test_only_the_servers_own_host_names_are_answered(served, run):
    base, port = served
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"music.example:{port}"):
        status, _, body = fetch(base + "/api/tracks", headers={"Host": host})
        assert status == 200 and len(json.loads(body)["tracks"]) == 12, host
    # DNS rebinding: the attacker's own name resolved to 127.0.0.1; and a wrong port
    for host in (f"attacker.test:{port}", "attacker.test", f"127.0.0.1:{port + 1}", f"music.example:{port}.evil"):
        status, _, body = fetch(base + "/api/tracks", headers={"Host": host})
        assert status == 400 and "is not served here" in json.loads(body)["error"], host
        assert run["tracks"]["track_id"].iloc[0].encode() not in body
    status, _, body = fetch(f"{base}/audio?id={q(run['tracks']['track_id'].iloc[0])}",
                            headers={"Host": f"attacker.test:{port}"})
    assert status == 400 and b"RIFF" not in body


def test_uploads_from_another_origin_or_site_are_refused(served, run):
    base, port = served
    own = f"http://127.0.0.1:{port}"
    refused = [{"Origin": "http://attacker.test", "Content-Type": "text/plain"},
               {"Origin": "null"},
               {"Origin": f"http://localhost:{port}"},  # another origin, though the same server
               {"Origin": own, "Sec-Fetch-Site": "cross-site"},
               {"Sec-Fetch-Site": "same-site"}]
    for headers in refused:
        status, _, body = fetch(f"{base}/api/query?filename=a.wav", data=song_bytes(run), headers=headers)
        assert status == 403 and json.loads(body)["error"].startswith("refused: "), headers
    for headers in ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, {}):  # the page; curl
        status, _, body = fetch(f"{base}/api/query?filename=a.wav&k=2", data=song_bytes(run), headers=headers)
        assert status == 200 and len(json.loads(body)["neighbours"]) == 2, headers


def test_allowed_hosts_follow_the_bind_address():
    assert guard.allowed_hosts("127.0.0.1", 8000) == {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"}
    assert guard.allowed_hosts("0.0.0.0", 80, ["Box.LAN", "10.0.0.2:9000"]) == {
        "127.0.0.1:80", "localhost:80", "[::1]:80", "box.lan:80", "10.0.0.2:9000"}
    assert guard.allowed_hosts("192.168.1.5", 8000) == {"192.168.1.5:8000"}
    assert guard.allowed_hosts("::1", 8000) >= {"[::1]:8000", "localhost:8000"}
    assert guard.normalise_host("box.lan") == "box.lan:80"  # a Host header without a port
    for bad in ("a:b:c:", "name:port", "[::1", ""):
        with pytest.raises(ValueError, match="--allowed-host"):
            guard.allowed_hosts("127.0.0.1", 8000, [bad])


# ---------------------------------------------------------------- uploads


def test_a_long_upload_is_refused_from_its_header_before_decoding(served, explorer, tmp_path):
    """60 s of silent FLAC (a few kB) against max_query_seconds 5: 413 naming the limit.

    The embedding lock is held meanwhile: decoding happens only under it, so an answer
    while it is held shows the file was judged from its header alone.
    """
    base, _ = served
    path = tmp_path / "long.flac"
    sf.write(path, np.zeros(60 * 8000, dtype=np.float32), 8000)
    assert path.stat().st_size < 50_000
    with explorer.embed_lock:
        status, _, body = fetch(f"{base}/api/query?filename=long.flac", data=path.read_bytes())
    assert status == 413
    assert json.loads(body)["error"] == ("long.flac: 60 s of audio, more than the 5 s a query may decode "
                                         "(params.yaml serve.max_query_seconds)")


def test_neighbours_do_not_wait_behind_an_upload_being_embedded(served, explorer, run):
    """Holding what the upload path holds while it embeds: the upload waits, neighbours do not."""
    base, _ = served
    answers = {}

    def upload():
        answers["upload"] = fetch(f"{base}/api/query?filename=a.wav&k=2", data=song_bytes(run))

    with explorer.embed_lock:
        uploading = threading.Thread(target=upload)
        uploading.start()
        t0 = time.monotonic()
        status, _, body = fetch(f"{base}/api/neighbours?id={q(run['tracks']['track_id'].iloc[5])}&k=3")
        took = time.monotonic() - t0
        assert status == 200 and len(json.loads(body)["neighbours"]) == 3 and took < 5
        uploading.join(0.5)
        assert uploading.is_alive()  # still waiting for the lock the test holds
    uploading.join(30)
    assert answers["upload"][0] == 200


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def server_log():
    """Every record of uvicorn's and the server's loggers during a test."""
    handler = Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "songspace.explorer.server")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
    loggers[2].setLevel(logging.INFO)
    yield handler.records
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


def test_an_aborted_upload_is_one_log_line_without_traceback(served, server_log):
    base, port = served
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(f"POST /api/query?filename=cut.wav HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Content-Length: 150000\r\n\r\n".encode() + b"RIFF" + b"\0" * 4000)
    deadline = time.monotonic() + 10
    while not any("aborted" in r.getMessage() for r in server_log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.getMessage() for r in server_log] == ["upload of cut.wav aborted: the client disconnected"]
    assert not any(r.exc_info for r in server_log)


def test_a_checkpoint_damaged_while_serving_gives_a_json_error(run, tmp_path, server_log):
    model = tmp_path / "best.pt"
    model.write_bytes(Path(run["model"]).read_bytes())
    explorer = open_explorer(run, model_path=model, cache_dir=None)
    with running(explorer) as base:
        model.write_bytes(b"PK\x03\x04 not a checkpoint any more" * 10)
        status, _, body = fetch(f"{base}/api/query?filename=a.wav", data=song_bytes(run))
        assert status == 503
        assert json.loads(body)["error"].startswith(f"{model}: corrupt or truncated model checkpoint")
        track = run["tracks"]["track_id"].iloc[0]  # the index's own tracks need no model
        assert fetch(f"{base}/api/neighbours?id={q(track)}")[0] == 200
    assert not [r for r in server_log if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("content, problem", [
    ({"headline": [1, 2], "grid": []}, "'headline' is an array, expected an object"),
    ({"headline": {"accuracy": 0.8}, "grid": "cosine"}, "'grid' is a string, expected an array"),
    ({"grid": [3]}, "'grid[0]' is a number, expected an object"),
    ({"baselines": {"mfcc": "good"}}, "'baselines.mfcc' is a string, expected an object"),
    ({"headline": {"accuracy": "80%"}}, "'headline.accuracy' is a string, expected a number"),
])
def test_an_evaluation_of_the_wrong_shape_is_marked_unavailable(run, tmp_path, server_log, content, problem):
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps(content))
    with running(open_explorer(run, eval_json=eval_json, cache_dir=None)) as base:
        status, _, body = fetch(base + "/api/evaluation")
    result = json.loads(body)
    assert status == 200 and result["available"] is False
    assert result["words"] == f"{eval_json}: {problem}" and result["grid"] == [] and result["baselines"] == {}
    assert result["curves"]  # the training curves are still shown
    assert not [r for r in server_log if r.levelno >= logging.ERROR]


def test_max_query_seconds_is_a_checked_param():
    assert config.load(REPO / "params.yaml").serve.max_query_seconds == 1200
    with pytest.raises(config.ConfigError, match="serve.max_query_seconds"):
        config.from_dict({**TINY_PARAMS, "serve": {"max_query_seconds": 0}})


# ---------------------------------------------------------------- `songspace serve`


def serve_args(run, *extra: str) -> list[str]:
    return ["serve", "--index", str(run["index"]), "--model", str(run["model"]), "--library", str(run["audio"]),
            "--metrics", str(run["eval"]), "--live", str(run["live"]), "--params", str(REPO / "params.yaml"),
            *extra]


@pytest.mark.parametrize("extra, message", [
    (("--port", "99999"), "--port 99999: not a port number (1 to 65535, or 0 for any free port)"),
    (("--port", "-1"), "--port -1: not a port number (1 to 65535, or 0 for any free port)"),
    (("--allowed-host", "a:b:c:"), "--allowed-host 'a:b:c:': not a host name (NAME or NAME:PORT)"),
])
def test_serve_refuses_a_bad_port_or_host_name_in_one_line(run, capsys, extra, message):
    assert main(serve_args(run, *extra)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"songspace: error: {message}\n"


def test_serve_refuses_a_port_in_use_before_its_banner(run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(serve_args(run, "--port", str(port))) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"songspace: error: port {port} on 127.0.0.1 is in use (another server?); "
                   "choose another with --port\n")


def test_serve_on_all_interfaces_warns_and_still_checks_hosts(run, tmp_path):
    """The real command in a subprocess, on 0.0.0.0 and a free port; run from tmp_path so that
    its map cache lands there."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    proc = subprocess.Popen([sys.executable, "-m", "songspace", *serve_args(run, "--host", "0.0.0.0", "--port", "0")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert banner.startswith("songspace explorer: http://127.0.0.1:"), proc.stderr.read()
        base = banner.split()[2].rstrip("/")
        port = int(base.rsplit(":", 1)[1])
        assert fetch(base + "/api/tracks")[0] == 200
        assert fetch(base + "/api/tracks", headers={"Host": f"attacker.test:{port}"})[0] == 400
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert err.startswith("songspace: warning: listening on 0.0.0.0: the library (its track list and audio "
                          "files) and the upload box are reachable from the network")
    assert server.exposure_warning("127.0.0.1") is None and server.exposure_warning("localhost") is None
    assert server.exposure_warning("::1") is None and "192.168.1.5" in server.exposure_warning("192.168.1.5")
