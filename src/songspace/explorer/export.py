"""The explorer as one self-contained HTML file, for sharing a run (the `explorer` stage).

The page's style sheet, script and data (tracks on the map, every track's neighbours, the
evaluation) are inlined; nothing is fetched. Audio is not embedded: each track links to its
file by a path relative to the page (a URL: percent-encoded per segment), so the page plays
the songs where the library sits beside it (plots/explorer.html -> ../data/corpus/...).
Upload, radio, paths and the judge view need the server and are hidden (judge.js is not
inlined: its box stays `hidden`).
"""
from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

from songspace.explorer.data import Explorer
from songspace.explorer.server import STATIC_DIR


def _inline_json(data) -> str:
    # "</script>" (or "<!--") in a name would end the element early; \u003c is "<" to JSON
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def audio_link(relative: str | None) -> str | None:
    """A relative posix file path as a relative URL: each segment percent-encoded (UTF-8).

    A name may hold `#`, `?`, `%` or spaces, which a URL would otherwise read as a fragment,
    a query or an escape; `/` between segments and `..` stay as they are.
    """
    if relative is None:
        return None
    return "/".join(urllib.parse.quote(part, safe="") for part in relative.split("/"))


def page(explorer: Explorer, out_dir: str | Path, k: int = 10) -> str:
    """The whole page as a string; audio links relative to out_dir (the folder the page goes to)."""
    tracks = explorer.tracks()
    data = {
        "tracks": tracks,
        "neighbours": explorer.all_neighbours(k),
        "evaluation": explorer.evaluation(),
        "audio": {t["id"]: audio_link(explorer.relative_audio(t["id"], out_dir)) for t in tracks["tracks"]},
    }
    html = (STATIC_DIR / "explorer.html").read_text()
    css = (STATIC_DIR / "explorer.css").read_text()
    js = (STATIC_DIR / "explorer.js").read_text()
    return (html.replace("<!--STYLE-->", f"<style>\n{css}</style>")
                .replace("<!--DATA-->", f"<script>window.SONGSPACE_DATA = {_inline_json(data)};</script>")
                .replace("<!--SCRIPT-->", f"<script>\n{js}</script>"))


def write_html(explorer: Explorer, out: str | Path, k: int = 10) -> Path:
    """Write the exported page to out (e.g. plots/explorer.html); returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = page(explorer, out.parent, k)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return out
