"""Motif-based melodies for the lead part.

A melody restates two 2-bar motifs in a form such as AABA, transposed
diatonically onto each phrase's chord, with strong beats pulled onto chord
tones.
"""

from __future__ import annotations

import math

import numpy as np

from mrt_distill.world.music.patterns import (STEPS_PER_BAR, RawNote,
                                              jitter_velocity)
from mrt_distill.world.music.style_spec import PartSpec
from mrt_distill.world.music.theory import Context

_MOTIF_STEPS = 2 * STEPS_PER_BAR
# Degree shift from each degree above a chord root to the nearest chord tone
# (root, third or fifth): 6 goes up to the octave, the others step down.
_CHORD_TONE_SHIFT = (0, -1, 0, -1, 0, -1, 1)


def _motif(spec: PartSpec,
           rng: np.random.Generator) -> list[tuple[int, int, int]]:
  """A 2-bar melodic idea: (step, length, scale-degree offset) per note.

  Degree offsets are relative to the root of the phrase's first chord, so a
  motif can be restated over another chord (diatonic transposition).
  """
  onsets = []
  for step in range(0, _MOTIF_STEPS, spec.grid):
    strong = step % 8 == 0
    if rng.random() < min(1.0, spec.density * (1.4 if strong else 1.0)):
      onsets.append(step)
  if not onsets:
    onsets = [0]
  motif = []
  degree = int(rng.choice([0, 2, 4]))
  for i, step in enumerate(onsets):
    gap = (onsets[i + 1] if i + 1 < len(onsets) else _MOTIF_STEPS) - step
    length = max(1, min(gap, spec.max_len))
    if i > 0:
      degree += int(rng.choice([-2, -1, -1, 1, 1, 2, 0, -3, 3]))
      degree = int(np.clip(degree, -3, 9))
    motif.append((step, length, degree))
  return motif


def melody_lead(spec: PartSpec, ctx: Context, n_bars: int,
                rng: np.random.Generator) -> list[RawNote]:
  """Motif-based melody in 2-bar phrases following a form like AABA."""
  form = ("AABA", "ABAB", "AAB-", "ABA-")[int(rng.integers(4))]
  motifs = {letter: _motif(spec, rng) for letter in "AB"}
  notes: list[RawNote] = []
  n_phrases = math.ceil(n_bars / 2)
  for phrase in range(n_phrases):
    letter = form[phrase % len(form)]
    if letter == "-":  # Let the phrase breathe.
      continue
    start = phrase * _MOTIF_STEPS
    root_degree = ctx.chord_at(start).degree
    # One octave shift per phrase (not per note) keeps the motif's contour;
    # it puts the phrase root just below the register centre.
    anchor = ctx.degree_pitch(root_degree, 0)
    octave_base = 12 * math.floor((spec.center - 8 - anchor) / 12 + 1)
    for step, length, offset in motifs[letter]:
      degree = root_degree + offset
      if step % 8 == 0:  # Strong beats land on a tone of the sounding chord.
        above_root = (degree - ctx.chord_at(start + step).degree) % 7
        degree += _CHORD_TONE_SHIFT[above_root]
      pitch = ctx.degree_pitch(degree, octave_base)
      accent = 10 if step % 8 == 0 else 0
      notes.append((start + step, length * spec.gate, int(pitch),
                    jitter_velocity(rng, spec.velocity + accent)))
  return notes
