"""Pattern-driven parts: drums, bass, harmony and arpeggiated leads.

Times are on a 16th-note grid ("steps", `STEPS_PER_BAR` per bar). A part
generator returns raw notes, (start_step, length_steps, pitch, velocity),
that `music` converts to seconds after swing and humanisation. Pattern
strings loop over whole bars; their characters are documented on
`style_spec.DrumSpec` and `style_spec.PartSpec`.
"""

from __future__ import annotations

import numpy as np

from mrt_distill.world.music.gm import (CRASH, HIGH_TOM, KICK, LOW_TOM,
                                        MID_TOM, OPEN_HAT, RIDE, SNARE)
from mrt_distill.world.music.style_spec import DrumSpec, PartSpec
from mrt_distill.world.music.theory import (Chord, Context, nearest_pitch,
                                            power_voicing, voice_lead)

STEPS_PER_BEAT = 4
STEPS_PER_BAR = 16

# Velocity offsets of the pattern characters: accent, normal, ghost.
_HIT_VELOCITY = {"X": 22, "x": 0, "o": -38}

# A note in step time: (start_step, length_steps, pitch, velocity).
RawNote = tuple[float, float, int, int]


def pattern_events(pattern: str, bar: int) -> list[tuple[int, str, int]]:
  """Onsets of one bar of a looping pattern: (step in bar, char, length).

  Length counts the onset step plus following `-` holds.
  """
  period = len(pattern)
  offset = (bar * STEPS_PER_BAR) % period
  text = pattern[offset:offset + STEPS_PER_BAR]
  events = []
  for step, char in enumerate(text):
    if char in ".-":
      continue
    length = 1
    while step + length < len(text) and text[step + length] == "-":
      length += 1
    events.append((step, char, length))
  return events


def jitter_velocity(rng: np.random.Generator, velocity: int,
                    spread: int = 6) -> int:
  """`velocity` plus a uniform integer in [-spread, spread], kept in 1..127."""
  return int(np.clip(velocity + rng.integers(-spread, spread + 1), 1, 127))


# --------------------------------------------------------------------------
# Part generators.
# --------------------------------------------------------------------------


def drum_notes(spec: DrumSpec, pattern: tuple[tuple[int, str], ...],
               n_bars: int, rng: np.random.Generator) -> list[RawNote]:
  """Drum hits: the pattern, ghost notes, phrase-end fills and crashes."""
  notes: list[RawNote] = []
  for bar in range(n_bars):
    fill = (spec.fill != "none" and bar % 4 == 3 and
            rng.random() < spec.fill_prob)
    # A fill replaces the last beat (steps 12-15) except the kick.
    for key, steps in pattern:
      for step, char, _ in pattern_events(steps, bar):
        if fill and step >= 12 and key != KICK:
          continue
        velocity = spec.velocity + _HIT_VELOCITY[char]
        length = 8 if key in (CRASH, RIDE, OPEN_HAT) else 2
        notes.append((bar * STEPS_PER_BAR + step, length, key,
                      jitter_velocity(rng, velocity)))
    if spec.ghost_prob > 0:
      for step in range(0, STEPS_PER_BAR, 2):
        if rng.random() < spec.ghost_prob:
          notes.append((bar * STEPS_PER_BAR + step, 1, SNARE,
                        jitter_velocity(rng, spec.velocity - 45)))
    if fill:
      keys = ((SNARE,) * 4 if spec.fill == "snare" else
              (HIGH_TOM, HIGH_TOM, MID_TOM, LOW_TOM))
      for i, key in enumerate(keys):
        notes.append((bar * STEPS_PER_BAR + 12 + i, 1, key,
                      jitter_velocity(rng, spec.velocity - 10 + 6 * i)))
    if spec.crash and bar % 4 == 0:
      notes.append((bar * STEPS_PER_BAR, 16, CRASH,
                    jitter_velocity(rng, spec.velocity)))
  return notes


def _bass_pitch(token: str, chord: Chord, next_chord: Chord,
                low: int) -> int:
  """Pitch of one bass-pattern token, the root in [low, low + 12)."""
  root = nearest_pitch(chord.tones[0], low + 5.5, low, low + 11)
  if token == "O":
    return root + 12
  if token == "A":  # Chromatic approach to the next root from below.
    return nearest_pitch(next_chord.tones[0], root) - 1
  tone = chord.tones[{"R": 0, "3": 1, "5": 2, "7": 3}[token]]
  return root + (tone - chord.tones[0]) % 12


def pattern_bass(spec: PartSpec, pattern: str, ctx: Context, n_bars: int,
                 rng: np.random.Generator) -> list[RawNote]:
  """A bass line playing `pattern`'s tokens over the chords, beats accented."""
  notes: list[RawNote] = []
  for bar in range(n_bars):
    for step, char, length in pattern_events(pattern, bar):
      at = bar * STEPS_PER_BAR + step
      chord = ctx.chord_at(at)
      pitch = _bass_pitch(char, chord, ctx.chord_at(at + ctx.chord_steps),
                          spec.center)
      accent = 10 if step % 4 == 0 else 0
      notes.append((at, length * spec.gate, pitch,
                    jitter_velocity(rng, spec.velocity + accent)))
  return notes


