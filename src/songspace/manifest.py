"""The library folder's manifest: what the `ingest` stage will read, found without opening a file.

DVC depends on the manifest instead of hashing the user's folder itself: hashing opens every
file, so a named pipe in the library would block it and a folder link that leads back to a
folder above it would fail it. The `scan` stage runs on every `dvc repro` and rewrites the
manifest; it writes the same bytes while the library is unchanged, so `ingest` reruns only
when a file is added, removed, resized or modified (its mtime).

The walk is `ingest.walk_audio`'s (hidden files ignored, linked folders followed once, loops
and undecodable names listed); each entry is then `stat`ed, which never opens it. Content
hashes stay ingest's job. This module is the one writer and reader of the manifest CSV.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd

from songspace.config import DataParams
from songspace.ingest import IngestError, resolve_param_path, walk_audio

MANIFEST_COLUMNS = ("path", "kind", "size", "mtime_ns")
# kind: "audio" (a regular file with an audio suffix), "data.labels" (the labels CSV), or why
# ingest will skip the entry (an `ingest.REASONS` key: not_a_file, symlink_loop, bad_name, ...)


def _entry(path: str | Path, shown: str, kind: str) -> tuple[str, str, int | None, int | None]:
    """(shown, kind, size in bytes, mtime in ns) of one path, from `os.stat` alone."""
    try:
        st = os.stat(path)  # follows links; reads the inode, never the file (a pipe cannot block it)
    except FileNotFoundError:
        return shown, "missing", None, None
    except OSError:
        return shown, "unreadable", None, None
    if not stat.S_ISREG(st.st_mode):
        kind = "not_a_file"
    return shown, kind, st.st_size, st.st_mtime_ns


def build(data: DataParams) -> pd.DataFrame:
    """The manifest (`MANIFEST_COLUMNS`, sorted by path) of `data.audio_dir` for a folder library.

    Audio paths are relative to the folder, as in the track table's ids. A corpus library
    (data.source 'corpus') has an empty manifest: the `corpus` stage's own output is hashed.
    Raises IngestError (a UserError) when the folder does not exist or cannot be read.
    """
    rows = []
    if data.source == "folder":
        root = Path(data.audio_dir or "")
        rels, skipped, _ = walk_audio(root)
        rows += [_entry(root / rel, rel, "audio") for rel in rels]
        rows += [(path, reason, None, None) for path, reason, _ in skipped]
        if data.labels != "folders":
            try:
                labels = resolve_param_path(data.labels, data.audio_dir, "data.labels CSV")
                rows.append(_entry(labels, str(labels), "data.labels"))
            except IngestError:  # the ingest stage reports it
                rows.append((data.labels, "missing", None, None))
    table = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype({"size": "Int64", "mtime_ns": "Int64"})
    return table.sort_values(["path", "kind"], kind="stable").reset_index(drop=True)


def write(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest CSV (`MANIFEST_COLUMNS`); the same table always gives the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, columns=list(MANIFEST_COLUMNS))
    return path


def read(path: str | Path) -> pd.DataFrame:
    """A manifest written by `write`: paths and kinds as text, sizes and mtimes as nullable ints."""
    return pd.read_csv(path, dtype={"path": str, "kind": str, "size": "Int64", "mtime_ns": "Int64"},
                       keep_default_na=False, na_values={"size": [""], "mtime_ns": [""]})


def summary(table: pd.DataFrame, data: DataParams) -> str:
    """One line for the terminal: how many entries of each kind, under which folder."""
    if data.source != "folder":
        return f"scan: data.source is '{data.source}': the corpus stage's output is the library"
    counts = table["kind"].value_counts().sort_index()
    kinds = ", ".join(f"{n} {k}" for k, n in counts.items()) or "nothing"
    return f"scan: {data.audio_dir}: {kinds}"
