"""The data types of a generated piece: `Note`, `Part`, `Piece`.

The generator (`pieces.generate_piece`) makes them, `descriptors` describes
their parts and `render` plays them; they live here so that those modules
import them without importing each other.
"""

from __future__ import annotations

import dataclasses

import pretty_midi


@dataclasses.dataclass(frozen=True)
class Note:
  """One note; times in seconds from the start of the piece."""

  pitch: int
  start: float
  end: float
  velocity: int


@dataclasses.dataclass(frozen=True)
class Part:
  """One instrument of a piece.

  Attributes:
    role: "drums" | "bass" | "harmony" | "lead".
    program: GM program (0-based); for drums the GS kit number.
    is_drum: plays on the percussion channel (MIDI channel 10).
    name: GM instrument (or drum kit) name.
    volume: MIDI channel volume (CC7), the part's mix level.
    pan: MIDI pan (CC10), 64 is centre.
    notes: notes sorted by start time.
  """

  role: str
  program: int
  is_drum: bool
  name: str
  volume: int
  pan: int
  notes: tuple[Note, ...]


@dataclasses.dataclass(frozen=True)
class Piece:
  """A generated piece of music and its text description.

  Attributes:
    style: key of `STYLES`.
    seed: the seed it was generated from.
    seconds: duration; every note ends by then and audio is this long.
    tempo_bpm: tempo in beats (quarter notes) per minute.
    key: tonic and mode, e.g. "A minor", "D dorian".
    instruments: GM instrument name of each part, in `parts` order.
    parts: the parts (drums first when present, then bass, harmony, lead).
    descriptors: words from `DESCRIPTOR_VOCAB` (tempo, mood, style,
      instruments, mode), without repeats.
    text: a prompt, the descriptors joined by spaces (so `text.split()` is a
      subset of `DESCRIPTOR_VOCAB`).
  """

  style: str
  seed: int
  seconds: float
  tempo_bpm: float
  key: str
  instruments: tuple[str, ...]
  parts: tuple[Part, ...]
  descriptors: tuple[str, ...]
  text: str

  def to_pretty_midi(self) -> pretty_midi.PrettyMIDI:
    """A fresh `PrettyMIDI` with one instrument per part (same notes)."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=float(self.tempo_bpm))
    for part in self.parts:
      instrument = pretty_midi.Instrument(
          program=part.program, is_drum=part.is_drum, name=part.name)
      for cc, value in ((7, part.volume), (10, part.pan)):
        instrument.control_changes.append(
            pretty_midi.ControlChange(number=cc, value=value, time=0.0))
      instrument.notes.extend(
          pretty_midi.Note(
              velocity=n.velocity, pitch=n.pitch, start=n.start, end=n.end)
          for n in part.notes)
      midi.instruments.append(instrument)
    return midi
