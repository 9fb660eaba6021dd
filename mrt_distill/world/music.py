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
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Sequence

import numpy as np
import pretty_midi

STEPS_PER_BEAT = 4
STEPS_PER_BAR = 16
DRUM_CHANNEL = 9  # MIDI channel 10, zero-based.

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

TEMPO_WORDS = ("slow", "medium", "fast")
MOOD_WORDS = ("dark", "bright", "calm", "energetic")

# General MIDI percussion keys (channel 10).
KICK = 36
SIDE_STICK = 37
SNARE = 38
CLAP = 39
CLOSED_HAT = 42
LOW_TOM = 45
PEDAL_HAT = 44
OPEN_HAT = 46
MID_TOM = 47
CRASH = 49
HIGH_TOM = 50
RIDE = 51
SHAKER = 70

# GS drum kits (program numbers in the percussion bank) the soundfont has.
DRUM_KITS = {
    0: "Standard Drum Kit",
    8: "Room Drum Kit",
    16: "Power Drum Kit",
    24: "Electronic Drum Kit",
    25: "TR-808 Drum Kit",
    32: "Jazz Drum Kit",
    40: "Brush Drum Kit",
}
_KIT_WORDS = {24: ("electronic",), 25: ("808",), 40: ("brushes",)}

# Velocity offsets of the pattern characters: accent, normal, ghost.
_HIT_VELOCITY = {"X": 22, "x": 0, "o": -38}


# --------------------------------------------------------------------------
# Style specification.
# --------------------------------------------------------------------------


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
    name: the style's key in `STYLES`, also its first descriptor word.
    words: genre descriptor words (the first is `name`).
    tempo_range: inclusive (low, high) tempo in BPM.
    modes: modes the key is drawn from (keys of `MODES`).
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


def _kit(*pairs: tuple[int, str]) -> tuple[tuple[int, str], ...]:
  return tuple(pairs)


