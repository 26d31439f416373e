"""What ingest found before, kept in the per-song store's folder (`compute.cache_dir`), so that
each song is decoded once, whatever becomes of its file.

One SQLite file, `<cache_dir>/ingest.sqlite`, with two tables:

- `files`, the stat index: (absolute path, size, mtime_ns) -> (sha1, audio key, tags);
- `checks`: audio key -> what decoding found (`filecheck.Decoded`: rate, channels, frames,
  peak, or why it is not usable audio).

The rule (`check_all`): a file whose absolute path, size and mtime (in nanoseconds) are the ones
recorded is not opened at all: `stat` alone gives its sha1, audio key and tags (tags live in the
file, so they are unchanged too). Any other file is read once to hash it (`audiokey.file_keys`),
not decoded: its decode facts are found by its audio key, so a moved, renamed or re-tagged song
is not decoded again (mutagen reads its tags again). Only audio never seen is decoded, once per
audio key. data.min_seconds is applied afterwards (`filecheck.verdict`), so changing it decodes
nothing. Like rsync's quick check, the rule trusts size and mtime: a file rewritten with other
bytes of the same size and given back its old mtime (`touch -r`) keeps its old entry.

Each row also holds a digest of what shaped it (`files`: the hashing and tag-reading code and
mutagen's version; `checks`: the decoding code and libsndfile's version): after a change there
the earlier rows are not seen, so they are never wrong. SQLite commits whole transactions and a
run commits every few seconds, so a killed run keeps what it had committed; a file that is not a
readable database is set aside (`ingest.sqlite.damaged`) and a new one started. Only the calling
process writes; worker processes hash, decode and read tags.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from songspace import filecheck
from songspace.audiokey import file_keys
from songspace.filecheck import Decoded, FileCheck
from songspace.songstore import code_files, file_digest

DB_NAME = "ingest.sqlite"
COMMIT_SECONDS = 2.0  # a killed run loses at most this much work
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    shaped_by TEXT, path BLOB, size INTEGER, mtime_ns INTEGER, sha1 TEXT, audio_key TEXT,
    tags TEXT, PRIMARY KEY (shaped_by, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checks (
    shaped_by TEXT, audio_key TEXT, sample_rate INTEGER, channels INTEGER, frames INTEGER,
    peak REAL, reason TEXT, detail TEXT, PRIMARY KEY (shaped_by, audio_key)) WITHOUT ROWID;
"""


def _digest(modules: tuple[str, ...], versions: dict[str, str]) -> str:
    about = {"code": {Path(f).name: file_digest(f) for f in code_files(*modules)}, "versions": versions}
    return hashlib.sha1(json.dumps(about, sort_keys=True).encode()).hexdigest()


def files_shaped_by() -> str:
    """Digest of what shapes a `files` row: the hashing and tag-reading code, mutagen."""
    import mutagen

    return _digest(("audiokey", "tags"), {"mutagen": mutagen.version_string})


def checks_shaped_by() -> str:
    """Digest of what shapes a `checks` row: the decoding code, soundfile and libsndfile."""
    import soundfile as sf

    return _digest(("audio", "filecheck"), {"soundfile": sf.__version__,
                                            "libsndfile": sf.__libsndfile_version__})


@dataclass(frozen=True)
class Known:
    """A file's row in the stat index. tags: None where they were never read."""

    sha1: str
    audio_key: str
    tags: tuple[str, ...] | None


