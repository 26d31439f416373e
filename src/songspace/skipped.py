"""skipped.csv: the songs a stage left out, and why. Its one writer and its one reader.

Columns (`COLUMNS`): track_id (empty for a file that never became a track), path, reason (a
short code) and detail (a sentence naming the problem). The ingest stage writes one for the
files it left out of the library (reasons: `ingest.REASONS`); the features and augment stages
write one beside their outputs for the tracks whose audio they could not use (`UNUSABLE`).
Rows are written sorted by reason, then path, so the same run writes the same bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from songspace.errors import UserError

COLUMNS = ("track_id", "path", "reason", "detail")
FILE_NAME = "skipped.csv"
UNUSABLE = "unusable"  # a track whose audio a stage could not decode or use


def table(rows: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """Rows (mappings with any of `COLUMNS`; a missing one is '') as the skipped table, sorted."""
    frame = pd.DataFrame([{c: "" if row.get(c) is None else str(row.get(c, "")) for c in COLUMNS}
                          for row in rows], columns=list(COLUMNS), dtype=str)
    return frame.sort_values(["reason", "path", "track_id"], kind="stable").reset_index(drop=True)


def write(skipped: pd.DataFrame, path: str | Path) -> Path:
    """Write a `table` to path (its folder is created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skipped.to_csv(path, index=False, columns=list(COLUMNS))
    return path


def read(path: str | Path) -> pd.DataFrame:
    """What `write` wrote; `UserError` naming the file when it is not a skipped list."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{path}: not a readable skipped list ({err})") from None
    if list(frame.columns) != list(COLUMNS):
        raise UserError(f"{path}: columns {list(frame.columns)}, expected {list(COLUMNS)}")
    return frame