STYLES: dict[str, Style] = {
    "techno": Style(
        name="techno",
        words=("techno", "electronic", "dance"),
        tempo_range=(122, 134),
        modes=("minor", "dorian", "phrygian"),
        progressions=((0,), (0, 5), (0, 6), (0, 3), (0, 0, 5, 6)),
        chord_beats=8,
        chord_size=4,
        energy=0.8,
        drums=DrumSpec(
            kits=(25, 24),
            patterns=(
                _kit((KICK, "X...X...X...X..."), (CLAP, "....x.......x..."),
                     (CLOSED_HAT, "..x...x...x...x.")),
                _kit((KICK, "X...X...X...X..."), (CLAP, "....x.......x..."),
                     (CLOSED_HAT, "xoxoxoxoxoxoxoxo"),
                     (OPEN_HAT, "..x...x...x...x.")),
                _kit((KICK, "X...X...X...X..o"), (CLAP, "....x.......x..."),
                     (RIDE, "x.x.x.x.x.x.x.x."),
                     (OPEN_HAT, "..x...x...x...x.")),
            ),
            fill="snare",
            fill_prob=0.3),
        bass=PartSpec(
            programs=(38, 39),
            patterns=("..R-..R-..R-..R-", ".RRR.RRR.RRR.RRR",
                      "..R...R...R...RO"),
            center=33,
            gate=0.6,
            velocity=100),
        harmony=PartSpec(
            programs=(81, 90, 62, 50),
            modes=("stabs",),
            patterns=("..x...x...x...x.", "...x..x....x..x.",
                      "x..x..x...x..x.."),
            center=62,
            gate=0.35,
            volume=80),
        lead=PartSpec(
            programs=(80, 81, 98),
            modes=("arp",),
            patterns=("xxxxxxxxxxxxxxxx", "x.xxx.xxx.xxx.xx",
                      "x.x.x.x.x.x.x.x."),
            center=72,
            gate=0.4,
            volume=70),
    ),
    "bossa_nova": Style(
        name="bossa_nova",
        words=("bossa_nova", "latin", "brazilian"),
        tempo_range=(115, 135),
        modes=("major", "dorian"),
        progressions=((1, 4, 0, 0), (0, 5, 1, 4), (0, 3, 1, 4), (2, 5, 1, 4)),
        chord_beats=4,
        chord_size=4,
        energy=0.4,
        drums=DrumSpec(
            kits=(0, 8, 40),
            patterns=(
                _kit((KICK, "x..ox..ox..ox..o"),
                     (SIDE_STICK, "x..x..x...x..x....x..x...x..x..."),
                     (CLOSED_HAT, "xoxoxoxoxoxoxoxo")),
                _kit((KICK, "x..ox..ox..ox..o"),
                     (SIDE_STICK, "x..x..x...x..x....x..x...x..x..."),
                     (SHAKER, "xoxoxoxoxoxoxoxo")),
            ),
            volume=85,
            velocity=80),
        bass=PartSpec(
            programs=(32, 33, 35),
            patterns=("R-----5-5-----R.", "R-----5-R-----5-"),
            center=31,
            gate=0.85),
        harmony=PartSpec(
            programs=(24, 26, 4, 0),
            modes=("stabs",),
            patterns=("x..x..x...x..x....x..x..x..x....", "x-.x-.x-..x-.x-."),
            center=60,
            gate=0.8,
            volume=85),
        lead=PartSpec(
            programs=(73, 65, 66, 11),
            modes=("melody",),
            center=72,
            grid=2,
            density=0.55,
            volume=85),
        humanize_ms=6.0,
    ),
    "ambient_pads": Style(
        name="ambient_pads",
        words=("ambient_pads", "ambient", "atmospheric"),
        tempo_range=(56, 80),
        modes=("major", "lydian", "minor", "dorian"),
        progressions=((0, 3), (0, 5, 3, 4), (3, 0), (0, 4, 5, 3), (0, 2)),
        chord_beats=8,
        chord_size=4,
        energy=0.1,
        drums=None,
        bass=PartSpec(
            programs=(89, 35, 43),
            patterns=("R---------------",),
            center=36,
            gate=1.0,
            volume=80,
            velocity=70),
        harmony=PartSpec(
            programs=(88, 89, 91, 94, 95, 52),
            modes=("sustain",),
            center=60,
            volume=90,
            velocity=80),
        lead=PartSpec(
            programs=(8, 10, 98, 11),
            modes=("melody", "arp"),
            patterns=("x...x...x...x...", "x.....x.....x...",
                      "x..x..x..x..x..x"),
            center=76,
            gate=1.0,
            volume=65,
            velocity=70,
            grid=4,
            density=0.35),
        humanize_ms=10.0,
    ),
    "drum_and_bass": Style(
        name="drum_and_bass",
        words=("drum_and_bass", "electronic", "breakbeat"),
        tempo_range=(168, 176),
        modes=("minor", "phrygian", "dorian"),
        progressions=((0, 5), (0, 3, 5, 4), (0, 6, 5, 6), (0,)),
        chord_beats=8,
        chord_size=4,
        energy=0.9,
        drums=DrumSpec(
            kits=(0, 24, 16),
            patterns=(
                _kit((KICK, "X.........X....."), (SNARE, "....X.......X..."),
                     (CLOSED_HAT, "x.x.x.x.x.x.x.x.")),
                _kit((KICK, "X.x.......Xx....X.x.......x....."),
                     (SNARE, "....X..o.o..X..o....X..o.o....X."),
                     (RIDE, "x.x.x.x.x.x.x.x.")),
                _kit((KICK, "X.........X....."), (SNARE, "....X..o...oX..."),
                     (CLOSED_HAT, "xoxoxoxoxoxoxoxo")),
            ),
            fill="snare",
            fill_prob=0.5,
            crash=True),
        bass=PartSpec(
            programs=(38, 39),
            patterns=("R-------.....R--", "R-----R---..5---",
                      "R-------R-------"),
            center=28,
            gate=0.95,
            volume=105),
        harmony=PartSpec(
            programs=(89, 50, 91, 95, 4),
            modes=("sustain",),
            center=62,
            volume=70),
        lead=PartSpec(
            programs=(81, 85, 54, 98, 73),
            modes=("melody",),
            center=74,
            grid=2,
            density=0.35,
            volume=70),
        humanize_ms=3.0,
    ),
    "jazz_piano_trio": Style(
        name="jazz_piano_trio",
        words=("jazz_piano_trio", "jazz", "trio"),
        tempo_range=(110, 180),
        modes=("major", "dorian"),
        progressions=((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4), (3, 6, 2, 5),
                      (1, 4, 0, 5)),
        chord_beats=4,
        chord_size=4,
        energy=0.55,
        drums=DrumSpec(
            kits=(40, 32),
            patterns=(
                _kit((RIDE, "x...x.x.x...x.x."),
                     (PEDAL_HAT, "....x.......x..."),
                     (KICK, "o.......o.......")),
                _kit((RIDE, "x...x.x.x...x.x."),
                     (PEDAL_HAT, "....x.......x...")),
            ),
            volume=85,
            velocity=80,
            ghost_prob=0.12),
        bass=PartSpec(programs=(32,), modes=("walk",), center=28, gate=0.9),
        harmony=PartSpec(
            programs=(0, 1),
            modes=("comp",),
            center=60,
            volume=80,
            velocity=75,
            drop_root=True),
        lead=PartSpec(
            programs=(0, 1),
            modes=("melody",),
            center=72,
            grid=2,
            density=0.6,
            volume=90,
            same_program_as_harmony=True),
        swing=0.64,
        swing_steps=2,
        humanize_ms=8.0,
    ),
    "rock": Style(
        name="rock",
        words=("rock", "band"),
        tempo_range=(100, 150),
        modes=("major", "mixolydian", "minor"),
        progressions=((0, 4, 5, 3), (0, 3, 4, 3), (0, 6, 3, 0), (5, 3, 0, 4),
                      (0, 3)),
        chord_beats=4,
        chord_size=2,
        energy=0.8,
        drums=DrumSpec(
            kits=(0, 16, 8),
            patterns=(
                _kit((KICK, "X.......X.x....."), (SNARE, "....X.......X..."),
                     (CLOSED_HAT, "x.x.x.x.x.x.x.x.")),
                _kit((KICK, "X.....x.X......."), (SNARE, "....X.......X..."),
                     (RIDE, "x.x.x.x.x.x.x.x.")),
                _kit((KICK, "X.x.....X.x....."), (SNARE, "....X.......X..o"),
                     (OPEN_HAT, "x.x.x.x.x.x.x.x.")),
            ),
            fill="toms",
            fill_prob=0.6,
            crash=True),
        bass=PartSpec(
            programs=(33, 34),
            patterns=("R.R.R.R.R.R.R.R.", "R-R-R-R-R-R-5-O-",
                      "R.RRR.R.R.RRR.5."),
            center=28,
            gate=0.8),
        harmony=PartSpec(
            programs=(29, 30, 27),
            modes=("power",),
            patterns=("x-x-x-x-x-x-x-x-", "x-------x-x-x---",
                      "x--x--x-x--x--x-"),
            center=52,
            gate=0.9,
            volume=85),
        lead=PartSpec(
            programs=(29, 30, 81),
            modes=("melody",),
            center=67,
            grid=2,
            density=0.6,
            volume=80),
        humanize_ms=4.0,
    ),
    "lofi_hiphop": Style(
        name="lofi_hiphop",
        words=("lofi_hiphop", "lofi", "hiphop", "chill"),
        tempo_range=(70, 92),
        modes=("dorian", "minor", "major"),
        progressions=((1, 4, 0, 5), (3, 2, 1, 0), (0, 5, 3, 4), (1, 4, 0, 0),
                      (3, 4, 2, 5)),
        chord_beats=4,
        chord_size=5,
        energy=0.25,
        drums=DrumSpec(
            kits=(25, 32, 8),
            patterns=(
                _kit((KICK, "X......x..X....."), (SNARE, "....X.......X..."),
                     (CLOSED_HAT, "x.xox.x.x.xox.x.")),
                _kit((KICK, "X.....x..xX....."), (SNARE, "....X.......X..."),
                     (CLOSED_HAT, "x.x.x.x.x.x.x.xo")),
                _kit((KICK, "X..x....X......."),
                     (SIDE_STICK, "....x.......x..."),
                     (SHAKER, "xoxoxoxoxoxoxoxo")),
            ),
            volume=90,
            velocity=84),
        bass=PartSpec(
            programs=(32, 33, 35),
            patterns=("R-----.R--.5----", "R-------..R-5---",
                      "R--.R--.5-------"),
            center=31,
            gate=0.9),
        harmony=PartSpec(
            programs=(4, 5, 0, 26),
            modes=("stabs",),
            patterns=("x-------..x-----", "x-----x---------",
                      "x--------x--x---"),
            center=60,
            gate=0.95,
            volume=80,
            velocity=72,
            drop_root=True),
        lead=PartSpec(
            programs=(11, 73, 59, 12),
            modes=("melody",),
            center=72,
            grid=2,
            density=0.4,
            volume=70,
            velocity=78),
        swing=0.6,
        swing_steps=1,
        humanize_ms=12.0,
    ),
    "string_ensemble": Style(
        name="string_ensemble",
        words=("string_ensemble", "classical", "orchestral"),
        tempo_range=(60, 110),
        modes=("major", "minor", "harmonic_minor"),
        progressions=((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 2, 3, 0, 3, 4),
                      (0, 5, 1, 4)),
        chord_beats=4,
        chord_size=3,
        energy=0.3,
        drums=None,
        bass=PartSpec(
            programs=(42, 43),
            patterns=("R-------5-------", "R---------------",
                      "R---5---O---5---"),
            center=36,
            gate=0.95,
            volume=90,
            velocity=80),
        harmony=PartSpec(
            programs=(48, 49, 44),
            modes=("sustain", "arp"),
            patterns=("x.x.x.x.x.x.x.x.", "x-x-x-x-x-x-x-x-"),
            center=60,
            gate=1.0,
            volume=80,
            velocity=78),
        lead=PartSpec(
            programs=(40, 73, 68, 71),
            modes=("melody",),
            center=74,
            grid=2,
            density=0.5,
            volume=85),
        humanize_ms=8.0,
    ),
    "funk": Style(
        name="funk",
        words=("funk", "groove"),
        tempo_range=(95, 118),
        modes=("dorian", "mixolydian", "minor"),
        progressions=((0,), (0, 3), (0, 0, 3, 3), (0, 6, 0, 3)),
        chord_beats=4,
        chord_size=5,
        energy=0.7,
        drums=DrumSpec(
            kits=(0, 8),
            patterns=(
                _kit((KICK, "X.....x...x..x.."), (SNARE, "....X..o.o..X..o"),
                     (CLOSED_HAT, "xoxoxoxoxoxoxoxo")),
                _kit((KICK, "X..x..x...X..x.."), (SNARE, "....X..o....X.o."),
                     (CLOSED_HAT, "xoxoxoxoxoxoxoxo")),
            ),
            fill="snare",
            fill_prob=0.4,
            crash=True,
            ghost_prob=0.08),
        bass=PartSpec(
            programs=(36, 37, 33),
            patterns=("R..RO..R.R..5.RO", "R.ORR..O.R.5R..7",
                      "R--.R.O..R.5.R.O"),
            center=28,
            gate=0.55,
            volume=105),
        harmony=PartSpec(
            programs=(7, 28, 27, 4),
            modes=("stabs",),
            patterns=("..x.x..x..x.x..x", ".x.x..x..x.x..x.",
                      "x..x..x.x..x..x."),
            center=62,
            gate=0.3,
            volume=75,
            drop_root=True),
        lead=PartSpec(
            programs=(61, 65, 66, 80),
            modes=("melody",),
            center=70,
            grid=2,
            density=0.5,
            max_len=3,
            volume=80),
        swing=0.54,
        swing_steps=1,
        humanize_ms=5.0,
    ),
    "reggae": Style(
        name="reggae",
        words=("reggae", "offbeat"),
        tempo_range=(68, 88),
        modes=("major", "minor", "dorian"),
        progressions=((0, 3), (0, 4, 3, 4), (0, 5, 3, 4), (0, 6)),
        chord_beats=4,
        chord_size=3,
        energy=0.45,
        drums=DrumSpec(
            kits=(0, 8),
            patterns=(
                _kit((KICK, "........X......."),
                     (SIDE_STICK, "........X......."),
                     (CLOSED_HAT, "x.x.x.x.x.x.x.x.")),
                _kit((KICK, "........X......."), (SNARE, "........X......."),
                     (CLOSED_HAT, "x.xox.xox.xox.xo")),
                _kit((KICK, "X...X...X...X..."),
                     (SIDE_STICK, "........X......."),
                     (CLOSED_HAT, "x.x.x.x.x.x.x.x.")),
            ),
            fill="toms",
            fill_prob=0.2),
        bass=PartSpec(
            programs=(33, 32, 38),
            patterns=("R-..5-R.....R-3.", "R--.R-5-..R-O-5.",
                      "..R-R.5.R---.3.."),
            center=28,
            gate=0.9,
            volume=110),
        harmony=PartSpec(
            programs=(16, 17, 27, 28),
            modes=("stabs",),
            patterns=("....x-......x-..", "....x-x-....x-x-"),
            center=62,
            gate=0.4,
            volume=80),
        lead=PartSpec(
            programs=(22, 56, 16, 11),
            modes=("melody",),
            center=70,
            grid=2,
            density=0.45,
            volume=75),
        swing=0.56,
        swing_steps=1,
        humanize_ms=6.0,
    ),
}