def walking_bass(spec: PartSpec, ctx: Context, n_bars: int,
                 rng: np.random.Generator) -> list[RawNote]:
  """Quarter-note walking line: root on chord changes, chromatic approach
  into the next chord, chord tones in between."""
  low, high = spec.center, spec.center + 19
  notes: list[RawNote] = []
  previous = nearest_pitch(ctx.chords[0].tones[0], low + 6, low, high)
  for beat in range(n_bars * 4):
    at = beat * STEPS_PER_BEAT
    chord = ctx.chord_at(at)
    next_at = at + STEPS_PER_BEAT
    changes = next_at % ctx.chord_steps == 0
    if at % ctx.chord_steps == 0:
      pitch = nearest_pitch(chord.tones[0], previous, low, high)
    elif changes:
      target = nearest_pitch(ctx.chord_at(next_at).tones[0], previous, low,
                             high)
      pitch = target + (1 if rng.random() < 0.5 else -1)
    else:
      options = [nearest_pitch(pc, previous + rng.integers(-5, 6), low, high)
                 for pc in chord.tones]
      options = [p for p in options if p != previous] or options
      pitch = int(options[rng.integers(len(options))])
    accent = 10 if beat % 4 == 0 else 0
    notes.append((at, STEPS_PER_BEAT * spec.gate, pitch,
                  jitter_velocity(rng, spec.velocity + accent)))
    previous = pitch
  return notes


def _harmony_voicing(spec: PartSpec, mode: str, chord: Chord,
                     previous: tuple[int, ...] | None) -> tuple[int, ...]:
  if mode == "power":
    return power_voicing(chord, spec.center)
  pcs = chord.pcs[1:] if spec.drop_root and len(chord.pcs) >= 4 else chord.pcs
  return voice_lead(pcs, spec.center, previous)


def _harmony_onsets(mode: str, pattern: str, ctx: Context, bar: int,
                    rng: np.random.Generator) -> list[tuple[int, int]]:
  """(step in bar, length) of each chord attack in one bar."""
  if mode == "sustain":
    # One attack per chord slot (or per bar when slots are longer).
    span = min(ctx.chord_steps, STEPS_PER_BAR)
    return [(s, span) for s in range(0, STEPS_PER_BAR, span)]
  if mode == "comp":
    # Jazz comping: two or three attacks, mostly on off-beat 8ths.
    slots = np.array([0, 2, 4, 6, 8, 10, 12, 14])
    weights = np.array([2, 3, 1, 3, 1, 3, 1, 2], dtype=float)
    count = int(rng.integers(2, 4))
    picks = np.sort(
        rng.choice(slots, size=count, replace=False, p=weights / weights.sum()))
    ends = list(picks[1:]) + [STEPS_PER_BAR]
    return [(int(s), int(min(e - s, rng.integers(2, 7))))
            for s, e in zip(picks, ends)]
  return [(step, length) for step, _, length in pattern_events(pattern, bar)]


def harmony(spec: PartSpec, mode: str, pattern: str, ctx: Context,
            n_bars: int, rng: np.random.Generator) -> list[RawNote]:
  """Harmony in `mode`: voice-led chord attacks (one note each in "arp")."""
  notes: list[RawNote] = []
  voicing: tuple[int, ...] | None = None
  arp_index = 0
  for bar in range(n_bars):
    for step, length in _harmony_onsets(mode, pattern, ctx, bar, rng):
      at = bar * STEPS_PER_BAR + step
      voicing = _harmony_voicing(spec, mode, ctx.chord_at(at), voicing)
      if mode == "arp":
        # Up-and-down through the voicing, one note per attack.
        cycle = list(voicing) + list(voicing[-2:0:-1])
        pitches = (cycle[arp_index % len(cycle)],)
        arp_index += 1
      else:
        pitches = voicing
      accent = 8 if step % 4 == 0 else 0
      for pitch in pitches:
        notes.append((at, length * spec.gate, pitch,
                      jitter_velocity(rng, spec.velocity + accent, 4)))
  return notes


def arp_lead(spec: PartSpec, pattern: str, ctx: Context, n_bars: int,
             rng: np.random.Generator) -> list[RawNote]:
  """A sequencer-style line cycling chord tones over two octaves."""
  order = rng.permutation(4).tolist()  # A fixed per-piece note order.
  notes: list[RawNote] = []
  index = 0
  for bar in range(n_bars):
    for step, _, length in pattern_events(pattern, bar):
      at = bar * STEPS_PER_BAR + step
      chord = ctx.chord_at(at)
      tones = [nearest_pitch(pc, spec.center) for pc in chord.tones[:3]]
      tones = sorted(tones) + [min(tones) + 12]
      pitch = tones[order[index % 4]]
      index += 1
      accent = 12 if step % 4 == 0 else 0
      notes.append((at, length * spec.gate, pitch,
                    jitter_velocity(rng, spec.velocity + accent, 4)))
  return notes
