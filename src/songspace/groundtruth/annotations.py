"""Quartets from human annotations: a CSV (the thesis layout: song 1, song 2, song 3, odd song,
optionally a split column) validated line by line, song names resolved to track ids."""
from __future__ import annotations

import csv
import difflib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import pandas as pd

from songspace.ingest import is_audio_path, normalise_relpath
from songspace.groundtruth.files import GroundTruthError, MAX_LISTED_ERRORS, QUARTET_COLUMNS, SPLITS



def read_quartet_rows(path: str | Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank line of a quartet CSV (comma, semicolon or tab)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise GroundTruthError(f"{path}: cannot read the quartet CSV ({err})") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    rows = []
    for cells in reader:
        cells = [c.strip() for c in cells]
        if any(cells):
            rows.append((reader.line_num, cells))
    return rows


def track_lookup(tracks: pd.DataFrame, aliases: pd.DataFrame | None = None) -> dict[str, str]:
    """Every name a quartet CSV may use for a track -> its track_id.

    Names: the track_id; its path; its path relative to the folder all tracks share (the
    library root); and alias paths of byte-identical duplicates. Track ids win over paths.
    """
    paths = [normalise_relpath(p) for p in tracks["path"]]
    lookup: dict[str, str] = {}
    root = _common_parent(paths)
    if root:
        for p, tid in zip(paths, tracks["track_id"]):
            lookup[PurePosixPath(p).relative_to(root).as_posix()] = tid
    lookup.update(zip(paths, tracks["track_id"]))
    if aliases is not None:
        for p, tid in zip(aliases["path"], aliases["track_id"]):
            lookup[normalise_relpath(p)] = tid
    lookup.update(zip(tracks["track_id"], tracks["track_id"]))
    return lookup


def _common_parent(paths: list[str]) -> str:
    parts = [PurePosixPath(p).parent.parts for p in paths]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return PurePosixPath(*common).as_posix() if common else ""


@dataclass
class Annotations:
    quartets: pd.DataFrame            # QUARTET_COLUMNS + line (+ split), one row per judgement
    header: list[str] | None = None   # the header row, if the file had one
    rows: int = 0                     # judgement lines read
    merged: int = 0                   # exact duplicates merged into an earlier line
    conflicts: list[tuple[int, int]] = field(default_factory=list)  # same three, other odd

    @property
    def has_split(self) -> bool:
        """The file says which split each judgement belongs to."""
        return "split" in self.quartets.columns


# A header cell: song1, Song 2, track_3, a, odd, odd song, odd_one_out, ... (case-insensitive)
_HEADER_CELL = re.compile(
    r"^\s*(song|track|clip|file|audio|item|a|b|c|d|x|odd|odd[ _-]?(song|track|one[ _-]?out|one))"
    r"[ _-]?\d?\s*$", re.IGNORECASE)


def parse_quartets(rows: list[tuple[int, list[str]]], lookup: dict[str, str],
                   source: str = "quartets") -> Annotations:
    """Validate quartet rows (song 1, song 2, song 3, odd song[, split]; header optional).

    The optional split column (train, val or test, any case) is the one headed `split`, or,
    without a header, the fifth column, as soon as any line has one: then every line needs a
    valid split. Raises
    GroundTruthError naming each bad line: a missing column, an unknown track, the same song
    twice, an odd song that is not one of the three, an unknown split, a song in quartets of
    two splits (both lines). Exact duplicates (same three songs in any order, same odd) are
    merged; the same three with another odd song are kept both (annotators disagree) and
    listed in `conflicts`.
    """
    def resolve(name: str) -> str | None:
        return lookup.get(name) or lookup.get(normalise_relpath(name))

    header, rows, split_col = _header(rows, resolve)
    errors, kept = [], []
    seen: dict[frozenset, dict[str, int]] = {}  # three songs -> {odd song: first line}
    side_of: dict[str, tuple[str, int]] = {}  # song -> (split, first line naming it there)
    merged, conflicts = 0, []
    for line, cells_all in rows:
        found = _line_songs(line, cells_all, resolve, lookup, hint=len(errors) < MAX_LISTED_ERRORS)
        if isinstance(found, str):
            errors.append(found)
            continue
        songs, odd = found
        split = ()
        if split_col is not None:
            split = _line_split(line, cells_all, split_col, songs, side_of)
            if isinstance(split, str):
                errors.append(split)
                continue
        odds = seen.setdefault(frozenset(songs), {})
        if odd in odds:
            merged += 1
            continue
        conflicts.extend((line2, line) for line2 in odds.values())
        odds[odd] = line
        kept.append((*songs, odd, line, *split))
    _raise_bad_lines(errors, source)
    if not kept:
        raise GroundTruthError(f"{source}: no quartets in the file")
    split_cols = ["split"] if split_col is not None else []
    quartets = pd.DataFrame(kept, columns=[*QUARTET_COLUMNS, "line", *split_cols])
    return Annotations(quartets, header, len(rows), merged, conflicts)


def _header(rows: list[tuple[int, list[str]]], resolve: Callable[[str], str | None]
            ) -> tuple[list[str] | None, list[tuple[int, list[str]]], int | None]:
    """(the header row or None, the judgement rows, the split column or None)."""
    if not rows:
        return None, rows, None
    first = [c for c in rows[0][1][:4] if c]
    # A header only when it reads as one (song1, Song 2, odd, ...) and names no track;
    # any other first row is data, and an unknown name in it is reported with its line.
    if first and not any(resolve(c) for c in first) and all(_HEADER_CELL.match(c) for c in first):
        header = rows[0][1]
        named = [i for i, c in enumerate(header) if c.lower() == "split"]
        return header, rows[1:], named[0] if named else None
    if any(len(cells) > 4 and cells[4] for _, cells in rows):
        # No header: a fifth column anywhere is the split column, checked on every line
        return None, rows, 4
    return None, rows, None


_SONG_COLUMNS = ("song 1", "song 2", "song 3", "odd song")


def _line_songs(line: int, cells_all: list[str], resolve: Callable[[str], str | None],
                lookup: dict[str, str], hint: bool) -> tuple[list[str], str] | str:
    """A line's three track ids and its odd one, or the error naming the line (`hint`: suggest
    a close name for an unknown track)."""
    cells = (cells_all + [""] * 4)[:4]
    missing = [_SONG_COLUMNS[i] for i, c in enumerate(cells) if not c]
    if missing:
        return (f"line {line}: missing column(s) {', '.join(missing)}; each line "
                "needs song 1, song 2, song 3, odd song")
    ids = [resolve(c) for c in cells]
    unknown: dict[str, list[str]] = {}
    for name, cell, tid in zip(_SONG_COLUMNS, cells, ids):
        if tid is None:
            unknown.setdefault(cell, []).append(name)
    if unknown:
        told = []
        for cell, where in unknown.items():
            close = _close_match(cell, lookup) if hint else None
            told.append(f"'{cell}' ({', '.join(where)})"
                        + (f", did you mean '{close}'?" if close else ""))
        return (f"line {line}: unknown track {'; '.join(told)}; not in the track "
                "table (a typo, or a file skipped at ingest: see skipped.csv)")
    songs, odd = ids[:3], ids[3]
    if len(set(songs)) < 3:
        twice = next(s for s in songs if songs.count(s) > 1)
        return f"line {line}: the same song twice ('{twice}')"
    if odd not in songs:
        return f"line {line}: odd song '{cells[3]}' is not one of the three songs"
    return songs, odd


def _line_split(line: int, cells_all: list[str], split_col: int, songs: list[str],
                side_of: dict[str, tuple[str, int]]) -> tuple[str] | str:
    """`(split,)` of a line, its songs recorded in `side_of`; or the error naming the line (an
    unknown or missing split, a song already in a quartet of another split)."""
    value = cells_all[split_col].lower() if split_col < len(cells_all) else ""
    if value not in SPLITS:
        return (f"line {line}: split '{value}' is not one of {', '.join(SPLITS)}" if value else
                f"line {line}: missing split (train, val or test)")
    clash = [(s, side_of[s]) for s in songs if side_of.get(s, (value,))[0] != value]
    if clash:
        song, (other, line2) = clash[0]
        return (f"line {line}: song '{song}' is in a {value} quartet here and in "
                f"a {other} quartet on line {line2}; a song belongs to one split")
    for s in songs:
        side_of.setdefault(s, (value, line))
    return (value,)


def _raise_bad_lines(errors: list[str], source: str) -> None:
    """One GroundTruthError for the bad lines, the first `MAX_LISTED_ERRORS` of them listed."""
    if len(errors) == 1:
        raise GroundTruthError(f"{source} {errors[0]}")
    if errors:
        listed = errors[:MAX_LISTED_ERRORS]
        more = [f"... {len(errors) - len(listed)} more"] if len(errors) > len(listed) else []
        raise GroundTruthError(
            f"{source}: {len(errors)} bad lines:\n  " + "\n  ".join(listed + more))


def _close_match(name: str, lookup: dict[str, str]) -> str | None:
    """The known track name most like `name`: the same path with another suffix, else a close
    spelling."""
    stem = _stem(normalise_relpath(name))
    same_stem = sorted(k for k in lookup if is_audio_path(k) and _stem(k) == stem)
    if stem and same_stem:
        return same_stem[0]
    close = difflib.get_close_matches(name, list(lookup), n=1, cutoff=0.8)
    return close[0] if close else None


def _stem(path: str) -> str:
    p = PurePosixPath(path)
    return (p.parent / p.stem).as_posix() if p.name else ""