# --------------------------------------------------------------------------
# Descriptor vocabulary.
# --------------------------------------------------------------------------

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


def _build_vocab() -> list[str]:
  words = set(TEMPO_WORDS) | set(MOOD_WORDS)
  for style in STYLES.values():
    words |= _style_vocab(style)
  return sorted(words)


DESCRIPTOR_VOCAB: list[str] = _build_vocab()


# --------------------------------------------------------------------------
# Pieces.
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Harmony helpers.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Chord:
  degree: int  # 0-based scale degree of the root.
  pcs: tuple[int, ...]  # Pitch classes the harmony part voices.
  tones: tuple[int, ...]  # Root, third, fifth, seventh (for bass and arps).


@dataclasses.dataclass(frozen=True)
class _Context:
  """What every part generator needs to know about the piece."""

  tonic: int  # Pitch class 0..11.
  scale: tuple[int, ...]  # Semitone offsets of the 7 degrees.
  chords: tuple[_Chord, ...]  # One per chord slot.
  chord_steps: int  # Steps per chord slot.

  def chord_at(self, step: float) -> _Chord:
    index = int(step // self.chord_steps)
    return self.chords[min(max(index, 0), len(self.chords) - 1)]

  def degree_pitch(self, degree: int, octave_base: int) -> int:
    """MIDI pitch of a (possibly negative or >6) scale degree."""
    octave, index = divmod(degree, 7)
    return octave_base + self.tonic + self.scale[index] + 12 * octave


def _build_chord(tonic: int, scale: Sequence[int], degree: int,
                 size: int) -> _Chord:
  def stack(steps: Sequence[int]) -> tuple[int, ...]:
    return tuple((tonic + scale[(degree + s) % 7]) % 12 for s in steps)

  # Power chords (size 2) are root and fifth; otherwise stacked thirds.
  steps = (0, 4) if size == 2 else tuple(2 * k for k in range(size))
  return _Chord(degree=degree, pcs=stack(steps), tones=stack((0, 2, 4, 6)))


def _nearest_pitch(pc: int, target: float, low: int = 0,
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
    pitches = [_nearest_pitch(rotated[0], center - 5)]
    for pc in rotated[1:]:
      pitches.append(pitches[-1] + ((pc - pitches[-1]) % 12 or 12))
    result.append(tuple(pitches))
  return result


def _voice_lead(pcs: Sequence[int], center: int,
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


def _power_voicing(chord: _Chord, center: int) -> tuple[int, ...]:
  root = _nearest_pitch(chord.pcs[0], center)
  return (root, root + 7, root + 12)


# --------------------------------------------------------------------------
# Rhythm helpers. Raw notes are (start_step, length_steps, pitch, velocity).
# --------------------------------------------------------------------------

_RawNote = tuple[float, float, int, int]


def _pattern_events(pattern: str, bar: int) -> list[tuple[int, str, int]]:
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


def _jitter_velocity(rng: np.random.Generator, velocity: int,
                     spread: int = 6) -> int:
  return int(np.clip(velocity + rng.integers(-spread, spread + 1), 1, 127))


# --------------------------------------------------------------------------
# Part generators.
# --------------------------------------------------------------------------


def _drum_notes(spec: DrumSpec, pattern: tuple[tuple[int, str], ...],
                n_bars: int, rng: np.random.Generator) -> list[_RawNote]:
  """Drum hits: the pattern, ghost notes, phrase-end fills and crashes."""
  notes: list[_RawNote] = []
  for bar in range(n_bars):
    fill = (spec.fill != "none" and bar % 4 == 3 and
            rng.random() < spec.fill_prob)
    # A fill replaces the last beat (steps 12-15) except the kick.
    for key, steps in pattern:
      for step, char, _ in _pattern_events(steps, bar):
        if fill and step >= 12 and key != KICK:
          continue
        velocity = spec.velocity + _HIT_VELOCITY[char]
        length = 8 if key in (CRASH, RIDE, OPEN_HAT) else 2
        notes.append((bar * STEPS_PER_BAR + step, length, key,
                      _jitter_velocity(rng, velocity)))
    if spec.ghost_prob > 0:
      for step in range(0, STEPS_PER_BAR, 2):
        if rng.random() < spec.ghost_prob:
          notes.append((bar * STEPS_PER_BAR + step, 1, SNARE,
                        _jitter_velocity(rng, spec.velocity - 45)))
    if fill:
      keys = ((SNARE,) * 4 if spec.fill == "snare" else
              (HIGH_TOM, HIGH_TOM, MID_TOM, LOW_TOM))
      for i, key in enumerate(keys):
        notes.append((bar * STEPS_PER_BAR + 12 + i, 1, key,
                      _jitter_velocity(rng, spec.velocity - 10 + 6 * i)))
    if spec.crash and bar % 4 == 0:
      notes.append((bar * STEPS_PER_BAR, 16, CRASH,
                    _jitter_velocity(rng, spec.velocity)))
  return notes


def _bass_pitch(token: str, chord: _Chord, next_chord: _Chord,
                low: int) -> int:
  """Pitch of one bass-pattern token, the root in [low, low + 12)."""
  root = _nearest_pitch(chord.tones[0], low + 5.5, low, low + 11)
  if token == "O":
    return root + 12
  if token == "A":  # Chromatic approach to the next root from below.
    return _nearest_pitch(next_chord.tones[0], root) - 1
  tone = chord.tones[{"R": 0, "3": 1, "5": 2, "7": 3}[token]]
  return root + (tone - chord.tones[0]) % 12


def _pattern_bass(spec: PartSpec, pattern: str, ctx: _Context, n_bars: int,
                  rng: np.random.Generator) -> list[_RawNote]:
  notes: list[_RawNote] = []
  for bar in range(n_bars):
    for step, char, length in _pattern_events(pattern, bar):
      at = bar * STEPS_PER_BAR + step
      chord = ctx.chord_at(at)
      pitch = _bass_pitch(char, chord, ctx.chord_at(at + ctx.chord_steps),
                          spec.center)
      accent = 10 if step % 4 == 0 else 0
      notes.append((at, length * spec.gate, pitch,
                    _jitter_velocity(rng, spec.velocity + accent)))
  return notes


def _walking_bass(spec: PartSpec, ctx: _Context, n_bars: int,
                  rng: np.random.Generator) -> list[_RawNote]:
  """Quarter-note walking line: root on chord changes, chromatic approach
  into the next chord, chord tones in between."""
  low, high = spec.center, spec.center + 19
  notes: list[_RawNote] = []
  previous = _nearest_pitch(ctx.chords[0].tones[0], low + 6, low, high)
  for beat in range(n_bars * 4):
    at = beat * STEPS_PER_BEAT
    chord = ctx.chord_at(at)
    next_at = at + STEPS_PER_BEAT
    changes = next_at % ctx.chord_steps == 0
    if at % ctx.chord_steps == 0:
      pitch = _nearest_pitch(chord.tones[0], previous, low, high)
    elif changes:
      target = _nearest_pitch(ctx.chord_at(next_at).tones[0], previous, low,
                              high)
      pitch = target + (1 if rng.random() < 0.5 else -1)
    else:
      options = [_nearest_pitch(pc, previous + rng.integers(-5, 6), low, high)
                 for pc in chord.tones]
      options = [p for p in options if p != previous] or options
      pitch = int(options[rng.integers(len(options))])
    accent = 10 if beat % 4 == 0 else 0
    notes.append((at, STEPS_PER_BEAT * spec.gate, pitch,
                  _jitter_velocity(rng, spec.velocity + accent)))
    previous = pitch
  return notes


def _harmony_voicing(spec: PartSpec, mode: str, chord: _Chord,
                     previous: tuple[int, ...] | None) -> tuple[int, ...]:
  if mode == "power":
    return _power_voicing(chord, spec.center)
  pcs = chord.pcs[1:] if spec.drop_root and len(chord.pcs) >= 4 else chord.pcs
  return _voice_lead(pcs, spec.center, previous)


def _harmony_onsets(mode: str, pattern: str, ctx: _Context, bar: int,
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
  return [(step, length) for step, _, length in _pattern_events(pattern, bar)]


def _harmony(spec: PartSpec, mode: str, pattern: str, ctx: _Context,
             n_bars: int, rng: np.random.Generator) -> list[_RawNote]:
  notes: list[_RawNote] = []
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
                      _jitter_velocity(rng, spec.velocity + accent, 4)))
  return notes


def _arp_lead(spec: PartSpec, pattern: str, ctx: _Context, n_bars: int,
              rng: np.random.Generator) -> list[_RawNote]:
  """A sequencer-style line cycling chord tones over two octaves."""
  order = rng.permutation(4).tolist()  # A fixed per-piece note order.
  notes: list[_RawNote] = []
  index = 0
  for bar in range(n_bars):
    for step, _, length in _pattern_events(pattern, bar):
      at = bar * STEPS_PER_BAR + step
      chord = ctx.chord_at(at)
      tones = [_nearest_pitch(pc, spec.center) for pc in chord.tones[:3]]
      tones = sorted(tones) + [min(tones) + 12]
      pitch = tones[order[index % 4]]
      index += 1
      accent = 12 if step % 4 == 0 else 0
      notes.append((at, length * spec.gate, pitch,
                    _jitter_velocity(rng, spec.velocity + accent, 4)))
  return notes


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


def _melody_lead(spec: PartSpec, ctx: _Context, n_bars: int,
                 rng: np.random.Generator) -> list[_RawNote]:
  """Motif-based melody in 2-bar phrases following a form like AABA."""
  form = ("AABA", "ABAB", "AAB-", "ABA-")[int(rng.integers(4))]
  motifs = {letter: _motif(spec, rng) for letter in "AB"}
  notes: list[_RawNote] = []
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
                    _jitter_velocity(rng, spec.velocity + accent)))
  return notes


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


