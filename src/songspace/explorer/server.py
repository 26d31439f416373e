"""`songspace serve`: the explorer page over a built index, on a local Starlette app.

Starlette (ASGI, with uvicorn) because the page needs little: a few JSON routes, static files
and audio with HTTP range requests, which Starlette's FileResponse answers (206, Content-Range)
so the browser's audio element can seek. No template engine, no ORM, no form library: uploads
are the request body itself, streamed to a temporary file and cut off at the size limit.

Routes (a track is named by its id as a query parameter: ids of a folder library are paths
such as `jazz/Disc 1/01 #1.mp3`, and a query string carries any text exactly, where a path
segment would be split at `/` or normalised at `.`/`..` by the browser):
    GET  /                               the page
    GET  /static/...                     its script and style sheet
    GET  /api/tracks                     every track: id, label, name, map position
    GET  /api/neighbours?id=&k=          `songspace similar ID --json`
    GET  /api/radio?seed=&n=&max_per_artist=&no_same_album=&diversity=&min_similarity=
                                         `songspace radio SEED --json`
    GET  /api/path?from=&to=&n=&min_similarity=    `songspace path A B --json`
    GET  /api/playlists?k=&min_similarity=         `songspace playlists --json`
    GET  /api/evaluation                 grid, baselines, curves, headline in words
    GET  /audio?id=                      the track's file (by id only; ranges honoured)
    POST /api/query?filename=&k=         neighbours of an uploaded audio file (body = the file)
    GET  /api/judge/next?annotator=      the judge view's next three songs (`judge.Judge.ask`)
    POST /api/judge                      an answer to it (JSON body, `judge.Judge.answer`)
    GET  /api/judge/stats?annotator=     judgements made and the model's agreement with them

Audio is served only for tracks of the index whose file lies inside the library folder;
no route takes a path from the client. Nothing is written into the library or the index; the
judge view's answers go to its judgements file (`judgements.JudgementStore`).
Requests pass `guard.Guard` first (the Host names the server answers, same-origin uploads).
"""
from __future__ import annotations

import errno
import json
import logging
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from songspace.config import ServeParams
from songspace.errors import UserError
from songspace.explorer import guard
from songspace.explorer.data import Explorer, Forbidden, QueryTooLong
from songspace.explorer.judge import Judge, JudgeError, UnknownQuestion
from songspace.index import LibraryError, StaleIndex, UnknownTrack

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
MAX_K = 100
MAX_LIST = 500        # songs in one radio or path: each costs a pass over the library
MAX_PLAYLISTS = 200   # k of /api/playlists (k-means over the library)
UPLOAD_SUFFIX_CHARS = 8   # longest file suffix kept from an upload's name (".flac", ".opus")
MAX_ANSWER_BYTES = 4096   # a judge answer's JSON body


def page_html(static_prefix: str = "static") -> str:
    """The page's HTML, loading explorer.css, explorer.js and judge.js from static_prefix."""
    html = (STATIC_DIR / "explorer.html").read_text()
    return (html.replace("<!--STYLE-->", f'<link rel="stylesheet" href="{static_prefix}/explorer.css">')
                .replace("<!--DATA-->", "")
                .replace("<!--SCRIPT-->", f'<script src="{static_prefix}/explorer.js"></script>\n'
                                          f'<script src="{static_prefix}/judge.js"></script>'))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class ServeError(UserError):
    """`songspace serve` cannot start: a bad port or host name, a port in use."""


def _status(err: Exception) -> int:
    from songspace import audio
    from songspace.checkpoint import CheckpointError

    if isinstance(err, Forbidden):
        return 403
    if isinstance(err, UnknownTrack):
        return 404
    if isinstance(err, StaleIndex):
        return 409
    if isinstance(err, QueryTooLong):
        return 413
    if isinstance(err, audio.AudioError):
        return 415
    if isinstance(err, CheckpointError):
        return 503  # the model cannot embed until its checkpoint is whole again
    return 400


def _track_id(request: Request) -> str | None:
    return request.query_params.get("id")


def _k(request: Request, default: int) -> int:
    try:
        k = int(request.query_params.get("k", default))
    except ValueError:
        k = default
    return max(1, min(k, MAX_K))


class BadParameter(ValueError):
    """A query parameter that is missing, malformed or out of range; the message names it."""


def _int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """An integer parameter in [lo, hi]; default when absent or empty."""
    text = request.query_params.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(f"{name}={text!r}: not a whole number") from None
    if not lo <= value <= hi:
        raise BadParameter(f"{name}={value}: must lie between {lo} and {hi}")
    return value


