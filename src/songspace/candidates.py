"""Which files become tracks, under which id, label and group, before any is decoded: a folder
walked (`walk_audio`; labels from its sub-folders, a labels CSV or a tag) or the built-in corpus
table. Files ruled out already (unreadable folders, names that are not UTF-8, a labels CSV's
missing files, files without a label) are listed with a reason code (`ingest.REASONS`)."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from songspace.audio import AUDIO_EXTENSIONS
from songspace.errors import UserError

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


def resolve_param_path(value: str, audio_dir: str | None, what: str) -> Path:
    """A CSV named in params: relative to the project root, else to data.audio_dir."""
    tried = [Path(value)]
    if audio_dir and not Path(value).is_absolute():
        tried.append(Path(audio_dir) / value)
    for p in tried:
        if p.is_file():
            return p
    raise IngestError(f"{what} '{value}' not found (looked for {', '.join(map(str, tried))})")
