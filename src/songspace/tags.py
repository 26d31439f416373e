"""A song's tags: artist, album artist, album, title, genre, year and track number, read with
mutagen from every format songspace decodes (ID3 in mp3 and wav, Vorbis comments in flac, ogg
and opus).

Tags are facts about a file, never a reason to skip it: a file whose tags are missing, broken
or unreadable gets empty fields. Multi-valued tags (two artists) are joined with `MULTI_SEP`;
`first` takes the first value (a label or group from a tag uses it). Text is cleaned of
control characters and surrounding space; ID3's legacy encodings are decoded by mutagen.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

TAG_COLUMNS = ("artist", "albumartist", "album", "title", "genre", "year", "tracknumber")
MULTI_SEP = "; "            # between the values of a multi-valued tag
MAX_TAG_CHARS = 200         # a value is cut there: a tag is a name, not a document

# The ID3 frame of each field (wav and aiff carry plain ID3; mp3 is read through EasyID3)
_ID3_FRAMES = {"artist": "TPE1", "albumartist": "TPE2", "album": "TALB", "title": "TIT2",
               "genre": "TCON", "date": "TDRC", "tracknumber": "TRCK"}
# Names of each field in Vorbis comments and EasyID3 / EasyMP4, first match wins
_KEYS = {"artist": ("artist",), "albumartist": ("albumartist", "album artist", "album_artist"),
         "album": ("album",), "title": ("title",), "genre": ("genre",),
         "date": ("date", "year", "originaldate"), "tracknumber": ("tracknumber", "track")}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_NUMBER = re.compile(r"^\s*(\d+)")


def empty() -> dict[str, str]:
    """Tags of a file that has none."""
    return dict.fromkeys(TAG_COLUMNS, "")


def clean(values) -> str:
    """One field's values (a list, or one value) as one line of text: control characters
    removed, blanks dropped, several values joined by MULTI_SEP."""
    if values is None:
        return ""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        values = [values]
    out = []
    for v in values:
        text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        text = _CONTROL.sub(" ", text).strip()
        if text and text not in out:
            out.append(text)
    return MULTI_SEP.join(out)[:MAX_TAG_CHARS]


def first(value: str) -> str:
    """The first value of a field that may hold several."""
    return value.split(MULTI_SEP, 1)[0].strip()


def _year(date: str) -> str:
    m = _YEAR.search(date)
    return m.group(1) if m else ""


def _track_number(text: str) -> str:
    m = _NUMBER.match(text)  # "3/12" -> 3
    return str(int(m.group(1))) if m else ""


def _fields(tags) -> dict[str, str]:
    """Raw field text from a mutagen tag object (ID3, or a dict-like of lists)."""
    raw: dict[str, str] = {}
    if hasattr(tags, "getall"):  # plain ID3 (wav, aiff)
        for name, frame_id in _ID3_FRAMES.items():
            frames = tags.getall(frame_id)
            raw[name] = clean([t for f in frames for t in getattr(f, "text", [])])
        return raw
    lowered = {}
    for key in tags.keys():
        lowered.setdefault(str(key).lower(), key)
    for name, keys in _KEYS.items():
        key = next((lowered[k] for k in keys if k in lowered), None)
        raw[name] = clean(tags[key]) if key is not None else ""
    return raw


def from_mutagen(tags) -> dict[str, str]:
    """The TAG_COLUMNS of a mutagen tag object (None: no tags)."""
    if tags is None:
        return empty()
    raw = _fields(tags)
    out = {k: raw.get(k, "") for k in TAG_COLUMNS}
    out["year"] = _year(raw.get("date", ""))
    out["tracknumber"] = _track_number(raw.get("tracknumber", ""))
    return out


def read(path: str | Path) -> dict[str, str]:
    """The tags of one audio file (`TAG_COLUMNS` -> text, '' where missing); never raises for
    a file whose tags cannot be read."""
    import mutagen

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = mutagen.File(str(path), easy=True)
        return from_mutagen(None if f is None else f.tags)
    except Exception:  # noqa: BLE001 - broken tags are no tags; the audio is checked elsewhere
        return empty()


def display_name(title: str, artist: str, fallback: str) -> str:
    """'title - artist' where the tags have them, else the fallback (a file name)."""
    title, artist = (title or "").strip(), (artist or "").strip()
    if title and artist:
        return f"{title} - {artist}"
    return title or fallback