class Index:
    """The two tables of one cache folder. Without a folder, or when the database cannot be
    used, an index that knows nothing and keeps nothing: ingest still works, only slower."""

    def __init__(self, path: Path | None = None, notes: list[str] | None = None):
        self.path, self.db, self.notes = path, None, notes or []
        self._committed = time.monotonic()
        if path is None:
            return
        self.files_by, self.checks_by = files_shaped_by(), checks_shaped_by()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.db = _connect(path)
            except sqlite3.OperationalError:  # locked, read-only, I/O: not the file's fault
                raise
            except sqlite3.DatabaseError as err:  # not a database, or a damaged one
                self._set_aside(err)
                self.db = _connect(path)
        except (OSError, sqlite3.Error) as err:
            self.db = None
            self.notes.append(f"{path}: cannot be used ({err}); every file checked afresh")

    @classmethod
    def open(cls, cache_dir: str | Path | None) -> Index:
        return cls(Path(cache_dir) / DB_NAME if cache_dir else None)

    def _set_aside(self, err: Exception) -> None:
        for part in ("", "-journal", "-wal"):  # a journal left beside it goes too
            if (old := self.path.with_name(self.path.name + part)).exists():
                os.replace(old, self.path.with_name(f"{self.path.name}.damaged{part}"))
        self.notes.append(f"{self.path}: unreadable ({err}); set aside as {self.path.name}.damaged, "
                          "its files checked afresh")

    def _query(self, sql: str, args: tuple) -> tuple | None:
        """One row of a query, or of a change (None); damage found on the way sets the file
        aside and goes on with a new, empty one."""
        if self.db is None:
            return None
        try:
            row = self.db.execute(sql, args).fetchone()
            if not sql.startswith("SELECT") and time.monotonic() - self._committed > COMMIT_SECONDS:
                self.commit()
            return row
        except sqlite3.Error as err:
            self.db.close()
            self.db = None
            if isinstance(err, sqlite3.OperationalError) or not isinstance(err, sqlite3.DatabaseError):
                self.notes.append(f"{self.path}: not used further ({err})")
                return None
            try:
                self._set_aside(err)
                self.db = _connect(self.path)
            except (OSError, sqlite3.Error):
                self.db = None
            return None

    def file(self, path: bytes, size: int, mtime_ns: int) -> Known | None:
        row = self._query("SELECT sha1, audio_key, tags FROM files WHERE shaped_by = ? AND path = ? "
                          "AND size = ? AND mtime_ns = ?", (self.files_by, path, size, mtime_ns))
        if row is None:
            return None
        return Known(row[0], row[1], None if row[2] is None else tuple(json.loads(row[2])))

    def put_file(self, path: bytes, size: int, mtime_ns: int, sha1: str, key: str) -> None:
        self._query("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (self.files_by, path, size, mtime_ns, sha1, key))

    def put_tags(self, path: bytes, size: int, mtime_ns: int, tags: tuple[str, ...]) -> None:
        self._query("UPDATE files SET tags = ? WHERE shaped_by = ? AND path = ? AND size = ? "
                    "AND mtime_ns = ?", (json.dumps(tags), self.files_by, path, size, mtime_ns))

    def checks(self, keys) -> dict[str, Decoded]:
        out = {}
        for key in set(keys):
            row = self._query("SELECT sample_rate, channels, frames, peak, reason, detail FROM "
                              "checks WHERE shaped_by = ? AND audio_key = ?", (self.checks_by, key))
            if row is not None:
                out[key] = Decoded(*row)
        return out

    def put_check(self, key: str, d: Decoded) -> None:
        self._query("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.checks_by, key, d.sample_rate, d.channels, d.frames, d.peak, d.reason,
                     d.detail))

    def commit(self) -> None:
        if self.db is not None:
            try:
                self.db.commit()
            except sqlite3.Error as err:
                self.notes.append(f"{self.path}: not saved ({err})")
            self._committed = time.monotonic()

    def close(self) -> None:
        self.commit()
        if self.db is not None:
            self.db.close()
            self.db = None


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60)
    try:
        status = db.execute("PRAGMA quick_check").fetchone()[0]
        if status != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {status}")
        db.executescript(SCHEMA)
        for table, columns in (("files", 7), ("checks", 8)):  # a file of another layout
            if len(db.execute(f"PRAGMA table_info({table})").fetchall()) != columns:
                raise sqlite3.DatabaseError(f"table {table} has another layout")
    except BaseException:
        db.close()
        raise
    return db


# ---------------------------------------------------------------------------------------------
# The jobs worker processes run: each returns what it found and the file's (size, mtime_ns)
# afterwards, so that a file changed meanwhile is not recorded under its old stat


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _hash_job(path: str):
    try:
        return file_keys(path), _stamp(path)
    except OSError as err:
        return filecheck.read_error(path, err), None


def _decode_job(paths: tuple[str, ...]):
    """Decode the first of `paths` (files of one audio key) that can be read."""
    for i, path in enumerate(paths):
        try:
            return i, filecheck.decode(path), _stamp(path)
        except OSError as err:
            failed = FileCheck(path, reason="unreadable", detail=f"cannot read: {err}")
    return -1, failed, None


def _tags_job(path: str):
    return filecheck.read_tags(path), _stamp(path)


# ---------------------------------------------------------------------------------------------
# A library's checks


@dataclass
class Reuse:
    """How much of a run's checking was found done (counts of files, except `decoded`)."""

    files: int = 0        # regular files among the paths (the rest are skipped from their stat)
    by_stat: int = 0      # path, size and mtime as recorded: not opened (unless for tags)
    by_key: int = 0       # hashed again (moved, renamed, re-tagged), decode found by audio key
    hashed: int = 0       # read to hash them
    decoded: int = 0      # decodes run: audio keys never checked before
    tags_read: int = 0    # files whose tags were read
    notes: list[str] = field(default_factory=list)

    @property
    def reused(self) -> int:
        return self.by_stat + self.by_key

    def summary(self) -> str:
        return (f"reused {self.reused} of {self.files} checks ({self.by_stat} by stat alone, "
                f"{self.by_key} by audio key after hashing); {self.hashed} file(s) hashed, "
                f"{self.decoded} new audio decoded, the tags of {self.tags_read} read")


