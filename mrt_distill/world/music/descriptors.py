"""The descriptor words of pieces: tempo, mood, mode and instrument words.

`piece_descriptors` describes one generated piece; `build_vocab` lists every
word a set of styles can produce (`styles.DESCRIPTOR_VOCAB`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from mrt_distill.world.music.score import Part
from mrt_distill.world.music.style_spec import Style

TEMPO_WORDS = ("slow", "medium", "fast")
MOOD_WORDS = ("dark", "bright", "calm", "energetic")

# Modes with a minor third over the tonic sound "dark".
_DARK_MODES = frozenset({"minor", "dorian", "phrygian", "harmonic_minor"})
# Descriptor word for each mode (harmonic minor is just "minor" to a listener).
_MODE_WORDS = {
    "major": "major",
    "minor": "minor",
    "dorian": "dorian",
    "phrygian": "phrygian",
    "mixolydian": "mixolydian",
    "lydian": "lydian",
    "harmonic_minor": "minor",
}

# Descriptor words of drum kits beyond "drums" (GS kit numbers).
_KIT_WORDS = {24: ("electronic",), 25: ("808",), 40: ("brushes",)}

# Descriptor words of GM program ranges (0-based, inclusive).
_PROGRAM_WORDS = (
    ((0, 3), ("piano",)),
    ((4, 5), ("electric_piano",)),
    ((6, 7), ("keys",)),
    ((8, 15), ("mallets",)),
    ((16, 20), ("organ",)),
    ((21, 21), ("accordion",)),
    ((22, 22), ("harmonica",)),
    ((23, 23), ("accordion",)),
    ((24, 25), ("guitar", "acoustic")),
    ((26, 28), ("guitar",)),
    ((29, 30), ("guitar", "distorted")),
    ((31, 31), ("guitar",)),
    ((32, 37), ("bass",)),
    ((38, 39), ("bass", "synth")),
    ((40, 44), ("strings",)),
    ((45, 45), ("strings", "pizzicato")),
    ((46, 46), ("harp",)),
    ((47, 47), ("timpani",)),
    ((48, 49), ("strings",)),
    ((50, 51), ("strings", "synth")),
    ((52, 54), ("choir",)),
    ((55, 55), ("orchestra_hit",)),
    ((56, 61), ("brass",)),
    ((62, 63), ("brass", "synth")),
    ((64, 67), ("saxophone",)),
    ((68, 71), ("woodwinds",)),
    ((72, 79), ("flute",)),
    ((80, 87), ("synth", "lead")),
    ((88, 95), ("synth", "pad")),
    ((96, 103), ("synth", "atmospheric")),
    ((104, 127), ("world",)),
)


def program_words(program: int, is_drum: bool = False) -> tuple[str, ...]:
  """Descriptor words for a GM program (or a drum kit when `is_drum`)."""
  if is_drum:
    return ("drums",) + _KIT_WORDS.get(program, ())
  for (low, high), words in _PROGRAM_WORDS:
    if low <= program <= high:
      return words
  raise ValueError(f"GM program out of range 0..127: {program}")


def tempo_word(tempo_bpm: float) -> str:
  """Tempo word: slow below 90 BPM, medium below 125 BPM, else fast."""
  if tempo_bpm < 90:
    return "slow"
  if tempo_bpm < 125:
    return "medium"
  return "fast"


def _mood_words(style: Style, tempo_bpm: float, mode: str) -> tuple[str, ...]:
  """Brightness from the mode; calm/energetic from style energy and tempo."""
  words = ["dark" if mode in _DARK_MODES else "bright"]
  low, high = style.tempo_range
  # A faster draw within the style's range nudges the energy up.
  relative = (tempo_bpm - low) / (high - low) if high > low else 0.5
  energy = style.energy + 0.25 * (relative - 0.5)
  if energy >= 0.6:
    words.append("energetic")
  elif energy <= 0.4:
    words.append("calm")
  return tuple(words)


def _style_vocab(style: Style) -> set[str]:
  """Every word a piece of `style` can have, except tempo and mood words."""
  words = set(style.words)
  words.update(_MODE_WORDS[m] for m in style.modes)
  if style.swing >= 0.58:
    words.add("swing")
  if style.drums is not None:
    for kit in style.drums.kits:
      words.update(program_words(kit, is_drum=True))
  for spec in (style.bass, style.harmony, style.lead):
    if spec is not None:
      for program in spec.programs:
        words.update(program_words(program))
  return words


def build_vocab(styles: Iterable[Style]) -> list[str]:
  """Every word the pieces of `styles` can be described with, sorted."""
  words = set(TEMPO_WORDS) | set(MOOD_WORDS)
  for style in styles:
    words |= _style_vocab(style)
  return sorted(words)


def piece_descriptors(style: Style, tempo: float, mode: str,
                      parts: Sequence[Part]) -> tuple[str, ...]:
  """A piece's words: tempo, mood, style, swing, instruments, mode."""
  words = [tempo_word(tempo), *_mood_words(style, tempo, mode), *style.words]
  if style.swing >= 0.58:
    words.append("swing")
  for part in parts:
    words.extend(program_words(part.program, part.is_drum))
  words.append(_MODE_WORDS[mode])
  return tuple(dict.fromkeys(words))  # De-duplicate, keep order.
