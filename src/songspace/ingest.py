"""The track table: which audio files the pipeline uses, with their label, group and facts.

`ingest` turns the candidates (`candidates`: the built-in corpus table or a user's folder of
music) into one table (`TRACK_COLUMNS`), checking every file by decoding it completely in
fixed-size blocks (memory does not grow with a file's length). Files that cannot be used are not an error: each is
listed with a reason code (`REASONS`) and a sentence, and the run goes on. Byte-identical
files are kept once; the other paths become aliases of the kept track.

Each song is decoded once: `checkstore.check_all` keeps what the checks found in
`compute.cache_dir`, and a later run opens no file whose path, size and mtime are unchanged
(stat alone) and decodes no audio it has seen under another path or other tags (hashed, then
found by its audio key). This module is the one reader and writer of tracks.csv
(`read_tracks`, `write_tracks`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from songspace import checkstore
from songspace import skipped as skipped_list
from songspace.audio import AUDIO_EXTENSIONS
from songspace.audioscan import BLOCK_FRAMES, BadAudio, Scan, scan  # noqa: F401 - part of this API too
from songspace.candidates import (  # noqa: F401 - part of this API too
    NO_LABELS, TAG_PREFIX, UNLABELLED, Candidate, Found, IngestError, find_in_corpus, find_in_folder,
    is_audio_path, normalise_relpath, printable_path, read_labels_csv, resolve_param_path, walk_audio,
)
from songspace.config import Params
from songspace.tags import TAG_COLUMNS, first
from songspace.filecheck import FileCheck, check_file, check_files, sha1_of  # noqa: F401 - part of this API too

REQUIRED_COLUMNS = (
    "track_id", "path", "label", "group", "duration_s", "sample_rate", "channels", "sha1",
)
# a table without tags reads with them empty, one without audio keys with its sha1 as the key
TRACK_COLUMNS = (*REQUIRED_COLUMNS, "audio_key", *TAG_COLUMNS)
TEXT_COLUMNS = ("track_id", "path", "label", "group", "sha1", "audio_key", *TAG_COLUMNS)  # text, never numbers
ALIAS_COLUMNS = ("path", "track_id")
# Why a file was left out, most basic first.
REASONS = {
    "missing": "listed but not on disk",
    "unreadable": "cannot be read (permissions or I/O error)",
    "empty": "no audio in it (0 bytes or a header without frames)",
    "not_audio": "not an audio file",
    "corrupt": "an audio file that fails to decode",
    "truncated": "an audio file cut short",
    "silent": "decodes to silence",
    "too_short": "shorter than data.min_seconds",
    "unlabelled": "no label (at the library root / not in the labels CSV / no such tag)",
    "duplicate": "byte-identical to a track kept under another path",
    "not_a_file": "not a regular file (a named pipe, a device, a socket)",
    "bad_name": "a file or folder name that is not valid UTF-8",
    "symlink_loop": "a folder link that leads back to a folder above it",
}


# ---------------------------------------------------------------------------------------------
# The library: checks -> track table + report


@dataclass
class Ingested:
    tracks: pd.DataFrame   # TRACK_COLUMNS, sorted by track_id
    skipped: pd.DataFrame  # skipped.COLUMNS (track_id empty: these files never became tracks)
    aliases: pd.DataFrame  # ALIAS_COLUMNS: duplicate paths -> the track kept
    report: dict
    reuse: checkstore.Reuse | None = None  # what earlier runs had checked (not in the report:
                                           # a re-run on the same library writes the same bytes)


def _from_tags(found: Found, cand: Candidate, chk: FileCheck) -> Candidate:
    """The candidate with its label and group from its tags, where params say so."""
    if not (found.label_tag or found.group_tag):
        return cand
    t = dict(zip(TAG_COLUMNS, chk.tags or ("",) * len(TAG_COLUMNS)))
    label, group = cand.label, cand.group
    if found.label_tag:
        label = first(t[found.label_tag]) or (UNLABELLED if found.keep_unlabelled else "")
    if found.group_tag == "album" and t["album"]:
        # albums of one name by two artists ("Greatest Hits") are two groups
        owner = first(t["albumartist"]) or first(t["artist"])
        group = f"{owner} / {t['album']}" if owner else t["album"]
    elif found.group_tag == "artist":
        group = first(t["artist"]) or first(t["albumartist"]) or group
    return Candidate(cand.track_id, cand.path, label, group)


def assemble(found: Found, checks: list[FileCheck], source: str) -> Ingested:
    """Pure: candidates + their checks -> tracks (sorted by id; of byte-identical files the one
    with the shortest id is kept), skipped files, aliases and the report."""
    assert len(checks) == len(found.candidates)
    skipped = list(found.skipped)
    rows, aliases, kept_by_hash, duplicates = [], [], {}, []
    # Of byte-identical files the shortest id is kept: copies tend to grow names ("x (1).mp3")
    order = sorted(range(len(checks)),
                   key=lambda i: (len(found.candidates[i].track_id), found.candidates[i].track_id))
    for i in order:
        cand, chk = found.candidates[i], checks[i]
        if chk.reason:
            skipped.append((cand.path, chk.reason, chk.detail))
            continue
        cand = _from_tags(found, cand, chk)
        if not cand.label:
            skipped.append((cand.path, "unlabelled", f"no label: no {found.label_tag} tag"))
            continue
        kept = kept_by_hash.get(chk.sha1)
        if kept is not None:
            note = f"same bytes as {kept.path}"
            if kept.label != cand.label:
                note += (f" (labelled '{kept.label}' there, '{cand.label}' here; "
                         f"kept '{kept.label}')")
            skipped.append((cand.path, "duplicate", note))
            aliases.append((cand.path, kept.track_id))
            if cand.track_id != cand.path:
                aliases.append((cand.track_id, kept.track_id))
            duplicates.append({"path": cand.path, "same_as": kept.track_id})
            continue
        kept_by_hash[chk.sha1] = cand
        rows.append((cand.track_id, cand.path, cand.label, cand.group,
                     round(chk.duration_s, 3), chk.sample_rate, chk.channels, chk.sha1,
                     chk.audio_key or chk.sha1, *(chk.tags or ("",) * len(TAG_COLUMNS))))
    tracks = pd.DataFrame(rows, columns=list(TRACK_COLUMNS)).sort_values(
        "track_id", kind="stable").reset_index(drop=True)
    skipped_df = skipped_list.table({"path": p, "reason": r, "detail": d} for p, r, d in skipped)
    per_label = tracks["label"].value_counts().sort_index()
    report = {
        "source": source,
        "root": found.root,
        "files_found": found.files_found,
        "files_ignored": {k: n for k, n in sorted(found.ignored.items()) if n},
        "decoded": sum(c.reason is None for c in checks),
        "tracks": len(tracks),
        "skipped": {r: int(n) for r, n in skipped_df["reason"].value_counts().sort_index().items()},
        "duplicates": duplicates,
        "total_duration_s": round(float(tracks["duration_s"].sum()), 3),
        "labels": {str(k): int(v) for k, v in per_label.items()},
        "single_track_labels": [str(k) for k, v in per_label.items() if v == 1],
        "groups": int(tracks["group"].nunique()),
        "tagged": int(((tracks["title"] != "") | (tracks["artist"] != "")).sum()),
        "sample_rates": {str(k): int(v) for k, v in
                         tracks["sample_rate"].value_counts().sort_index().items()},
        "channels": {str(k): int(v) for k, v in
                     tracks["channels"].value_counts().sort_index().items()},
    }
    return Ingested(tracks, skipped_df, pd.DataFrame(aliases, columns=list(ALIAS_COLUMNS)), report)


def ingest(params: Params, corpus_csv: str | Path, workers: int = 2,
           progress: bool = True) -> Ingested:
    """The track table for params.data: check every file, drop what cannot be used. What the
    checks find is kept in params.compute.cache_dir and reused (`checkstore`).

    Raises IngestError when the library cannot be read (no folder, no audio files, a bad
    labels CSV); `problems` tells whether what is left is usable.
    """
    data = params.data
    if data.source == "folder":
        labels_csv = None
        if data.labels not in ("folders", NO_LABELS) and not data.labels.startswith(TAG_PREFIX):
            labels_csv = resolve_param_path(data.labels, data.audio_dir, "data.labels CSV")
        keep = data.quartets is not None or data.labels == NO_LABELS
        found = find_in_folder(data.audio_dir, data.labels, keep_unlabelled=keep,
                               labels_csv=labels_csv, groups=data.groups)
    else:
        found = find_in_corpus(corpus_csv)
    if data.labels == NO_LABELS:  # self-supervised: every file is kept, none has a label
        found.label_tag = None
        found.candidates = [replace(c, label=UNLABELLED) for c in found.candidates]
    checks, reuse = checkstore.check_all([c.path for c in found.candidates], data.min_seconds,
                                         params.compute.cache_dir, workers, progress)
    lib = assemble(found, checks, data.source)
    lib.reuse = reuse
    lib.report["min_seconds"] = data.min_seconds
    lib.report["labels_from"] = data.labels
    return lib


def problems(lib: Ingested) -> tuple[list[str], str | None]:
    """Warnings about the library and, if it is unusable, the error message."""
    warns = []
    single = lib.report["single_track_labels"]
    if single:
        warns.append(
            f"{len(single)} label(s) have a single track ({', '.join(single[:10])}"
            f"{', ...' if len(single) > 10 else ''}): they cannot form a positive pair, so they "
            "serve only as odd songs / negatives; add a second track to use them as pairs"
        )
    labels = [k for k in lib.report["labels"] if k != UNLABELLED]
    if len(lib.tracks) and len(labels) < 2 and lib.report.get("labels_from") != NO_LABELS:
        warns.append("fewer than two labels: quartets cannot be derived from labels; "
                     "give data.quartets (human judgements) or add music of another label")
    if lib.tracks.empty:
        n = sum(lib.report["skipped"].values())
        return warns, (f"no usable tracks: all {n} file(s) were skipped; see the reasons in "
                       "skipped.csv")
    return warns, None


def write(lib: Ingested, out_dir: str | Path, reports_dir: str | Path) -> None:
    """tracks.csv + aliases.csv in out_dir; skipped.csv + ingest.json in reports_dir."""
    out_dir, reports_dir = Path(out_dir), Path(reports_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports_dir.mkdir(parents=True, exist_ok=True)
    write_tracks(lib.tracks, out_dir / "tracks.csv")
    write_aliases(lib.aliases, out_dir / "aliases.csv")
    skipped_list.write(lib.skipped, reports_dir / skipped_list.FILE_NAME)
    with (reports_dir / "ingest.json").open("w") as f:
        json.dump(lib.report, f, indent=2)
        f.write("\n")


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def summary(lib: Ingested) -> str:
    """A readable account of an ingest, for the terminal."""
    r = lib.report
    lines = [
        f"library ({r['source']}: {r['root']}): {r['files_found']} audio file(s) found, "
        f"{r['decoded']} usable, {r['tracks']} track(s) kept, "
        f"{_hms(r['total_duration_s'])} of audio",
    ]
    if lib.reuse is not None:
        lines.append(f"  checks: {lib.reuse.summary()}")
        lines += [f"  note: {n}" for n in lib.reuse.notes]
    if r["files_ignored"]:
        lines.append("  ignored: " + ", ".join(f"{n} {k} file(s)" for k, n in
                                               sorted(r["files_ignored"].items()) if n))
    if r["skipped"]:
        lines.append("  skipped: " + ", ".join(f"{n} {k}" for k, n in r["skipped"].items()))
        for row in lib.skipped.head(8).itertuples():
            lines.append(f"    {row.path}: {row.detail}")
        if len(lib.skipped) > 8:
            lines.append(f"    ... {len(lib.skipped) - 8} more in skipped.csv")
    width = max((len(k) for k in r["labels"]), default=0)
    lines.append(f"  {len(r['labels'])} label(s), {r['groups']} group(s):")
    for label, n in r["labels"].items():
        lines.append(f"    {label:<{width}}  {n}")
    rates = ", ".join(f"{k} Hz x{v}" for k, v in r["sample_rates"].items())
    channels = ", ".join(f"{k} x{v}" for k, v in r["channels"].items())
    lines.append(f"  sample rates: {rates}; channels: {channels}")
    return "\n".join(lines)


def write_aliases(aliases: pd.DataFrame, path: str | Path) -> Path:
    """aliases.csv (`ALIAS_COLUMNS`): paths of byte-identical copies -> the track kept."""
    aliases.to_csv(path, index=False)
    return Path(path)


def read_aliases(path: str | Path) -> pd.DataFrame:
    """An aliases.csv written by `write_aliases`, as text."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_tracks(tracks: pd.DataFrame, path: str | Path) -> Path:
    """Write a track table as tracks.csv (the columns it has, `TRACK_COLUMNS` from `ingest`)."""
    tracks.to_csv(path, index=False)
    return Path(path)


def read_tracks(path: str | Path, required: tuple[str, ...] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """Read a tracks.csv written by `write_tracks`: ids, paths, labels, groups, hashes and tags
    as text (empty cells as ""; tag columns a table lacks are added empty, and an older table's
    missing audio_key is its sha1), facts as numbers. IngestError names the file when it is
    missing or lacks one of the `required` columns."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: no track table; run the `ingest` stage first")
    table = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise IngestError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in TAG_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    if "audio_key" not in table.columns and "sha1" in table.columns:
        table.insert(table.columns.get_loc("sha1") + 1, "audio_key", table["sha1"])
    return table


__all__ = [
    "ALIAS_COLUMNS", "BadAudio", "Candidate", "FileCheck", "Found", "IngestError", "Ingested",
    "REASONS", "Scan", "TRACK_COLUMNS", "UNLABELLED", "assemble",
    "check_file", "check_files", "find_in_corpus", "find_in_folder", "ingest", "problems",
    "read_labels_csv", "read_tracks", "scan", "sha1_of", "summary", "walk_audio", "write",
    "write_tracks",
]
