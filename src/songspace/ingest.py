"""The track table: which audio files the pipeline uses, with their label, group and facts.

`ingest` turns either the built-in corpus table or a user's folder of music into one table
(`TRACK_COLUMNS`), checking every file by decoding it completely in fixed-size blocks (memory
does not grow with a file's length). Files that cannot be used are not an error: each is
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
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from songspace import checkstore
from songspace import skipped as skipped_list
from songspace.audio import AUDIO_EXTENSIONS
from songspace.audioscan import BLOCK_FRAMES, BadAudio, Scan, scan  # noqa: F401 - part of this API too
from songspace.config import Params
from songspace.errors import UserError
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
# Label of files without one when human quartets are the ground truth (labels are optional).
UNLABELLED = "unlabelled"
NO_LABELS = "none"    # data.labels: none: no labels at all (self-supervised training, halves as ground truth)
TAG_PREFIX = "tag:"   # data.labels / data.groups taken from a tag: tag:genre, tag:album, ...


class IngestError(UserError, ValueError):
    """The library as a whole cannot be used; the message says what to do."""


def printable_path(path: str) -> str:
    """A path that can be written as UTF-8: bytes that are not UTF-8 shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # os.walk gives undecodable bytes as lone surrogates
        return False



# ---------------------------------------------------------------------------------------------
# Candidates: which files, under which id / label / group


@dataclass(frozen=True)
class Candidate:
    track_id: str
    path: str
    label: str
    group: str


@dataclass
class Found:
    """Files found before decoding, and those already ruled out (path, reason, detail)."""

    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)  # hidden / other-suffix files
    root: str = ""
    files_found: int = 0  # audio files seen (listed, for the corpus)
    label_tag: str | None = None   # labels from this tag (`data.labels: tag:genre`), known after the check
    group_tag: str | None = None   # groups from this tag (`data.groups: tag:album`)
    keep_unlabelled: bool = False  # a file without a label is kept (as UNLABELLED), not skipped


def is_audio_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def walk_audio(root: str | Path) -> tuple[list[str], list[tuple[str, str, str]], Counter]:
    """Audio files under `root`, as sorted posix paths relative to it.

    Returns (relative paths, skipped rows, ignored-file counts). Hidden files and folders (a
    leading dot: .DS_Store, ._song.mp3 from macOS) are ignored. Linked folders are followed,
    each real folder once: a link back to a folder above it is a 'symlink_loop', a second way
    into a folder already walked a 'duplicate'. Unreadable folders ('unreadable') and names
    that are not UTF-8 ('bad_name') are skipped rows too.
    """
    root = Path(root)
    if not root.exists():
        raise IngestError(
            f"data.audio_dir '{root}' does not exist: set data.audio_dir in params.yaml to the "
            "folder holding your music (absolute, or relative to the project root)"
        )
    if not root.is_dir():
        raise IngestError(f"data.audio_dir '{root}' is a file, not a folder of music")
    if not os.access(root, os.R_OK | os.X_OK):
        raise IngestError(f"data.audio_dir '{root}' cannot be read: check its permissions")
    found, bad_dirs, ignored = [], [], Counter()

    def on_error(err: OSError) -> None:
        bad_dirs.append((str(err.filename), "unreadable", f"folder cannot be read: {err.strerror}"))

    walked = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        hidden = [d for d in dirnames if d.startswith(".")]
        ignored["hidden"] += len(hidden)
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            full = os.path.join(dirpath, d)
            real = os.path.realpath(full)
            if not _utf8(d):
                bad_dirs.append((printable_path(full), "bad_name", "folder name is not valid UTF-8: rename it"))
            elif real in walked:
                above = os.path.realpath(dirpath) == real or \
                    os.path.realpath(dirpath).startswith(real.rstrip(os.sep) + os.sep)
                bad_dirs.append((full, "symlink_loop" if above else "duplicate",
                                 f"links to {real}, " + ("a folder above it: not followed" if above
                                                         else "already read under another path")))
            else:
                walked.add(real)
                keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith("."):
                ignored["hidden"] += 1
            elif not _utf8(name):
                bad_dirs.append((printable_path(os.path.join(dirpath, name)), "bad_name",
                                 "file name is not valid UTF-8: rename it"))
            elif is_audio_path(name):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
            else:
                ignored["other"] += 1
    return sorted(found), bad_dirs, ignored


def normalise_relpath(path: str) -> str:
    """A library-relative path in canonical form: posix separators, no './'."""
    return PurePosixPath(path.strip().replace("\\", "/")).as_posix().removeprefix("./")