def _unit(request: Request, name: str, default: float) -> float:
    """A number in [0, 1] (NaN and infinities refused); default when absent or empty."""
    text = request.query_params.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadParameter(f"{name}={text!r}: not a number") from None
    if not 0 <= value <= 1:  # False for NaN too
        raise BadParameter(f"{name}={text}: must lie in [0, 1]")
    return value


def _flag(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "").strip().lower()
    if text not in ("", "0", "1", "false", "true"):
        raise BadParameter(f"{name}={text!r}: must be 0 or 1")
    return text in ("1", "true")


def _required(request: Request, name: str, usage: str) -> str:
    value = request.query_params.get(name)
    if value is None:
        raise BadParameter(f"name the track: {usage}")
    return value


def _radio_args(request: Request) -> tuple:
    return ((_required(request, "seed", "/api/radio?seed=TRACK_ID"), _int(request, "n", 30, 1, MAX_LIST)),
            {"max_per_artist": _int(request, "max_per_artist", None, 1, MAX_LIST),
             "no_same_album": _flag(request, "no_same_album"),
             "diversity": _unit(request, "diversity", 0.3),
             "min_similarity": _unit(request, "min_similarity", 0.0)})


def _path_args(request: Request) -> tuple:
    usage = "/api/path?from=TRACK_ID&to=TRACK_ID"
    return ((_required(request, "from", usage), _required(request, "to", usage),
             _int(request, "n", 12, 2, MAX_LIST)), {"min_similarity": _unit(request, "min_similarity", 0.0)})


def _playlists_args(request: Request) -> tuple:
    return (_int(request, "k", 20, 1, MAX_PLAYLISTS),), {"min_similarity": _unit(request, "min_similarity", 0.0)}


def _listing(compute, parse):
    """A GET route answering JSON compute(*args, **kw), computed in a worker thread, for the
    request's parameters `parse(request) -> (args, kw)`."""
    async def route(request: Request):
        try:
            args, kw = parse(request)
            return JSONResponse(await run_in_threadpool(compute, *args, **kw))
        except BadParameter as err:
            return _error(400, str(err))
        except UserError as err:  # an unknown track (404), a list that cannot be made (400)
            return _error(_status(err), str(err))
    return route


class UploadTooLarge(Exception):
    pass


