"""The shape of a style specification: `Style`, `DrumSpec` and `PartSpec`.

The concrete styles are in `styles_electronic` and `styles_live`, collected
into `styles.STYLES`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DrumSpec:
  """How a style plays drums.

  Patterns are tuples of (GM drum key, step string); a step string has one
  character per 16th (`X` accent, `x` hit, `o` ghost, `.` rest) and a length
  that is a multiple of 16 (it loops).
  """

  kits: tuple[int, ...]
  patterns: tuple[tuple[tuple[int, str], ...], ...]
  volume: int = 100
  velocity: int = 92
  fill: str = "none"  # "none" | "snare" | "toms": last beat of 4-bar phrases.
  fill_prob: float = 0.0
  crash: bool = False  # Crash cymbal on the first beat of each 4-bar phrase.
  ghost_prob: float = 0.0  # Random ghost snare per free 8th (jazz, funk).


@dataclasses.dataclass(frozen=True)
class PartSpec:
  """How a style plays one pitched part (bass, harmony or lead).

  Attributes:
    programs: GM programs (0-based) the seed draws from.
    modes: playing modes the seed draws from. Bass: "pattern" | "walk".
      Harmony: "stabs" | "sustain" | "arp" | "comp" | "power".
      Lead: "melody" | "arp".
    patterns: 16*k-step rhythm strings. Bass: `R` root, `5` fifth, `3` third,
      `7` seventh, `O` octave, `A` chromatic approach to the next chord's
      root, `-` hold, `.` rest. Harmony/lead: `x` onset,
      `-` hold, `.` rest.
    center: MIDI pitch the register is centred on (bass: lowest root pitch).
    gate: fraction of the written length a note sounds (staccato < 1).
    volume: MIDI channel volume (CC7), i.e. the mix level.
    velocity: base MIDI velocity.
    drop_root: harmony voicings leave the root to the bass (jazz voicings).
    grid: lead melody grid in steps (1 = 16ths, 2 = 8ths, 4 = quarters).
    density: probability that a lead melody grid slot starts a note.
    max_len: longest lead melody note, in steps.
    same_program_as_harmony: the lead reuses the harmony instrument (the
      piano trio's right hand).
  """

  programs: tuple[int, ...]
  modes: tuple[str, ...] = ("pattern",)
  patterns: tuple[str, ...] = ()
  center: int = 60
  gate: float = 0.9
  volume: int = 100
  velocity: int = 88
  drop_root: bool = False
  grid: int = 2
  density: float = 0.5
  max_len: int = 8
  same_program_as_harmony: bool = False


@dataclasses.dataclass(frozen=True)
class Style:
  """Everything that makes a style recognisable.

  Attributes:
    name: the style's key in `styles.STYLES`, also its first descriptor
      word.
    words: genre descriptor words (the first is `name`).
    tempo_range: inclusive (low, high) tempo in BPM.
    modes: modes the key is drawn from (keys of `theory.MODES`).
    progressions: chord progressions as 0-based scale degrees.
    chord_beats: beats each chord of a progression lasts.
    chord_size: notes stacked in thirds per chord (3 triad, 4 seventh,
      5 ninth); 2 means power chords (root and fifth).
    energy: 0 (calm) .. 1 (energetic), before the tempo adjustment.
    swing: position of the off-beat within a swing pair (0.5 is straight,
      0.67 is triplet swing).
    swing_steps: the swung unit in steps (1 = 16ths, 2 = 8ths).
    humanize_ms: standard deviation of the onset jitter.
  """

  name: str
  words: tuple[str, ...]
  tempo_range: tuple[int, int]
  modes: tuple[str, ...]
  progressions: tuple[tuple[int, ...], ...]
  chord_beats: int
  chord_size: int
  energy: float
  drums: DrumSpec | None
  bass: PartSpec
  harmony: PartSpec
  lead: PartSpec | None
  swing: float = 0.5
  swing_steps: int = 2
  humanize_ms: float = 0.0


def kit(*pairs: tuple[int, str]) -> tuple[tuple[int, str], ...]:
  """One drum pattern of a `DrumSpec`: its (GM drum key, step string) pairs."""
  return tuple(pairs)