def read_labels_csv(path: str | Path) -> pd.DataFrame:
    """A labels CSV (path,label[,group]) as a DataFrame with normalised paths and a `line` column.

    Raises IngestError naming the file and line for a missing column, an empty path or
    label, or one path given two different labels.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                            encoding="utf-8")
    except UnicodeDecodeError as err:
        raise IngestError(f"{path}: not UTF-8 text (byte {err.start}); save the labels CSV as "
                           "UTF-8") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise IngestError(f"{path}: cannot read the labels CSV ({err})") from None
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise IngestError(
            f"{path}: missing column(s) {', '.join(missing)}; a labels CSV has the header "
            f"path,label[,group] (found: {', '.join(table.columns)})"
        )
    if "group" not in table.columns:
        table["group"] = ""
    table = table[["path", "label", "group"]].apply(lambda col: col.str.strip())
    table["line"] = np.arange(len(table)) + 2  # 1-based, after the header
    for row in table.itertuples():
        if not row.path or not row.label:
            empty = "path" if not row.path else "label"
            raise IngestError(f"{path} line {row.line}: empty {empty}")
    table["path"] = table["path"].map(normalise_relpath)
    first: dict[str, tuple[str, int]] = {}
    for row in table.itertuples():
        if row.path in first and first[row.path][0] != row.label:
            raise IngestError(
                f"{path} line {row.line}: '{row.path}' is labelled '{row.label}' but line "
                f"{first[row.path][1]} labels it '{first[row.path][0]}'"
            )
        first.setdefault(row.path, (row.label, row.line))
    return table.drop_duplicates("path").reset_index(drop=True)


def find_in_folder(
    audio_dir: str | Path, labels: str, keep_unlabelled: bool, labels_csv: str | Path | None = None,
    groups: str = "none",
) -> Found:
    """Candidates from a folder: labels from the first sub-folder ('folders'), a labels CSV, or
    a tag ('tag:genre', set by `assemble` once the tags are read); groups from the labels CSV,
    or a tag ('tag:album': album artist + album; 'tag:artist'), else each file its own group.

    Files without a label are skipped ('unlabelled') unless `keep_unlabelled` (annotated
    quartets are the ground truth), when they get the label UNLABELLED.
    """
    rels, bad_dirs, ignored = walk_audio(audio_dir)
    found = Found(skipped=list(bad_dirs), ignored=ignored, root=str(audio_dir),
                  files_found=len(rels), keep_unlabelled=keep_unlabelled,
                  label_tag=labels[4:] if labels.startswith(TAG_PREFIX) else None,
                  group_tag=groups[4:] if groups.startswith(TAG_PREFIX) else None)
    if not rels:
        raise IngestError(
            f"no audio files ({', '.join(e.lstrip('.') for e in AUDIO_EXTENSIONS)}) under "
            f"'{audio_dir}': put your music there, one sub-folder per label "
            "(e.g. jazz/track.mp3), or point data.audio_dir at the right folder"
        )
    table = read_labels_csv(labels_csv) if labels_csv is not None else None
    by_path = {} if table is None else {r.path: r for r in table.itertuples()}
    for rel in rels:
        full = (Path(audio_dir) / rel).as_posix()
        if found.label_tag:
            found.candidates.append(Candidate(rel, full, "", rel))  # labelled from its tags
            continue
        if table is None:
            parts = PurePosixPath(rel).parts
            label, group = (parts[0] if len(parts) > 1 else ""), ""
            why = "lies at the library root; move it into a folder named after its label"
        else:
            row = by_path.get(rel)
            label, group = (row.label, row.group) if row else ("", "")
            why = f"not listed in {labels_csv}"
        if not label:
            if not keep_unlabelled:
                found.skipped.append((full, "unlabelled", f"no label: {why}"))
                continue
            label = UNLABELLED
        found.candidates.append(Candidate(rel, full, label, group or rel))
    if table is not None:
        on_disk = set(rels)
        for row in table.itertuples():
            if row.path not in on_disk:
                found.skipped.append((
                    (Path(audio_dir) / row.path).as_posix(), "missing",
                    f"{labels_csv} line {row.line} names a file that is not in the library",
                ))
    return found


def find_in_corpus(corpus_csv: str | Path) -> Found:
    """Candidates from the built-in corpus table (track_id, path, label[, group], ...).

    A relative path is taken from the working directory, else from the table's folder.
    """
    corpus_csv = Path(corpus_csv)
    if not corpus_csv.exists():
        raise IngestError(f"{corpus_csv}: no corpus table; run the `corpus` stage first")
    from songspace import corpus  # the corpus table's owner

    table = corpus.read_table(corpus_csv)
    missing = [c for c in ("track_id", "path", "label") if c not in table.columns]
    if missing:
        raise IngestError(f"{corpus_csv}: missing column(s) {', '.join(missing)}")
    if table.empty:
        raise IngestError(
            f"{corpus_csv} lists no tracks: with data.source 'corpus' the corpus stage renders "
            "them; with data.source 'folder' set data.audio_dir"
        )
    dupes = table["track_id"][table["track_id"].duplicated()]
    if len(dupes):
        raise IngestError(f"{corpus_csv}: track_id '{dupes.iloc[0]}' appears twice")
    found = Found(root=str(corpus_csv.parent), files_found=len(table))
    for row in table.itertuples():
        path = Path(row.path)
        if not path.is_absolute() and not path.exists() and (corpus_csv.parent / path).exists():
            path = corpus_csv.parent / path
        group = getattr(row, "group", "") or row.track_id
        found.candidates.append(Candidate(row.track_id, path.as_posix(), row.label, group))
    return found


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


def resolve_param_path(value: str, audio_dir: str | None, what: str) -> Path:
    """A CSV named in params: relative to the project root, else to data.audio_dir."""
    tried = [Path(value)]
    if audio_dir and not Path(value).is_absolute():
        tried.append(Path(audio_dir) / value)
    for p in tried:
        if p.is_file():
            return p
    raise IngestError(f"{what} '{value}' not found (looked for {', '.join(map(str, tried))})")


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
        f"{r['decoded']} decoded, {r['tracks']} track(s) kept, "
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