async def _save_body(request: Request, dest: Path, limit: int) -> int:
    """Stream the request body to dest; `UploadTooLarge` past limit bytes. Returns the size."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge
    size = 0
    with open(dest, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise UploadTooLarge
            f.write(chunk)
    return size


def judge_routes(judge: Judge | None) -> list[Route]:
    """/api/judge/next, /api/judge (POST) and /api/judge/stats; 404 when judging is off."""
    def off():
        return _error(404, "the judge view is off on this server")

    async def ask(request: Request):
        if judge is None:
            return off()
        try:
            return JSONResponse(await run_in_threadpool(judge.ask, request.query_params.get("annotator", "")))
        except (JudgeError, UserError) as err:
            return _error(400, str(err))

    async def answer(request: Request):
        if judge is None:
            return off()
        body = await request.body()
        if len(body) > MAX_ANSWER_BYTES:
            return _error(413, f"an answer is a small JSON object (at most {MAX_ANSWER_BYTES} bytes)")
        try:
            return JSONResponse(await run_in_threadpool(judge.answer, json.loads(body or b"null")))
        except UnknownQuestion as err:
            return _error(404, str(err))
        except json.JSONDecodeError:
            return _error(400, "the answer is not JSON")
        except (JudgeError, UserError) as err:
            return _error(400, str(err))

    async def stats(request: Request):
        if judge is None:
            return off()
        try:
            return JSONResponse(await run_in_threadpool(judge.stats, request.query_params.get("annotator", "")))
        except UserError as err:
            return _error(400, str(err))

    return [Route("/api/judge/next", ask), Route("/api/judge", answer, methods=["POST"]),
            Route("/api/judge/stats", stats)]


def _query_endpoint(explorer: Explorer, max_upload_bytes: int, k: int, max_query_seconds: float):
    """POST /api/query: the uploaded file's nearest tracks (`Explorer.query_file`); the body is
    saved aside, at most `max_upload_bytes` (413 past it), and removed after."""
    limit_mb = max_upload_bytes / 2**20

    async def query(request: Request):
        name = Path(request.query_params.get("filename") or "upload").name or "upload"
        suffix = Path(name).suffix.lower()[:UPLOAD_SUFFIX_CHARS]
        with tempfile.TemporaryDirectory(prefix="songspace-upload-") as tmp:
            dest = Path(tmp) / f"query{suffix}"
            try:
                size = await _save_body(request, dest, max_upload_bytes)
            except UploadTooLarge:
                return _error(413, f"{name}: larger than the upload limit of {limit_mb:g} MB "
                                   "(params.yaml serve.max_upload_mb)")
            except ClientDisconnect:
                log.info("upload of %s aborted: the client disconnected", name)
                return Response(status_code=400)  # nobody is left to read it
            if size == 0:
                return _error(400, f"{name}: the file is empty")
            try:
                result = await run_in_threadpool(explorer.query_file, dest, name, _k(request, k),
                                                 max_query_seconds)
            except UserError as err:  # a bad file, a stale or damaged model: the user can act
                return _error(_status(err), str(err))
        return JSONResponse(result)

    return query


def create_app(explorer: Explorer, max_upload_bytes: int, k: int = 10,
               max_query_seconds: float = ServeParams.max_query_seconds,
               hosts: Iterable[str] = (), judge: Judge | None = None) -> Starlette:
    """The explorer's ASGI app over an opened `Explorer`.

    hosts: the `name:port` Host values it answers (`guard.allowed_hosts`); any other gets 400.
    judge: the judge view's questions and answers (`judge.open_judge`); None turns it off.
    """
    async def index(request: Request):
        return HTMLResponse(page_html())

    async def tracks(request: Request):
        return JSONResponse(await run_in_threadpool(explorer.tracks))

    async def neighbours(request: Request):
        track_id = _track_id(request)
        if track_id is None:
            return _error(400, "name the track: /api/neighbours?id=TRACK_ID")
        try:
            return JSONResponse(await run_in_threadpool(explorer.neighbours, track_id, _k(request, k)))
        except LibraryError as err:
            return _error(_status(err), str(err))

    async def evaluation(request: Request):
        return JSONResponse(await run_in_threadpool(explorer.evaluation))

    async def audio_file(request: Request):
        track_id = _track_id(request)
        if track_id is None:
            return _error(400, "name the track: /audio?id=TRACK_ID")
        try:
            path = explorer.audio_path(track_id)
        except LibraryError as err:
            return _error(_status(err), str(err))
        return FileResponse(path)  # answers Range requests with 206 and Content-Range

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),  # none; spares a 404 per load
        Route("/api/tracks", tracks),
        Route("/api/neighbours", neighbours),
        Route("/api/radio", _listing(explorer.radio, _radio_args)),
        Route("/api/path", _listing(explorer.path, _path_args)),
        Route("/api/playlists", _listing(explorer.playlists, _playlists_args)),
        Route("/api/evaluation", evaluation),
        Route("/api/query", _query_endpoint(explorer, max_upload_bytes, k, max_query_seconds),
              methods=["POST"]),
        *judge_routes(judge),
        Route("/audio", audio_file),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(guard.Guard, hosts=frozenset(hosts))])


# ---------------------------------------------------------------- starting

MAX_PORT = 65535


def check_options(host: str, port: int, allowed_hosts: Iterable[str] = ()) -> None:
    """`ServeError` for a port out of range or a malformed --allowed-host, before anything starts."""
    if not 0 <= port <= MAX_PORT:
        raise ServeError(f"--port {port}: not a port number (1 to {MAX_PORT}, or 0 for any free port)")
    try:
        guard.allowed_hosts(host, port, allowed_hosts)
    except ValueError as err:
        raise ServeError(str(err)) from None


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; `ServeError` (one line) when that is impossible."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restarts reuse the port
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is in use (another server?); choose another "
                             "with --port") from None
        if err.errno == errno.EACCES:
            raise ServeError(f"port {port} on {host}: permission denied; choose a port above 1023 "
                             "with --port") from None
        raise ServeError(f"cannot listen on {host} port {port}: {err.strerror or err}") from None
    return sock


def exposure_warning(host: str) -> str | None:
    """What binding host means for who can reach the library; None for a loopback address."""
    if guard.is_loopback(host):
        return None
    return (f"listening on {host}: the library (its track list and audio files) and the upload "
            "box are reachable from the network by anyone who can reach this machine (browsers "
            "under the names given with --allowed-host); --host 127.0.0.1 keeps them on this machine")


def page_url(host: str, port: int) -> str:
    """The page's address for the banner (loopback for an all-interfaces bind)."""
    name = "127.0.0.1" if host in guard.WILDCARD_HOSTS else guard.bracketed(host)
    return f"http://{name}:{port}/"


def serve(explorer: Explorer, sock: socket.socket, hosts: Iterable[str], params: ServeParams,
          judge: Judge | None = None) -> None:
    """Run the explorer with uvicorn on a bound socket (`bind`) until interrupted."""
    import uvicorn

    app = create_app(explorer, int(params.max_upload_mb * 2**20), params.neighbours,
                     params.max_query_seconds, hosts, judge)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