def check_all(paths: list[str], min_seconds: float, cache_dir: str | Path | None,
              workers: int = 2, progress: bool = True) -> tuple[list[FileCheck], Reuse]:
    """The verdict on every path, as `filecheck.check_files` gives it, decoding only audio that
    the index at `cache_dir` has no facts for (None: no index, every file decoded)."""
    index = Index.open(cache_dir)
    try:
        run = _Run(paths, index, workers, progress)
        run.look_up()
        run.hash_new()
        run.decode_new()
        run.judge(min_seconds)
        run.read_tags()
        return run.checks, run.reuse
    finally:
        index.close()


class _Run:
    """One library's checks, phase by phase; each phase's files in worker processes."""

    def __init__(self, paths: list[str], index: Index, workers: int, progress: bool):
        self.paths, self.index, self.workers, self.progress = paths, index, workers, progress
        self.names = [os.fsencode(os.path.abspath(p)) for p in paths]  # the index's keys
        self.reuse = Reuse(notes=index.notes)
        self.checks: list[FileCheck | None] = [None] * len(paths)
        self.stamps: dict[int, tuple[int, int]] = {}  # i -> (size, mtime_ns) before reading
        self.known: dict[int, Known] = {}             # i -> its sha1, audio key (and tags)
        self.facts: dict[str, Decoded | FileCheck] = {}  # audio key -> decoded, or unreadable
        self.need_tags: list[int] = []

    def _map(self, job, items: list, desc: str, unit: str = "file"):
        return filecheck.imap(job, items, self.workers, desc, unit, self.progress)

    def look_up(self) -> None:
        """stat every path; those the index knows by path, size and mtime are done with."""
        for i, path in enumerate(tqdm(self.paths, desc="stat", unit="file", dynamic_ncols=True,
                                      disable=not self.progress)):
            try:
                st = os.stat(path)
            except OSError as err:
                self.checks[i] = filecheck.read_error(path, err)
                continue
            self.checks[i] = filecheck.stat_problem(path, st)
            if self.checks[i] is None:
                self.stamps[i] = (st.st_size, st.st_mtime_ns)
                if (row := self.index.file(self.names[i], *self.stamps[i])) is not None:
                    self.known[i] = row
        self.reuse.files = len(self.stamps)

    def hash_new(self) -> None:
        """Hash the files the index does not know (new, moved, renamed, re-tagged, changed)."""
        by_stat = set(self.known)
        todo = [i for i in self.stamps if i not in self.known]
        hashed = self._map(_hash_job, [self.paths[i] for i in todo], "hashing")
        for i, (found, after) in zip(todo, hashed, strict=True):  # strict: runs the bar to its end
            if isinstance(found, FileCheck):
                self.checks[i] = found
                continue
            self.reuse.hashed += 1
            self.known[i] = Known(*found, None)
            if after == self.stamps[i]:
                self.index.put_file(self.names[i], *self.stamps[i], *found)
        self.facts = self.index.checks(k.audio_key for k in self.known.values())
        self.reuse.by_stat = sum(self.known[i].audio_key in self.facts for i in by_stat)
        self.reuse.by_key = sum(k.audio_key in self.facts for i, k in self.known.items()
                                if i not in by_stat)

    def decode_new(self) -> None:
        """Decode each audio key without facts, from the first of its files that reads."""
        files_of: dict[str, list[int]] = {}
        for i, k in self.known.items():
            if k.audio_key not in self.facts:
                files_of.setdefault(k.audio_key, []).append(i)
        jobs = [tuple(self.paths[i] for i in files) for files in files_of.values()]
        decoded = self._map(_decode_job, jobs, "checking audio", "song")
        for (key, files), (j, d, after) in zip(files_of.items(), decoded, strict=True):
            self.facts[key] = d
            if isinstance(d, Decoded):
                self.reuse.decoded += 1
                if after == self.stamps[files[j]]:
                    self.index.put_check(key, d)

    def judge(self, min_seconds: float) -> None:
        """Every known file's verdict; a usable one takes its stored tags, or waits for them."""
        for i, k in self.known.items():
            d = self.facts[k.audio_key]
            if isinstance(d, FileCheck):  # none of the files of this audio could be read
                self.checks[i] = replace(d, path=self.paths[i], sha1=k.sha1, audio_key=k.audio_key)
                continue
            chk = filecheck.verdict(self.paths[i], k.sha1, k.audio_key, d, min_seconds)
            if chk.usable and k.tags is None:
                self.need_tags.append(i)
            elif chk.usable:
                chk = replace(chk, tags=k.tags)
            self.checks[i] = chk

    def read_tags(self) -> None:
        todo = self.need_tags
        read = self._map(_tags_job, [self.paths[i] for i in todo], "reading tags")
        for i, (tags, after) in zip(todo, read, strict=True):
            self.reuse.tags_read += 1
            self.checks[i] = replace(self.checks[i], tags=tags)
            if after == self.stamps[i]:
                self.index.put_tags(self.names[i], *self.stamps[i], tags)
