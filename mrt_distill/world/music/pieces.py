"""Procedural multi-instrument music in named styles.

The reference world cannot download real music, so it writes its own: every
(style, seed) pair deterministically yields a short 4/4 piece of up to four
General MIDI parts (drums, bass, harmony, lead), a key, a tempo and a bag of
text descriptors that a text encoder can learn against.

Each style fixes what makes it recognisable (tempo range, modes, chord
progressions, drum and bass rhythms, swing, instrument choices); the seed
draws one concrete combination and the random details (melody, fills,
humanisation).

Times are built on a 16th-note grid ("steps", 16 per bar) and converted to
seconds at the end, after swing and humanisation. `render.render` turns a
`Piece` into audio with a General MIDI soundfont.

This module is the generator (`generate_piece`, `Piece`). Its parts live in
sibling modules, and the names other code uses are re-exported from here:

  styles: `STYLES` and `DESCRIPTOR_VOCAB`; the style tables are in
    `styles_electronic` and `styles_live`, their fields in `style_spec`.
  theory: pitch names, modes, chords and voice leading.
  patterns: the step grid and the drum, bass, harmony and arp parts.
  melody: motif-based lead melodies.
  descriptors: the words that describe a piece.
  gm: General MIDI drum keys and kits, and the percussion channel.
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

import numpy as np
import pretty_midi

from mrt_distill.world.music import descriptors
from mrt_distill.world.music import melody
from mrt_distill.world.music import patterns
from mrt_distill.world.music import theory
from mrt_distill.world.music.descriptors import (MOOD_WORDS, TEMPO_WORDS,
                                                 program_words, tempo_word)
from mrt_distill.world.music.gm import (CLAP, CLOSED_HAT, CRASH, DRUM_CHANNEL,
                                        DRUM_KITS, HIGH_TOM, KICK, LOW_TOM,
                                        MID_TOM, OPEN_HAT, PEDAL_HAT, RIDE,
                                        SHAKER, SIDE_STICK, SNARE)
from mrt_distill.world.music.patterns import STEPS_PER_BAR, STEPS_PER_BEAT
from mrt_distill.world.music.score import Note, Part, Piece
from mrt_distill.world.music.style_spec import DrumSpec, PartSpec, Style
from mrt_distill.world.music.styles import DESCRIPTOR_VOCAB, STYLES
from mrt_distill.world.music.theory import MODES, PITCH_NAMES

# The public names, including those re-exported from the sibling modules.
__all__ = [
    "CLAP", "CLOSED_HAT", "CRASH", "DESCRIPTOR_VOCAB", "DRUM_CHANNEL",
    "DRUM_KITS", "DrumSpec", "HIGH_TOM", "KICK", "LOW_TOM", "MID_TOM",
    "MODES", "MOOD_WORDS", "Note", "OPEN_HAT", "PEDAL_HAT", "PITCH_NAMES",
    "Part", "PartSpec", "Piece", "RIDE", "SHAKER", "SIDE_STICK", "SNARE",
    "STEPS_PER_BAR", "STEPS_PER_BEAT", "STYLES", "Style", "TEMPO_WORDS",
    "generate_piece", "program_words", "tempo_word",
]


# --------------------------------------------------------------------------
# Timing: steps -> seconds with swing and humanisation.
# --------------------------------------------------------------------------


def _swing(step: np.ndarray, swing: float, unit: int) -> np.ndarray:
  """Map straight step positions to swung ones (piecewise linear, monotone).

  Within each pair of `unit`-step halves, the off-beat moves from the middle
  to `swing` of the pair, e.g. 0.67 for a triplet feel.
  """
  pair = 2.0 * unit
  base = np.floor(step / pair) * pair
  frac = step - base
  first = frac * (2 * swing)
  second = pair * swing + (frac - unit) * (2 * (1 - swing))
  return base + np.where(frac < unit, first, second)


def _to_notes(raw: Sequence[patterns.RawNote], style: Style,
              step_seconds: float, seconds: float,
              rng: np.random.Generator) -> tuple[Note, ...]:
  """Convert raw step-time notes to sorted, clipped `Note`s in seconds."""
  if not raw:
    return ()
  starts = np.array([r[0] for r in raw], dtype=np.float64)
  ends = starts + np.array([r[1] for r in raw], dtype=np.float64)
  starts_s = _swing(starts, style.swing, style.swing_steps) * step_seconds
  ends_s = _swing(ends, style.swing, style.swing_steps) * step_seconds
  if style.humanize_ms > 0:
    sigma = style.humanize_ms / 1000.0
    jitter = np.clip(rng.normal(0.0, sigma, len(raw)), -2 * sigma, 2 * sigma)
    starts_s = np.maximum(starts_s + jitter, 0.0)
  # Very short notes are inaudible or clicky in a soundfont synth.
  ends_s = np.maximum(ends_s, starts_s + 0.03)
  notes = []
  for (_, _, pitch, velocity), start, end in zip(raw, starts_s, ends_s):
    # Microsecond times keep the notes exactly reproducible in text form.
    start, end = round(float(start), 6), min(round(float(end), 6), seconds)
    if end <= start or not 0 <= pitch <= 127:
      continue  # Starts at or after the end of the piece.
    notes.append(
        Note(pitch=int(pitch), start=start, end=end, velocity=int(velocity)))
  notes.sort(key=lambda n: (n.start, n.pitch))
  return tuple(notes)


# --------------------------------------------------------------------------
# Assembly.
# --------------------------------------------------------------------------


def _rng_for(style: str, seed: int) -> np.random.Generator:
  """A generator keyed on (style, seed); crc32 is stable across processes
  (unlike `hash` of a str)."""
  entropy = [zlib.crc32(style.encode("utf-8")), int(seed) % (1 << 63)]
  return np.random.default_rng(np.random.SeedSequence(entropy))


def _draw_tempo(rng: np.random.Generator, tempo_range: tuple[int, int],
                bar_grid_hz: float | None) -> float:
  """The piece's tempo in BPM (see `generate_piece`'s bar_grid_hz)."""
  low, high = tempo_range
  if bar_grid_hz is None:
    return float(rng.integers(low, high + 1))
  # A 4/4 bar is 240 / tempo seconds = 240 f / tempo frames.
  n_lo = math.ceil(240.0 * bar_grid_hz / high)
  n_hi = max(n_lo, math.floor(240.0 * bar_grid_hz / low))
  return 240.0 * bar_grid_hz / int(rng.integers(n_lo, n_hi + 1))


def _choice(rng: np.random.Generator, options: Sequence):
  return options[int(rng.integers(len(options)))]


def _instrument_name(program: int, is_drum: bool) -> str:
  if is_drum:
    return DRUM_KITS[program]
  return pretty_midi.program_to_instrument_name(program)


def _validate(style: str, seconds: float) -> Style:
  if style not in STYLES:
    raise ValueError(
        f"Unknown style {style!r}; known styles: {', '.join(sorted(STYLES))}")
  if not isinstance(seconds, (int, float, np.integer, np.floating)) or not (
      math.isfinite(seconds) and seconds > 0):
    raise ValueError(f"seconds must be a positive finite number, got {seconds}")
  return STYLES[style]


def _pans(rng: np.random.Generator) -> dict[str, int]:
  """Bass and drums centred; harmony and lead on opposite sides."""
  side = 1 if rng.random() < 0.5 else -1
  spread = int(rng.integers(12, 28))
  return {"drums": 64, "bass": 64, "harmony": 64 + side * spread,
          "lead": 64 - side * spread}


def generate_piece(style: str, seed: int, seconds: float, *,
                   bar_grid_hz: float | None = None) -> Piece:
  """Generate one piece of `style`, deterministic in (style, seed, seconds).

  Args:
    style: a key of `STYLES`.
    seed: any integer; draws tempo, key, instruments, patterns and melody.
    seconds: duration of the piece (> 0). Notes are cut at this time.
    bar_grid_hz: None (default): the tempo is a whole BPM in the style's
      range. A frame rate (e.g. the codec's 25 Hz): the tempo is drawn so
      that a bar lasts a whole number n of frames, tempo = 240 f / n, so
      that a repeated bar starts at the same phase of the frame grid and a
      codec can give it the same tokens (`tools/probe_codec_tokens.py`).

  Returns:
    The `Piece`.

  Raises:
    ValueError: unknown style (the message lists the known ones) or
      non-positive `seconds`.
  """
  spec = _validate(style, seconds)
  seconds = float(seconds)
  rng = _rng_for(style, seed)

  # Global draws come first so that they do not depend on the duration.
  tempo = _draw_tempo(rng, spec.tempo_range, bar_grid_hz)
  tonic = int(rng.integers(12))
  mode = _choice(rng, spec.modes)
  progression = _choice(rng, spec.progressions)
  scale = MODES[mode]

  step_seconds = 60.0 / tempo / STEPS_PER_BEAT
  n_bars = math.ceil(seconds / (STEPS_PER_BAR * step_seconds))
  chord_steps = spec.chord_beats * STEPS_PER_BEAT
  n_chords = math.ceil(n_bars * STEPS_PER_BAR / chord_steps) + 1
  chords = tuple(
      theory.build_chord(tonic, scale, progression[i % len(progression)],
                         spec.chord_size) for i in range(n_chords))
  ctx = theory.Context(tonic=tonic, scale=scale, chords=chords,
                       chord_steps=chord_steps)

  pans = _pans(rng)
  # Each part gets its own child generator so that its randomness does not
  # shift when another part changes.
  part_rngs = {role: np.random.default_rng(rng.integers(1 << 63))
               for role in ("drums", "bass", "harmony", "lead", "timing")}

  raw_parts: list[tuple[str, int, bool, int, list[patterns.RawNote]]] = []
  if spec.drums is not None:
    drng = part_rngs["drums"]
    kit = _choice(drng, spec.drums.kits)
    pattern = _choice(drng, spec.drums.patterns)
    raw_parts.append(("drums", kit, True, spec.drums.volume,
                      patterns.drum_notes(spec.drums, pattern, n_bars, drng)))

  brng = part_rngs["bass"]
  bass_program = _choice(brng, spec.bass.programs)
  bass_mode = _choice(brng, spec.bass.modes)
  if bass_mode == "walk":
    bass_raw = patterns.walking_bass(spec.bass, ctx, n_bars, brng)
  else:
    bass_raw = patterns.pattern_bass(spec.bass,
                                     _choice(brng, spec.bass.patterns), ctx,
                                     n_bars, brng)
  raw_parts.append(("bass", bass_program, False, spec.bass.volume, bass_raw))

  hrng = part_rngs["harmony"]
  harmony_program = _choice(hrng, spec.harmony.programs)
  harmony_mode = _choice(hrng, spec.harmony.modes)
  harmony_pattern = (_choice(hrng, spec.harmony.patterns)
                     if spec.harmony.patterns else "")
  raw_parts.append(("harmony", harmony_program, False, spec.harmony.volume,
                    patterns.harmony(spec.harmony, harmony_mode,
                                     harmony_pattern, ctx, n_bars, hrng)))

  if spec.lead is not None:
    lrng = part_rngs["lead"]
    lead_program = _choice(lrng, spec.lead.programs)
    if spec.lead.same_program_as_harmony:
      lead_program = harmony_program
    lead_mode = _choice(lrng, spec.lead.modes)
    if lead_mode == "arp":
      lead_raw = patterns.arp_lead(spec.lead,
                                   _choice(lrng, spec.lead.patterns), ctx,
                                   n_bars, lrng)
    else:
      lead_raw = melody.melody_lead(spec.lead, ctx, n_bars, lrng)
    raw_parts.append(("lead", lead_program, False, spec.lead.volume, lead_raw))

  trng = part_rngs["timing"]
  parts = tuple(
      Part(role=role, program=program, is_drum=is_drum,
           name=_instrument_name(program, is_drum), volume=volume,
           pan=pans[role],
           notes=_to_notes(raw, spec, step_seconds, seconds, trng))
      for role, program, is_drum, volume, raw in raw_parts)

  words = descriptors.piece_descriptors(spec, tempo, mode, parts)
  key = f"{PITCH_NAMES[tonic]} {mode.replace('_', ' ')}"
  return Piece(style=style, seed=int(seed), seconds=seconds, tempo_bpm=tempo,
               key=key, instruments=tuple(p.name for p in parts), parts=parts,
               descriptors=words, text=" ".join(words))
