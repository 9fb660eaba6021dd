"""Pitch material of the music generator: pitch names, modes and chords.

Chords are stacked in thirds (or root and fifth) on the degrees of a mode;
`voice_lead` picks the inversion of each chord that moves least from the
previous one, which is what makes synthetic changes sound played.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb",
               "B")

# Semitone offsets of each mode's seven degrees.
MODES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
}


@dataclasses.dataclass(frozen=True)
class Chord:
  """A chord of the piece's progression."""

  degree: int  # 0-based scale degree of the root.
  pcs: tuple[int, ...]  # Pitch classes the harmony part voices.
  tones: tuple[int, ...]  # Root, third, fifth, seventh (for bass and arps).


@dataclasses.dataclass(frozen=True)
class Context:
  """What every part generator needs to know about the piece."""

  tonic: int  # Pitch class 0..11.
  scale: tuple[int, ...]  # Semitone offsets of the 7 degrees.
  chords: tuple[Chord, ...]  # One per chord slot.
  chord_steps: int  # Steps per chord slot.

  def chord_at(self, step: float) -> Chord:
    index = int(step // self.chord_steps)
    return self.chords[min(max(index, 0), len(self.chords) - 1)]

  def degree_pitch(self, degree: int, octave_base: int) -> int:
    """MIDI pitch of a (possibly negative or >6) scale degree."""
    octave, index = divmod(degree, 7)
    return octave_base + self.tonic + self.scale[index] + 12 * octave


def build_chord(tonic: int, scale: Sequence[int], degree: int,
                size: int) -> Chord:
  """The chord on scale `degree`: `size` stacked thirds (2: a power chord)."""

  def stack(steps: Sequence[int]) -> tuple[int, ...]:
    return tuple((tonic + scale[(degree + s) % 7]) % 12 for s in steps)

  # Power chords (size 2) are root and fifth; otherwise stacked thirds.
  steps = (0, 4) if size == 2 else tuple(2 * k for k in range(size))
  return Chord(degree=degree, pcs=stack(steps), tones=stack((0, 2, 4, 6)))


def nearest_pitch(pc: int, target: float, low: int = 0,
                  high: int = 127) -> int:
  """The pitch of class `pc` nearest `target`, within [low, high]."""
  base = int(round(target)) - 6
  pitch = base + (pc - base) % 12
  while pitch < low:
    pitch += 12
  while pitch > high:
    pitch -= 12
  return pitch


def _voicings(pcs: Sequence[int], center: int) -> list[tuple[int, ...]]:
  """Close voicings (every inversion) of `pcs` around `center`."""
  result = []
  for r in range(len(pcs)):
    rotated = list(pcs[r:]) + list(pcs[:r])
    pitches = [nearest_pitch(rotated[0], center - 5)]
    for pc in rotated[1:]:
      pitches.append(pitches[-1] + ((pc - pitches[-1]) % 12 or 12))
    result.append(tuple(pitches))
  return result


def voice_lead(pcs: Sequence[int], center: int,
               previous: tuple[int, ...] | None) -> tuple[int, ...]:
  """The inversion that moves least from `previous` and stays near center.

  Smooth voice leading is what makes synthetic chord changes sound like
  playing rather than block transposition.
  """

  def cost(voicing: tuple[int, ...]) -> float:
    drift = abs(float(np.mean(voicing)) - center)
    if previous is None or len(previous) != len(voicing):
      return drift
    return sum(abs(a - b) for a, b in zip(voicing, previous)) + 0.5 * drift

  return min(_voicings(pcs, center), key=cost)


def power_voicing(chord: Chord, center: int) -> tuple[int, ...]:
  """Root, fifth and octave, the root nearest `center`."""
  root = nearest_pitch(chord.pcs[0], center)
  return (root, root + 7, root + 12)