def _to_notes(raw: Sequence[_RawNote], style: Style, step_seconds: float,
              seconds: float, rng: np.random.Generator) -> tuple[Note, ...]:
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


def _descriptors(style: Style, tempo: float, mode: str,
                 parts: Sequence[Part]) -> tuple[str, ...]:
  words = [tempo_word(tempo), *_mood_words(style, tempo, mode), *style.words]
  if style.swing >= 0.58:
    words.append("swing")
  for part in parts:
    words.extend(program_words(part.program, part.is_drum))
  words.append(_MODE_WORDS[mode])
  return tuple(dict.fromkeys(words))  # De-duplicate, keep order.


def _pans(rng: np.random.Generator) -> dict[str, int]:
  """Bass and drums centred; harmony and lead on opposite sides."""
  side = 1 if rng.random() < 0.5 else -1
  spread = int(rng.integers(12, 28))
  return {"drums": 64, "bass": 64, "harmony": 64 + side * spread,
          "lead": 64 - side * spread}


def generate_piece(style: str, seed: int, seconds: float) -> Piece:
  """Generate one piece of `style`, deterministic in (style, seed, seconds).

  Args:
    style: a key of `STYLES`.
    seed: any integer; draws tempo, key, instruments, patterns and melody.
    seconds: duration of the piece (> 0). Notes are cut at this time.

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
  low, high = spec.tempo_range
  tempo = float(rng.integers(low, high + 1))
  tonic = int(rng.integers(12))
  mode = _choice(rng, spec.modes)
  progression = _choice(rng, spec.progressions)
  scale = MODES[mode]

  step_seconds = 60.0 / tempo / STEPS_PER_BEAT
  n_bars = math.ceil(seconds / (STEPS_PER_BAR * step_seconds))
  chord_steps = spec.chord_beats * STEPS_PER_BEAT
  n_chords = math.ceil(n_bars * STEPS_PER_BAR / chord_steps) + 1
  chords = tuple(
      _build_chord(tonic, scale, progression[i % len(progression)],
                   spec.chord_size) for i in range(n_chords))
  ctx = _Context(tonic=tonic, scale=scale, chords=chords,
                 chord_steps=chord_steps)

  pans = _pans(rng)
  # Each part gets its own child generator so that its randomness does not
  # shift when another part changes.
  part_rngs = {role: np.random.default_rng(rng.integers(1 << 63))
               for role in ("drums", "bass", "harmony", "lead", "timing")}

  raw_parts: list[tuple[str, int, bool, int, list[_RawNote]]] = []
  if spec.drums is not None:
    drng = part_rngs["drums"]
    kit = _choice(drng, spec.drums.kits)
    pattern = _choice(drng, spec.drums.patterns)
    raw_parts.append(("drums", kit, True, spec.drums.volume,
                      _drum_notes(spec.drums, pattern, n_bars, drng)))

  brng = part_rngs["bass"]
  bass_program = _choice(brng, spec.bass.programs)
  bass_mode = _choice(brng, spec.bass.modes)
  if bass_mode == "walk":
    bass_raw = _walking_bass(spec.bass, ctx, n_bars, brng)
  else:
    bass_raw = _pattern_bass(spec.bass, _choice(brng, spec.bass.patterns), ctx,
                             n_bars, brng)
  raw_parts.append(("bass", bass_program, False, spec.bass.volume, bass_raw))

  hrng = part_rngs["harmony"]
  harmony_program = _choice(hrng, spec.harmony.programs)
  harmony_mode = _choice(hrng, spec.harmony.modes)
  harmony_pattern = (_choice(hrng, spec.harmony.patterns)
                     if spec.harmony.patterns else "")
  raw_parts.append(("harmony", harmony_program, False, spec.harmony.volume,
                    _harmony(spec.harmony, harmony_mode, harmony_pattern, ctx,
                             n_bars, hrng)))

  if spec.lead is not None:
    lrng = part_rngs["lead"]
    lead_program = _choice(lrng, spec.lead.programs)
    if spec.lead.same_program_as_harmony:
      lead_program = harmony_program
    lead_mode = _choice(lrng, spec.lead.modes)
    if lead_mode == "arp":
      lead_raw = _arp_lead(spec.lead, _choice(lrng, spec.lead.patterns), ctx,
                           n_bars, lrng)
    else:
      lead_raw = _melody_lead(spec.lead, ctx, n_bars, lrng)
    raw_parts.append(("lead", lead_program, False, spec.lead.volume, lead_raw))

  trng = part_rngs["timing"]
  parts = tuple(
      Part(role=role, program=program, is_drum=is_drum,
           name=_instrument_name(program, is_drum), volume=volume,
           pan=pans[role],
           notes=_to_notes(raw, spec, step_seconds, seconds, trng))
      for role, program, is_drum, volume, raw in raw_parts)

  descriptors = _descriptors(spec, tempo, mode, parts)
  key = f"{PITCH_NAMES[tonic]} {mode.replace('_', ' ')}"
  return Piece(style=style, seed=int(seed), seconds=seconds, tempo_bpm=tempo,
               key=key, instruments=tuple(p.name for p in parts), parts=parts,
               descriptors=descriptors, text=" ".join(descriptors))
