"""`songspace serve`: the explorer page over a built index, on a local Starlette app.

Starlette (ASGI, with uvicorn) because the page needs little: a few JSON routes, static files
and audio with HTTP range requests, which Starlette's FileResponse answers (206, Content-Range)
so the browser's audio element can seek. No template engine, no ORM, no form library: uploads
are the request body itself, streamed to a temporary file and cut off at the size limit.

Routes:
    GET  /                               the page
    GET  /static/...                     its script and style sheet
    GET  /api/tracks                     every track: id, label, name, map position
    GET  /api/tracks/{id}/neighbours?k=  `songspace similar ID --json`
    GET  /api/evaluation                 grid, baselines, curves, headline in words
    GET  /audio/{id}                     the track's file (by id only; ranges honoured)
    POST /api/query?filename=&k=         neighbours of an uploaded audio file (body = the file)

Audio is served only for tracks of the index whose file lies inside the library folder;
no route takes a path from the client. Nothing is written into the library or the index.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from songspace.explorer.data import Explorer, Forbidden
from songspace.index import LibraryError, StaleIndex, UnknownTrack

STATIC_DIR = Path(__file__).parent / "static"
MAX_K = 100
UPLOAD_SUFFIX_CHARS = 8   # longest file suffix kept from an upload's name (".flac", ".opus")


def page_html(static_prefix: str = "static") -> str:
    """The page's HTML, loading explorer.css and explorer.js from static_prefix."""
    html = (STATIC_DIR / "explorer.html").read_text()
    return (html.replace("<!--STYLE-->", f'<link rel="stylesheet" href="{static_prefix}/explorer.css">')
                .replace("<!--DATA-->", "")
                .replace("<!--SCRIPT-->", f'<script src="{static_prefix}/explorer.js"></script>'))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _status(err: Exception) -> int:
    from songspace import audio

    if isinstance(err, Forbidden):
        return 403
    if isinstance(err, UnknownTrack):
        return 404
    if isinstance(err, StaleIndex):
        return 409
    if isinstance(err, audio.AudioError):
        return 415
    return 400


def _k(request: Request, default: int) -> int:
    try:
        k = int(request.query_params.get("k", default))
    except ValueError:
        k = default
    return max(1, min(k, MAX_K))


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


def create_app(explorer: Explorer, max_upload_bytes: int, k: int = 10) -> Starlette:
    """The explorer's ASGI app over an opened `Explorer`."""
    limit_mb = max_upload_bytes / 2**20

    async def index(request: Request):
        return HTMLResponse(page_html())

    async def tracks(request: Request):
        return JSONResponse(await run_in_threadpool(explorer.tracks))

    async def neighbours(request: Request):
        try:
            return JSONResponse(await run_in_threadpool(explorer.neighbours, request.path_params["track_id"],
                                                        _k(request, k)))
        except LibraryError as err:
            return _error(_status(err), str(err))

    async def evaluation(request: Request):
        return JSONResponse(await run_in_threadpool(explorer.evaluation))

    async def audio_file(request: Request):
        try:
            path = explorer.audio_path(request.path_params["track_id"])
        except LibraryError as err:
            return _error(_status(err), str(err))
        return FileResponse(path)  # answers Range requests with 206 and Content-Range

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
            if size == 0:
                return _error(400, f"{name}: the file is empty")
            try:
                result = await run_in_threadpool(explorer.query_file, dest, name, _k(request, k))
            except Exception as err:
                from songspace import audio

                if isinstance(err, (LibraryError, audio.AudioError)):
                    return _error(_status(err), str(err))
                raise
        return JSONResponse(result)

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),  # none; spares a 404 per load
        Route("/api/tracks", tracks),
        Route("/api/tracks/{track_id:str}/neighbours", neighbours),
        Route("/api/evaluation", evaluation),
        Route("/api/query", query, methods=["POST"]),
        Route("/audio/{track_id:str}", audio_file),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(routes=routes)


def serve(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 50.0,
          k: int = 10) -> None:
    """Run the explorer with uvicorn until interrupted."""
    import uvicorn

    app = create_app(explorer, int(max_upload_mb * 2**20), k)
    uvicorn.run(app, host=host, port=port, log_level="warning")
