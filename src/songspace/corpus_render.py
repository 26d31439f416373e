"""Score -> MIDI -> audio for the built-in corpus: a music21 score's first bars as performed,
exported to MIDI, rendered by tinysoundfont with the General MIDI soundfont that ships in the
pretty_midi wheel (one program on every part), faded out and peak-normalised."""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np

from songspace import audio
from songspace.errors import UserError

SOUNDFONT_FILE = "TimGM6mb.sf2"  # General MIDI soundfont bundled in the pretty_midi wheel
PEAK_DBFS = -1.0  # every clip's peak level
RELEASE_SECONDS = 1.0  # rendered after the last note ends, so releases are not cut off
FADE_OUT_SECONDS = 0.05  # every clip ends with this fade (no click where a render is cut)
DRUM_CHANNEL = 9  # General MIDI percussion; never used for a part
MIDI_CHANNELS = 16


class CorpusError(UserError):
    """A piece that cannot be rendered; the message says why."""


def first_bars(score, bars: int):
    """The first `bars` measures of every part of a music21 score, as performed.

    Repeats are expanded (a repeated 8-bar strain plays twice within 16 bars); measures
    are counted by position, not by their printed numbers, which restart after pickups
    and repeats. Raises whatever music21 raises for malformed repeats.
    """
    # Repeats only jump back, so the first `bars` performed bars lie within the first
    # `bars` written ones: expanding just those is the same and much cheaper than
    # expanding (deep-copying) a whole movement, and most heads have no repeats at all.
    # When the cut leaves a repeat open, the whole score is expanded instead.
    head = score.measures(0, bars, indicesNotNumbers=True)
    if not _has_repeats(head):
        return head
    try:
        performed = head.expandRepeats()
    except Exception:
        performed = score.expandRepeats()
    return performed.measures(0, bars, indicesNotNumbers=True)


def _has_repeats(score) -> bool:
    """Whether any part has repeat barlines or da capo / dal segno marks (well formed or not)."""
    from music21 import repeat

    parts = list(score.parts) or [score]
    return any(repeat.Expander(part).isExpandable() is not None for part in parts)


def score_to_midi(score) -> bytes:
    """A music21 stream as Standard MIDI File bytes."""
    from music21 import midi

    return midi.translate.streamToMidiFile(score).writestr()


def _channels(n_tracks: int) -> list[int]:
    """One channel per MIDI track, skipping the percussion channel (wrapping past 15)."""
    melodic = [c for c in range(MIDI_CHANNELS) if c != DRUM_CHANNEL]
    return [melodic[i % len(melodic)] for i in range(n_tracks)]


def midi_events(data: bytes) -> tuple[list, set[int], float]:
    """Standard MIDI File bytes -> (tinysoundfont events, channels used, end of last note in s).

    Each track gets its own channel: music21 puts parts with the same instrument on one
    channel, where one voice's note-off would silence another voice's unison. Program
    changes and bank selects are dropped (the caller sets one program for all channels).
    Read with mido, which accepts music21 files that pretty_midi rejects.
    """
    import mido
    from tinysoundfont.midi import ControlChange, Event, NoteOff, NoteOn, PitchBend

    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
    except Exception as err:
        raise CorpusError(f"unreadable MIDI ({err})") from None
    for track, channel in zip(mid.tracks, _channels(len(mid.tracks))):
        for msg in track:
            if hasattr(msg, "channel"):
                msg.channel = channel
    events, used, now, end = [], set(), 0.0, 0.0
    for msg in mid:  # merged tracks, msg.time in seconds since the previous message
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            action = NoteOn(msg.note, msg.velocity)
            used.add(msg.channel)
        elif msg.type in ("note_on", "note_off"):
            action = NoteOff(msg.note)
        elif msg.type == "pitchwheel":
            action = PitchBend(msg.pitch + 8192)
        elif msg.type == "control_change" and msg.control not in (0, 32):  # not bank select
            action = ControlChange(msg.control, msg.value)
        else:
            continue
        events.append(Event(action, t=now, channel=msg.channel, persistent=False))
        if msg.type in ("note_on", "note_off"):
            end = now
    return events, used, end


def soundfont_path() -> Path:
    """The General MIDI soundfont in the installed pretty_midi package."""
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / SOUNDFONT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: General MIDI soundfont missing from pretty_midi")
    return path


@lru_cache(maxsize=1)
def _soundfont_bytes() -> bytes:
    return soundfont_path().read_bytes()


@lru_cache(maxsize=1)
def _soundfont_programs() -> frozenset[int]:
    """The General MIDI programs (bank 0) the soundfont has."""
    import tinysoundfont

    synth = tinysoundfont.Synth()
    sfid = synth.sfload(_soundfont_bytes())
    return frozenset(p for p in range(128) if synth.sfpreset_name(sfid, 0, p) is not None)


def check_programs(programs: Iterable[int]) -> None:
    """Raise ValueError unless every program exists (bank 0) in the soundfont."""
    programs = list(programs)
    if not programs:
        raise ValueError("corpus.programs: the pool of General MIDI programs is empty")
    missing = [p for p in programs if p not in _soundfont_programs()]
    if missing:
        raise ValueError(f"corpus.programs: {missing} not in the General MIDI soundfont (0-127)")


def render_midi(data: bytes, program: int, rate: int, max_seconds: float) -> np.ndarray:
    """Render MIDI bytes with one General MIDI program on every part.

    Returns mono float32 (samples,) at `rate` Hz, lasting until the last note's release
    (`RELEASE_SECONDS` after it ends) but never longer than `max_seconds`: the synthesiser
    renders exactly that many samples. Not normalised.
    """
    import tinysoundfont

    events, used, end = midi_events(data)
    if not used:
        raise CorpusError("no notes to play")
    samples = int(round(min(end + RELEASE_SECONDS, max_seconds) * rate))
    # Rendered at `rate` directly: rendering at 48 kHz and decimating to 16 kHz changed the
    # non-harmonic energy of single high notes by under 3 dB, at three times the cost.
    synth = tinysoundfont.Synth(samplerate=rate)
    sfid = synth.sfload(_soundfont_bytes())
    for channel in sorted(used):
        synth.program_select(channel, sfid, 0, program)
    sequencer = tinysoundfont.Sequencer(synth)
    sequencer.add(events)
    stereo = np.frombuffer(synth.generate(samples), dtype=np.float32)
    return stereo.reshape(-1, 2).mean(axis=1)[:samples].astype(np.float32)


def finish(wave: np.ndarray, rate: int, peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
    """Fade the last `FADE_OUT_SECONDS` out and scale the peak to `peak_dbfs` dBFS.

    (samples,) float32 -> (samples,) float32. Raises CorpusError for silence.
    """
    wave = np.array(wave, dtype=np.float32)
    fade = min(len(wave), int(round(FADE_OUT_SECONDS * rate)))
    if fade:
        wave[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    if audio.is_silent(wave):
        raise CorpusError("rendered silence")
    return (wave * (10 ** (peak_dbfs / 20) / np.max(np.abs(wave)))).astype(np.float32)
