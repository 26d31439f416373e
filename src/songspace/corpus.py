"""The built-in corpus: real scores from music21's corpus rendered to audio, offline.

Each class is a collection inside music21's corpus (`CLASSES` lists them). A build draws
`pieces_per_class` pieces per class (seeded), takes each piece's first `bars` bars as
performed (repeats expanded), exports them to MIDI with music21 and renders the MIDI with
tinysoundfont and the General MIDI soundfont that ships in the pretty_midi wheel.

What could give a class away other than the music itself is removed: every part of every
clip plays one General MIDI program drawn (seeded, per clip) from a single shared pool, and
every clip is normalised to the same peak level. Renders have a fixed, bounded length
(at most `max_seconds`); a synthesiser cannot run on past it.

Pieces that cannot be rendered (music21 rejects some repeat structures, for example) are
skipped, listed in `failed.csv`, and replaced by further draws from the same class.
"""
from __future__ import annotations

import re
import unicodedata
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from songspace import audio
from songspace.corpus_render import (  # noqa: F401 - part of this API too
    PEAK_DBFS, RELEASE_SECONDS, SOUNDFONT_FILE, CorpusError, check_programs, finish, first_bars,
    midi_events, render_midi, score_to_midi, soundfont_path,
)
from songspace.errors import one_line

if TYPE_CHECKING:  # config imports this module to check corpus.classes and corpus.programs
    from songspace.config import CorpusParams

CORPUS_COLUMNS = ("track_id", "path", "label", "source", "duration_s")
FAILED_COLUMNS = ("label", "source", "reason")
TRACKS_FILE = "tracks.csv"
FAILED_FILE = "failed.csv"


@dataclass(frozen=True)
class Piece:
    """One score of the corpus.

    `source` is the path inside music21's corpus (`music21.corpus.parse(source)` opens it);
    `track_id` is a short, readable, ascii id unique within the corpus.
    """

    label: str
    source: str
    track_id: str


# ---------------------------------------------------------------------------------------
# The classes: which pieces of music21's corpus each one holds


