"""`songspace radio | path | playlists`: lists to listen to, printed, as JSON, or as M3U8.

    songspace radio SEED [-n 30] [--max-per-artist N] [--no-same-album] [--diversity 0.3]
    songspace path A B [-n 12]
    songspace playlists [-k 20] [--m3u FOLDER]

SEED, A and B are library songs: a track id of the index or the song's file. Every list takes
`--min-similarity S` (0..1: see `playlists` for the scale), `--json` and `--m3u FILE.m3u8`
(paths relative to the playlist file). The work is `Library.radio / path / playlists`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from songspace import playlists
from songspace.playlists import Entry


def _table(entries: list[Entry]) -> str:
    import pandas as pd

    rows = [[i, e.name, e.album, f"{e.similarity:.3f}", e.track_id] for i, e in enumerate(entries, 1)]
    frame = pd.DataFrame(rows, columns=["#", "song", "album", "similarity", "track_id"])
    return frame.to_string(index=False, justify="left")


def _emit(args, title: str, entries: list[Entry], query: dict) -> int:
    if args.m3u:
        out = playlists.write_m3u8(entries, args.m3u, title)
    if args.json:
        print(json.dumps({**query, "songs": playlists.entries_json(entries)}, indent=2, ensure_ascii=False))
    else:
        print(f"{title}: {len(entries)} songs")
        print(_table(entries))
    if args.m3u:
        print(f"wrote {out}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _library(args):
    from songspace.index.api import Library

    return Library.open(args.index, args.model)


def cmd_radio(args) -> int:
    lib = _library(args)
    entries = lib.radio(args.seed, args.n, max_per_artist=args.max_per_artist, no_same_album=args.no_same_album,
                        diversity=args.diversity, min_similarity=args.min_similarity)
    return _emit(args, f"Radio: {entries[0].name}", entries,
                 {"seed": args.seed, "n": args.n, "diversity": args.diversity})


def cmd_path(args) -> int:
    lib = _library(args)
    entries = lib.path(args.start, args.end, args.n, min_similarity=args.min_similarity)
    return _emit(args, f"Path: {entries[0].name} to {entries[-1].name}", entries,
                 {"from": args.start, "to": args.end, "n": args.n})


def _file_name(number: int, name: str) -> str:
    return f"{number:02d} " + (re.sub(r'[\\/:*?"<>|\x00-\x1f]+', "_", name).strip(" .") or "playlist") + ".m3u8"


def cmd_playlists(args) -> int:
    lib = _library(args)
    lists = lib.playlists(args.k, min_similarity=args.min_similarity)
    if args.m3u:
        for number, p in enumerate(lists, 1):
            playlists.write_m3u8(p.entries, Path(args.m3u) / _file_name(number, p.name), p.name)
    if args.json:
        print(json.dumps({"k": args.k, "playlists": [{"name": p.name, "songs": playlists.entries_json(p.entries)}
                                                     for p in lists]}, indent=2, ensure_ascii=False))
        return 0
    for number, p in enumerate(lists, 1):
        shown = ", ".join(e.name for e in p.entries[:3]) + (", ..." if len(p.entries) > 3 else "")
        print(f"{number:>3}. {p.name} ({len(p.entries)} songs): {shown}")
    if args.m3u:
        print(f"wrote {len(lists)} playlists to {args.m3u}/")
    return 0


def _unit(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def add_parsers(sub, parents: list) -> None:
    """The three commands' parsers, under the CLI's sub-parsers (parents: --index, --model)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--min-similarity", type=_unit, default=0.0, metavar="S",
                        help="leave out songs less similar than S (0..1; default: %(default)s)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("--m3u", default=None, metavar="PATH",
                        help="also write the list as M3U8 (playlists: a folder of them)")

    p = sub.add_parser("radio", parents=[*parents, common], help="a playlist that starts at a song and stays near it")
    p.add_argument("seed", help="a track id of the index, or the song's file")
    p.add_argument("-n", type=_positive, default=30, help="songs in the list, the seed included (default: %(default)s)")
    p.add_argument("--max-per-artist", type=_positive, default=None, metavar="N", help="at most N songs per artist")
    p.add_argument("--no-same-album", action="store_true", help="at most one song per album")
    p.add_argument("--diversity", type=_unit, default=0.3,
                   help="0: the seed's nearest songs; 1: each song near the one before (default: %(default)s)")
    p.set_defaults(func=cmd_radio)

    p = sub.add_parser("path", parents=[*parents, common], help="songs leading from one song to another")
    p.add_argument("start", help="the first song (track id or file)")
    p.add_argument("end", help="the last song (track id or file)")
    p.add_argument("-n", type=_positive, default=12, help="songs in the path, both ends included (default: %(default)s)")
    p.set_defaults(func=cmd_path)

    p = sub.add_parser("playlists", parents=[*parents, common], help="the library clustered into k playlists")
    p.add_argument("-k", type=_positive, default=20, help="number of playlists (default: %(default)s)")
    p.set_defaults(func=cmd_playlists)
