"""Checking that one audio file is usable: hashed, read, fully decoded, not silent, long enough;
and its tags read, in the same pass.

`check_file` gives a verdict (`FileCheck`) with a reason code instead of raising: the ingest
stage lists the files it cannot use and goes on. `check_files` runs it over many files in
worker processes. `sha1_of` is a file's content identity, shared by ingest and the index.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import stat
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from songspace import tags
from songspace.audio import BLOCK_FRAMES, SILENCE_PEAK, BadAudio, quiet_stderr, scan

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

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def check_file(path: str | Path, min_seconds: float, block_frames: int = BLOCK_FRAMES) -> FileCheck:
    """Hash and fully decode one file; silent or shorter than `min_seconds` seconds is a skip."""
    path = Path(path)
    try:
        mode = path.stat().st_mode  # the type first: hashing a named pipe would wait forever
        if not stat.S_ISREG(mode):
            return FileCheck(str(path), reason="not_a_file", detail=f"not a regular file ({_kind(mode)})")
        digest = sha1_of(path)
    except FileNotFoundError:
        return FileCheck(str(path), reason="missing", detail="no such file")
    except OSError as err:
        return FileCheck(str(path), reason="unreadable", detail=f"cannot read: {err.strerror}")
    try:
        with quiet_stderr():
            s = scan(path, block_frames)
    except BadAudio as err:
        return FileCheck(str(path), sha1=digest, reason=err.kind, detail=err.reason)
    except OSError as err:
        return FileCheck(str(path), sha1=digest, reason="unreadable", detail=f"cannot read: {err}")
    facts = dict(sha1=digest, sample_rate=s.sample_rate, channels=s.channels, frames=s.frames)
    if s.peak < SILENCE_PEAK:
        return FileCheck(str(path), **facts, reason="silent",
                         detail=f"silent: peak {s.peak:.1e} over {s.duration_s:.2f} s")
    if s.duration_s < min_seconds:
        return FileCheck(str(path), **facts, reason="too_short",
                         detail=f"too short: {s.duration_s:.2f} s < data.min_seconds "
                                f"({min_seconds:g} s)")
    return FileCheck(str(path), **facts, tags=tuple(tags.read(path).values()))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"



def _check_job(job: tuple[str, float]) -> FileCheck:
    return check_file(*job)


def check_files(
    paths: list[str], min_seconds: float, workers: int = 2, progress: bool = True,
) -> list[FileCheck]:
    """check_file on every path (in `workers` processes), in the order given."""
    jobs = [(p, min_seconds) for p in paths]
    bar = tqdm(total=len(jobs), desc="checking audio", unit="file", disable=not progress,
               dynamic_ncols=True)
    with bar:
        if workers <= 1 or len(jobs) < 2:
            results = []
            for job in jobs:
                results.append(_check_job(job))
                bar.update()
            return results
        # fork is cheap and safe here (workers only read files); spawn where fork is missing
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "fork with threads" notice
            with mp.get_context(method).Pool(min(workers, len(jobs))) as pool:
                results = []
                for r in pool.imap(_check_job, jobs, chunksize=1):
                    results.append(r)
                    bar.update()
        return results
