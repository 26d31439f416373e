"""An index folder as one unit on disk: its lock, its atomic replacement, the recovery after a
killed write, and the list of songs added with `songspace add` beside it.

A save writes a complete new folder aside (`.<name>.new-<pid>`, meta.json last), then swaps it
in with two renames: the old folder aside (`.<name>.old-<pid>`), the new one into place. A
kill leaves one of these states, and `recover` (run under the lock before every read and
write) settles each:

- a new folder without meta.json, or any new folder while the index is in place: the swap
  had not begun, so the save never happened: the new folder is dropped;
- no index in place, a complete new folder aside: the kill fell between the two renames:
  the new folder is put in place (the save completes);
- no index in place, no complete new folder, an old one: the old one is put back;
- whatever is left aside after that is removed.

The added-songs list (`added_list_path`) is written after the index, from the index's own
added rows (`sync_added`), and only ever gains rows it lacks (by content hash), so the next
`add` (a retry included) completes a list that a kill left behind its index.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from songspace.index.errors import LibraryError
from songspace.index.files import FILES, TRACK_TABLE, track_table

LOCK_TIMEOUT_S = 600.0       # how long a reader or writer waits for another one's lock


def absolute(index_dir: str | Path) -> Path:
    """The index folder as an absolute path (`.` and `..` included: its name names its siblings)."""
    folder = Path(os.path.abspath(index_dir))
    if not folder.name:
        raise LibraryError(f"{folder}: not an index folder (the root of the file system)")
    return folder


def index_lock(index_dir: str | Path, timeout_s: float = LOCK_TIMEOUT_S):
    """The lock every reader and writer of an index folder holds: `.<name>.lock` beside it.

    Two `songspace add` runs on one index take turns, so neither loses the other's tracks.
    When another process holds it, a line on stderr says so before waiting (at most timeout_s).
    """
    from filelock import FileLock, Timeout

    folder = absolute(index_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder.with_name(f".{folder.name}.lock")))

    def acquire() -> None:
        try:
            lock.acquire(timeout=0)
            return
        except Timeout:
            print(f"songspace: waiting for the index lock held by another songspace process "
                  f"({lock.lock_file}; at most {timeout_s:g} s) ...", file=sys.stderr, flush=True)
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout:
            raise LibraryError(f"{folder}: still locked by another songspace process after "
                               f"{timeout_s:g} s ({lock.lock_file})") from None

    @contextlib.contextmanager
    def held():
        try:
            acquire()
        except PermissionError:  # a read-only place: nobody can write there either
            yield
            return
        try:
            yield
        finally:
            lock.release()

    return held()


# ---------------------------------------------------------------- replacing the folder whole


def save(final: Path, write: Callable[[Path], None]) -> Path:
    """Replace the folder `final` by one that `write(folder)` fills (the caller holds the lock)."""
    recover(final)
    commit(write_aside(final, write), final)
    return final


def write_aside(final: Path, write: Callable[[Path], None]) -> Path:
    """A new folder beside `final`, filled by `write`; removed again if `write` fails."""
    final.parent.mkdir(parents=True, exist_ok=True)
    new = final.with_name(f".{final.name}.new-{os.getpid()}")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    try:
        write(new)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    return new


def move_aside(final: Path) -> Path | None:
    """The swap's first rename: `final` to `.<name>.old-<pid>` (None when there is no `final`)."""
    if not final.exists():
        return None
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    return old


def commit(new: Path, final: Path) -> None:
    """Swap the complete folder `new` in for `final`: old aside, new in place, old dropped."""
    old = move_aside(final)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def leftovers(final: Path, kind: str) -> list[Path]:
    """The `.<name>.<kind>-*` folders beside `final` (kind: new | old), newest last."""
    prefix = f".{final.name}.{kind}-"  # not a glob: the folder's name may hold [ ] * ?
    found = [p for p in final.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def recover(final: Path) -> None:
    """Settle what a killed save left beside `final` (see the module docstring); caller holds the lock."""
    if not final.parent.is_dir():
        return
    new = [p for p in leftovers(final, "new") if (p / FILES["meta"]).is_file()]
    old = [p for p in leftovers(final, "old") if (p / FILES["meta"]).is_file()]
    if not final.exists() and (new or old):
        os.replace((new or old)[-1], final)
    for p in leftovers(final, "new") + leftovers(final, "old"):
        shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------- the added-songs list


def added_list_path(index_dir: str | Path) -> Path:
    """Where the songs added with `songspace add` are listed: `added/tracks.csv` beside the index.

    DVC never overwrites it (it is an input of the `index` stage, not an output), so the songs
    listed there survive `dvc repro`: the stage embeds them again with the current model.
    Paths in it are absolute, so the list means the same from any working folder.
    """
    return absolute(index_dir).parent / "added" / "tracks.csv"


def read_added(path: str | Path) -> pd.DataFrame:
    """The added-songs list (`TRACK_TABLE` columns); empty when there is none."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(TRACK_TABLE))
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError) as err:  # pandas' EmptyDataError and ParserError are ValueErrors
        raise LibraryError(f"{path}: unreadable list of added songs ({err})") from None
    missing = [c for c in TRACK_TABLE if c not in table.columns]
    if missing:
        raise LibraryError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(TRACK_TABLE)})")
    return table[list(TRACK_TABLE)]


def sync_added(path: str | Path, added: pd.DataFrame) -> int:
    """List every row of `added` (an index's added tracks) that the list lacks; returns how many.

    A song is listed once, by content (sha1; by path when it has none), so a retried add never
    lists it twice. The file is replaced whole (written aside, then renamed); a leftover of a
    killed write is removed. Nothing is written when nothing is missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.new-*"):
        stale.unlink(missing_ok=True)
    listed = read_added(path)
    have = set(_song_keys(listed))
    rows = track_table(added)
    rows = rows[[key not in have for key in _song_keys(rows)]].drop_duplicates(["sha1", "path"])
    if rows.empty:
        return 0
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    pd.concat([listed, rows], ignore_index=True).to_csv(tmp, index=False, encoding="utf-8")
    os.replace(tmp, path)
    return len(rows)


def _song_keys(table: pd.DataFrame) -> list[str]:
    return [f"sha1:{h}" if h else f"path:{p}" for h, p in zip(table["sha1"], table["path"])]

