"""The ground-truth files: splits.csv, quartet CSVs and triplet CSVs, one reader and one writer
each, and the report groundtruth.json. Every other module reads and writes them through here."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from songspace.config_schema import SPLIT_METHODS  # noqa: F401 - split.method, declared once
from songspace.errors import UserError

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("track_id", "split")
QUARTET_COLUMNS = ("song1", "song2", "song3", "odd")
TRIPLET_COLUMNS = ("anchor", "positive", "negative")
# Separate random streams per product, so changing one count leaves the others unchanged.
STREAM_TEST, STREAM_VAL, STREAM_TRAIN, STREAM_PARTITION = 1, 2, 3, 4
MAX_DRAW_ROUNDS = 64
MAX_LISTED_ERRORS = 20


class GroundTruthError(UserError, ValueError):
    """Annotations or splits that cannot be used; the message names the file and line."""


def write_splits(splits: pd.DataFrame, path: str | Path) -> Path:
    """splits.csv: one row per track (`SPLIT_COLUMNS`)."""
    return _write(splits, SPLIT_COLUMNS, path)


def read_splits(path: str | Path) -> pd.DataFrame:
    """splits.csv as text columns `SPLIT_COLUMNS`; GroundTruthError naming a missing file or column."""
    return _read(path, SPLIT_COLUMNS)


def write_quartets(quartets: pd.DataFrame, path: str | Path) -> Path:
    """A quartet CSV (`QUARTET_COLUMNS`: three track ids and the odd one), e.g. test_quartets.csv."""
    return _write(quartets, QUARTET_COLUMNS, path)


def read_quartets(path: str | Path) -> pd.DataFrame:
    """A quartet CSV written by `write_quartets`, as text columns `QUARTET_COLUMNS`."""
    return _read(path, QUARTET_COLUMNS)


def write_triplets(triplets: pd.DataFrame, path: str | Path) -> Path:
    """A triplet CSV (`TRIPLET_COLUMNS`: anchor, positive, negative track ids)."""
    return _write(triplets, TRIPLET_COLUMNS, path)


def read_triplets(path: str | Path) -> pd.DataFrame:
    """A triplet CSV written by `write_triplets`, as text columns `TRIPLET_COLUMNS`."""
    return _read(path, TRIPLET_COLUMNS)


def write_report(report: dict, path: str | Path) -> Path:
    """groundtruth.json: what the ground truth holds and where it came from."""
    path = Path(path)
    with path.open("w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    return path


def read_report(path: str | Path) -> dict:
    """A groundtruth.json written by `write_report`."""
    return json.loads(Path(path).read_text())


def _write(table: pd.DataFrame, columns: tuple[str, ...], path: str | Path) -> Path:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: the table lacks column(s) {', '.join(missing)}")
    table.to_csv(path, index=False)
    return Path(path)


def _read(path: str | Path, columns: tuple[str, ...]) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise GroundTruthError(f"{path}: no such ground-truth file; run the `groundtruth` stage")
    table = pd.read_csv(path, dtype=str)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise GroundTruthError(f"{path}: missing column(s) {', '.join(missing)} "
                               f"(expected {', '.join(columns)})")
    return table
