"""Checking that one audio file is usable: hashed, read, fully decoded, not silent, long enough;
and its tags read.

`check_file` gives a verdict (`FileCheck`) with a reason code instead of raising: the ingest
stage lists the files it cannot use and goes on. It is three steps that `checkstore` also runs
apart, to reuse what an earlier run found: `audiokey.file_keys` (the file's sha1 and audio key,
one read), `decode` (what decoding finds, whatever the params) and `verdict` (that, judged
against data.min_seconds). `check_files` runs it over many files in worker processes (`imap`).
`sha1_of` is a file's content identity, shared by ingest and the index.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import stat
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from songspace import tags
from songspace.audio import SILENCE_PEAK
from songspace.audioscan import BLOCK_FRAMES, BadAudio, quiet_stderr, scan
from songspace.audiokey import file_keys


def sha1_of(path: str | Path) -> str:
    """Hex SHA-1 of a file's bytes: a track's content identity."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one file: usable (reason None) or skipped for `reason` (a REASONS key)."""

    path: str
    sha1: str = ""
    sample_rate: int = 0
    channels: int = 0
    frames: int = 0
    reason: str | None = None
    detail: str = ""
    tags: tuple[str, ...] = ()   # `tags.TAG_COLUMNS` values of a usable file ('' where missing)
    audio_key: str = ""          # `audiokey.audio_key`: the same after a retag

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def usable(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class Decoded:
    """What decoding a file's audio found, whatever the params: its facts (frames, peak |sample|
    in 0..1), or why it is not usable audio (reason: empty, not_audio, corrupt or truncated)."""

    sample_rate: int = 0
    channels: int = 0
    frames: int = 0
    peak: float = 0.0
    reason: str | None = None
    detail: str = ""


def read_error(path: str | Path, err: OSError) -> FileCheck:
    """The verdict on a file that cannot be stat'ed or read (vanished, permissions, I/O)."""
    if isinstance(err, FileNotFoundError):
        return FileCheck(str(path), reason="missing", detail="no such file")
    return FileCheck(str(path), reason="unreadable", detail=f"cannot read: {err.strerror}")


def stat_problem(path: str | Path, st: os.stat_result | None = None) -> FileCheck | None:
    """Why a path cannot be checked at all (missing, unreadable, not a regular file), from its
    `stat` (`st`, else taken now) alone: hashing a named pipe would wait forever. None for a
    regular file."""
    if st is None:
        try:
            st = os.stat(path)
        except OSError as err:
            return read_error(path, err)
    if not stat.S_ISREG(st.st_mode):
        return FileCheck(str(path), reason="not_a_file",
                         detail=f"not a regular file ({_kind(st.st_mode)})")
    return None


def decode(path: str | Path, block_frames: int = BLOCK_FRAMES) -> Decoded:
    """Decode a whole file in blocks (`audioscan.scan`); a file that is not usable audio is a
    Decoded with its reason. Raises OSError when the file cannot be read."""
    try:
        with quiet_stderr():
            s = scan(path, block_frames)
    except BadAudio as err:
        return Decoded(reason=err.kind, detail=err.reason)
    return Decoded(s.sample_rate, s.channels, s.frames, s.peak)


def verdict(path: str | Path, sha1: str, key: str, d: Decoded, min_seconds: float) -> FileCheck:
    """Pure: the verdict on a decoded file, silent or shorter than `min_seconds` seconds a skip
    (tags not read: `with_tags` adds them to a usable file)."""
    if d.reason:
        return FileCheck(str(path), sha1=sha1, audio_key=key, reason=d.reason, detail=d.detail)
    chk = FileCheck(str(path), sha1=sha1, sample_rate=d.sample_rate, channels=d.channels,
                    frames=d.frames, audio_key=key)
    if d.peak < SILENCE_PEAK:
        return replace(chk, reason="silent",
                       detail=f"silent: peak {d.peak:.1e} over {chk.duration_s:.2f} s")
    if chk.duration_s < min_seconds:
        return replace(chk, reason="too_short",
                       detail=f"too short: {chk.duration_s:.2f} s < data.min_seconds "
                              f"({min_seconds:g} s)")
    return chk


def read_tags(path: str | Path) -> tuple[str, ...]:
    """`tags.TAG_COLUMNS` values of one file ('' where missing)."""
    return tuple(tags.read(path).values())


def check_file(path: str | Path, min_seconds: float, block_frames: int = BLOCK_FRAMES) -> FileCheck:
    """Hash and fully decode one file; silent or shorter than `min_seconds` seconds is a skip."""
    path = Path(path)
    problem = stat_problem(path)
    if problem:
        return problem
    try:
        sha1, key = file_keys(path)
    except OSError as err:
        return read_error(path, err)
    try:
        d = decode(path, block_frames)
    except OSError as err:
        return FileCheck(str(path), sha1=sha1, audio_key=key, reason="unreadable",
                         detail=f"cannot read: {err}")
    chk = verdict(path, sha1, key, d, min_seconds)
    return replace(chk, tags=read_tags(path)) if chk.usable else chk


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"



def _check_job(job: tuple[str, float]) -> FileCheck:
    return check_file(*job)


def imap(fn: Callable, items: list, workers: int = 2, desc: str = "", unit: str = "file",
         progress: bool = True) -> Iterator:
    """fn(item) for every item, in `workers` processes, in the order given, with a progress bar
    (rate and ETA). `fn` must be a module-level function (it travels to the workers)."""
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress or not items,
              dynamic_ncols=True) as bar:
        if workers <= 1 or len(items) < 2:
            for item in items:
                yield fn(item)
                bar.update()
            return
        # fork is cheap and safe here (workers only read files); spawn where fork is missing
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "fork with threads" notice
            with mp.get_context(method).Pool(min(workers, len(items))) as pool:
                for result in pool.imap(fn, items, chunksize=1):
                    yield result
                    bar.update()


def check_files(
    paths: list[str], min_seconds: float, workers: int = 2, progress: bool = True,
) -> list[FileCheck]:
    """check_file on every path (in `workers` processes), in the order given."""
    jobs = [(p, min_seconds) for p in paths]
    return list(imap(_check_job, jobs, workers, "checking audio", "file", progress))