def slug(text: str) -> str:
    """Lower-case ascii words joined by '-': "ACROBAT'S -- Hornpipe" -> "acrobats-hornpipe"."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"['\u2019`\"]", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def _corpus_root() -> Path:
    from music21 import common

    return Path(common.getCorpusFilePath())


def _relative(path: str | Path) -> str:
    """A corpus file's path relative to music21's corpus folder (what corpus.parse takes)."""
    path = Path(path)
    try:
        return path.relative_to(_corpus_root()).as_posix()
    except ValueError:
        return path.as_posix()


def _unique_ids(label: str, named: list[tuple[str, str]]) -> list[Piece]:
    """Pieces from (source, name) pairs, sorted by source; repeated names get -2, -3, ..."""
    pieces, seen = [], {}
    for source, name in sorted(named):
        base = f"{label}-{name}" if name else f"{label}-{slug(Path(source).stem)}"
        seen[base] = seen.get(base, 0) + 1
        track_id = base if seen[base] == 1 else f"{base}-{seen[base]}"
        pieces.append(Piece(label=label, source=source, track_id=track_id))
    return pieces


def _bach_chorales(label: str) -> list[Piece]:
    """The Bach chorales of the Riemenschneider edition that exist as MusicXML."""
    from music21 import corpus
    from music21.corpus import chorales

    names = {Path(n).name for n in chorales.Iterator(returnType="filename")}
    paths = corpus.getComposer("bach", fileExtensions=("mxl", "xml"))
    by_stem = {p.stem: p for p in sorted(paths, key=lambda p: p.suffix, reverse=True)}  # .mxl wins
    named = [(_relative(by_stem[n]), slug(n)) for n in sorted(names) if n in by_stem]
    return _unique_ids(label, named)


def _composer(composer: str, extensions: tuple[str, ...]) -> Callable[[str], list[Piece]]:
    def pieces(label: str) -> list[Piece]:
        from music21 import corpus

        paths = corpus.getComposer(composer, fileExtensions=extensions)
        return _unique_ids(label, [(_relative(p), slug(p.stem)) for p in paths])

    pieces.__doc__ = f"Every {'/'.join(extensions)} score by {composer} in music21's corpus."
    return pieces


@lru_cache(maxsize=1)
def _ryans_mammoth_titles() -> tuple[tuple[str, str], ...]:
    """(corpus path, title) of every tune in Ryan's Mammoth Collection (from music21's index)."""
    from music21 import corpus

    return tuple(
        (_relative(entry.sourcePath), str(entry.metadata.title or ""))
        for entry in corpus.search("ryansMammoth", field="sourcePath")
    )


def _ryans_mammoth(tune_type: str) -> Callable[[str], list[Piece]]:
    word = re.compile(rf"\b{tune_type}s?\b", re.IGNORECASE)

    def pieces(label: str) -> list[Piece]:
        named = []
        for source, title in _ryans_mammoth_titles():
            if word.search(title):
                # the tune type is in every id already; keep the tune's own name
                named.append((source, slug(word.sub(" ", title))))
        return _unique_ids(label, named)

    pieces.__doc__ = f"Ryan's Mammoth Collection (1883): tunes whose title says '{tune_type}'."
    return pieces


CLASSES: dict[str, Callable[[str], list[Piece]]] = {
    "bach": _bach_chorales,
    "palestrina": _composer("palestrina", ("krn",)),
    "monteverdi": _composer("monteverdi", ("mxl", "xml")),  # madrigals (not the .rntxt analyses)
    "reel": _ryans_mammoth("reel"),
    "jig": _ryans_mammoth("jig"),
    "hornpipe": _ryans_mammoth("hornpipe"),
}


def candidates(label: str) -> list[Piece]:
    """Every piece of class `label`, sorted by source. Raises ValueError for unknown classes."""
    if label not in CLASSES:
        raise ValueError(f"unknown corpus class '{label}'; valid classes: {', '.join(CLASSES)}")
    return CLASSES[label](label)


# ---------------------------------------------------------------------------------------
# Seeded choices


def _stable(text: str) -> int:
    """A process-independent 32-bit number for a string (Python's hash() is salted)."""
    return zlib.crc32(text.encode("utf-8"))


def draw_order(pieces: list[Piece], seed: int, label: str) -> list[Piece]:
    """`pieces` in a seeded random order; depends only on (seed, label) and the pieces."""
    rng = np.random.default_rng([seed, _stable(label)])
    return [pieces[i] for i in rng.permutation(len(pieces))]


def choose_program(programs: tuple[int, ...], seed: int, source: str) -> int:
    """The General MIDI program (0-127) that plays every part of the clip of `source`.

    Drawn uniformly from the one shared pool `programs`, seeded by (seed, source) only:
    the class of a piece plays no part, so timbre carries no class information.
    """
    rng = np.random.default_rng([seed, _stable(source)])
    return int(programs[rng.integers(len(programs))])


# ---------------------------------------------------------------------------------------
# A piece rendered (score -> MIDI -> audio: `corpus_render`)


def render_piece(piece: Piece, program: int, params: CorpusParams) -> np.ndarray:
    """A piece's first `params.bars` bars as a finished mono float32 clip at params.sample_rate.

    Raises CorpusError (with the reason) for anything that stops the piece from rendering.
    """
    from music21 import corpus

    try:
        score = corpus.parse(piece.source)
        midi_bytes = score_to_midi(first_bars(score, params.bars))
    except CorpusError:
        raise
    except Exception as err:  # music21 raises many exception types for malformed scores
        raise CorpusError(f"{type(err).__name__}: {one_line(err)}"[:300]) from None
    wave = render_midi(midi_bytes, program, params.sample_rate, params.max_seconds)
    return finish(wave, params.sample_rate)


def _render_job(job: tuple[Piece, int, CorpusParams]) -> tuple[np.ndarray | None, str]:
    """(wave, "") or (None, reason): worker-side, never raises for a bad piece."""
    piece, program, params = job
    try:
        return render_piece(piece, program, params), ""
    except CorpusError as err:
        return None, str(err)


# ---------------------------------------------------------------------------------------
# The build


def validate(params: CorpusParams) -> None:
    """Raise ValueError for corpus classes or programs this corpus does not have (the numbers'
    ranges are declared, and checked, in `config`)."""
    unknown = [c for c in params.classes if c not in CLASSES]
    if unknown:
        raise ValueError(
            f"corpus.classes: unknown class(es) {', '.join(unknown)}; "
            f"valid classes: {', '.join(CLASSES)}"
        )
    if len(set(params.classes)) != len(params.classes):
        raise ValueError(f"corpus.classes: repeated class in {list(params.classes)}")
    check_programs(params.programs)


def build_corpus(
    params: CorpusParams, seed: int, out_dir: Path, workers: int = 2
) -> pd.DataFrame:
    """Render the built-in corpus into `out_dir`; return the track table.

    Writes `<track_id>.wav` (16-bit PCM mono at params.sample_rate) per clip,
    `tracks.csv` (CORPUS_COLUMNS, sorted by track_id) and `failed.csv` (FAILED_COLUMNS:
    pieces that could not be rendered and were replaced by further draws). Other .wav
    files in `out_dir` are removed. Each class gets `pieces_per_class` clips when its
    collection has that many renderable pieces (a warning says when it has not).

    The result depends only on (params, seed), not on `workers`: the pieces of a class
    are tried in a seeded order and the first successes are kept; each clip's program
    depends only on (seed, source).
    """
    validate(params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failed, kept = _render_all(params, seed, out_dir, workers)
    for c in params.classes:
        if len(kept[c]) < params.pieces_per_class:
            warnings.warn(
                f"corpus class '{c}': only {len(kept[c])} of {params.pieces_per_class} "
                "pieces could be rendered (the collection has no more)",
                stacklevel=2,
            )
    tracks = pd.DataFrame(rows, columns=list(CORPUS_COLUMNS)).sort_values("track_id")
    tracks = tracks.reset_index(drop=True)
    failures = pd.DataFrame(failed, columns=list(FAILED_COLUMNS))
    failures = failures.sort_values(["label", "source"]).reset_index(drop=True)
    keep = {f"{t}.wav" for t in tracks.track_id}
    for stale in out_dir.glob("*.wav"):
        if stale.name not in keep:
            stale.unlink()
    write_table(tracks, out_dir)
    failures.to_csv(out_dir / FAILED_FILE, index=False)
    return tracks


def _render_all(params: CorpusParams, seed: int, out_dir: Path, workers: int
                ) -> tuple[list[tuple], list[tuple], dict[str, list[Piece]]]:
    """Render and write clips in rounds, each drawing as many pieces as each class still lacks,
    until every class is full or its collection is spent. Returns the written clips' rows
    (`CORPUS_COLUMNS`), the failures (`FAILED_COLUMNS`) and the pieces kept per class."""
    queues = {c: iter(draw_order(candidates(c), seed, c)) for c in params.classes}
    kept: dict[str, list[Piece]] = {c: [] for c in params.classes}
    rows, failed = [], []
    bar = tqdm(total=0, desc="corpus", unit="clip")
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        while True:
            batch = [
                piece
                for c in params.classes
                for piece in _take(queues[c], params.pieces_per_class - len(kept[c]))
            ]
            if not batch:
                break
            bar.total += len(batch)
            bar.refresh()
            jobs = [(p, choose_program(params.programs, seed, p.source), params) for p in batch]
            results = pool.map(_render_job, jobs) if pool else map(_render_job, jobs)
            for piece, (wave, reason) in zip(batch, results):
                if wave is None:
                    failed.append((piece.label, piece.source, reason))
                else:
                    kept[piece.label].append(piece)
                    rows.append(_write_clip(piece, wave, out_dir, params.sample_rate))
                bar.update()
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)
    return rows, failed, kept


def _write_clip(piece: Piece, wave: np.ndarray, out_dir: Path, rate: int) -> tuple:
    """`out_dir/<track_id>.wav` (16-bit PCM mono at `rate` Hz); the clip's table row."""
    path = out_dir / f"{piece.track_id}.wav"
    audio.write(path, wave, rate)
    return (piece.track_id, str(path), piece.label, piece.source, round(len(wave) / rate, 4))


def _take(queue, n: int) -> list[Piece]:
    return [piece for _, piece in zip(range(max(0, n)), queue)]


def write_empty(out_dir: Path) -> pd.DataFrame:
    """An empty track table (header only) in `out_dir`, for pipelines on a user's library."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tracks = pd.DataFrame(columns=list(CORPUS_COLUMNS))
    write_table(tracks, out_dir)
    return tracks


def write_table(tracks: pd.DataFrame, out_dir: Path) -> Path:
    """The corpus table (`CORPUS_COLUMNS`) as `out_dir/tracks.csv`, ingest's input."""
    path = Path(out_dir) / TRACKS_FILE
    tracks.to_csv(path, index=False)
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """A corpus table written by `write_table`, every column as text (empty cells as "")."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def summary(tracks: pd.DataFrame, out_dir: Path, seconds: float) -> str:
    """A few lines for people: clips and minutes per class, failures, time taken."""
    failed_csv = Path(out_dir) / FAILED_FILE
    failures = pd.read_csv(failed_csv) if failed_csv.exists() else pd.DataFrame()
    lines = [f"corpus: {len(tracks)} clips, {tracks.duration_s.sum() / 60:.1f} min of audio "
             f"in {out_dir} ({seconds:.0f} s)"]
    for label, group in tracks.groupby("label"):
        lines.append(f"  {label:<12} {len(group):4d} clips  "
                     f"{group.duration_s.sum() / 60:5.1f} min  "
                     f"median {group.duration_s.median():4.1f} s")
    if len(failures):
        lines.append(f"  {len(failures)} piece(s) could not be rendered and were replaced: "
                     f"{failed_csv}")
    return "\n".join(lines)
