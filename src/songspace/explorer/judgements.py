"""The judgements file and its log: one writer and one reader each.

A listener's odd-one-out judgements go to a quartet CSV in the thesis layout with a header,

    song1,song2,song3,odd,split,annotator,judged_at,chosen_by,seconds

which the groundtruth stage reads as it is (`data.quartets`; `groundtruth.read_quartet_rows`
and `parse_quartets`: the `split` column is honoured, the others are ignored by training and
read by `groundtruth.agreement`). Songs are track ids; every field is quoted, so a track id
with commas, semicolons or quotes (a folder library's relative path) reads back unchanged.

Beside it, `<name>.log.jsonl` holds one JSON object per line: every quartet asked (with how
it was chosen) and every answer that is not a quartet ("all alike", "skip").

Writes append one line and flush and fsync it while holding a lock (`.<name>.lock`, the
`filelock` package, plus a thread lock for the server's own threads): two tabs, two
annotators or two servers take turns and lose nothing, and a killed server loses at most the
line it was writing. Appending, not rewriting the file through a temporary copy, keeps each
judgement's cost independent of how many came before. A line cut short by a kill is the only
damage a crash can leave: the next write cuts it off before appending (it is the judgement
that was lost), so the file never holds a torn line the pipeline would refuse.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import threading
from pathlib import Path

from filelock import FileLock, Timeout

from songspace.errors import UserError

JUDGEMENT_COLUMNS = ("song1", "song2", "song3", "odd", "split", "annotator", "judged_at",
                     "chosen_by", "seconds")
DEFAULT_JUDGEMENTS = Path("data/judgements/quartets.csv")
LOCK_TIMEOUT_S = 30.0


class JudgementsError(UserError):
    """A judgements file that cannot be used: another file's header, an unreadable place."""


def log_path(csv_path: str | Path) -> Path:
    """The JSON-lines log beside a judgements CSV: quartets.csv -> quartets.log.jsonl."""
    p = Path(csv_path)
    return p.with_name(f"{p.stem}.log.jsonl")


def _csv_line(cells) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(cells)
    return out.getvalue()


HEADER_LINE = _csv_line(JUDGEMENT_COLUMNS)


class JudgementStore:
    """The judgements CSV and its log, appended to under a lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.log = log_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise JudgementsError(f"{self.path}: cannot create its folder ({err.strerror or err})") from None
        self._file_lock = FileLock(str(self.path.with_name(f".{self.path.name}.lock")),
                                   timeout=LOCK_TIMEOUT_S)
        self._thread_lock = threading.Lock()
        self.check()

    @contextlib.contextmanager
    def _locked(self):
        """The thread lock (this server's threads), then the file lock (other processes)."""
        with self._thread_lock:
            try:
                self._file_lock.acquire()
            except Timeout:
                raise JudgementsError(f"{self.path}: still locked by another process after "
                                      f"{LOCK_TIMEOUT_S:g} s ({self._file_lock.lock_file})") from None
            try:
                yield
            finally:
                self._file_lock.release()

    def check(self) -> None:
        """`JudgementsError` when the file exists with another header (someone else's CSV)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open(encoding="utf-8", newline="") as f:
            first = f.readline()
        if not first.endswith("\n"):
            return  # a header cut short by a kill: the next write starts the file again
        header = next(csv.reader([first]), [])
        if tuple(c.strip() for c in header) != JUDGEMENT_COLUMNS:
            raise JudgementsError(
                f"{self.path}: not a judgements file (its first line is {first.strip()[:80]!r}, "
                f"expected {','.join(JUDGEMENT_COLUMNS)}); give another file with --judgements")

    def append(self, row: dict) -> None:
        """Append one judgement (a dict with `JUDGEMENT_COLUMNS`), durably, under the lock."""
        line = _csv_line(["" if row.get(c) is None else row[c] for c in JUDGEMENT_COLUMNS])
        with self._locked():
            self.check()
            _append_line(self.path, line, header=HEADER_LINE)

    def log_event(self, event: dict) -> None:
        """Append one JSON object to the log, durably, under the lock."""
        line = json.dumps(event, ensure_ascii=False, sort_keys=True) + "\n"
        with self._locked():
            _append_line(self.log, line)

    def read(self) -> list[dict]:
        """Every judgement in the file, as dicts of text keyed by `JUDGEMENT_COLUMNS`."""
        with self._locked():
            if not self.path.exists():
                return []
            text = self.path.read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        return [{c: (r.get(c) or "") for c in JUDGEMENT_COLUMNS} for r in rows if r.get("odd")]

    def read_log(self) -> list[dict]:
        """The log's events in order (a line cut short by a kill is passed over)."""
        with self._locked():
            if not self.log.exists():
                return []
            lines = self.log.read_text(encoding="utf-8").splitlines()
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


def _append_line(path: Path, text: str, header: str = "") -> None:
    """Append text (whole lines) to path and fsync it; a torn last line is cut off first, and
    an empty file gets header first."""
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":  # the last write was killed mid-line: drop that line
                f.seek(0)
                size = f.read().rfind(b"\n") + 1
                f.truncate(size)
        f.write(((header if size == 0 else "") + text).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
