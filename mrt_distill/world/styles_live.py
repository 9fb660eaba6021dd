"""Styles of live players: bossa nova, jazz piano trio, rock, string
ensemble, funk and reggae.

Each is a `style_spec.Style` constant; `styles.STYLES` collects them.
"""

from __future__ import annotations

from mrt_distill.world.gm import (
    CLOSED_HAT, KICK, OPEN_HAT, PEDAL_HAT, RIDE, SHAKER, SIDE_STICK, SNARE)
from mrt_distill.world.style_spec import DrumSpec, PartSpec, Style, kit

BOSSA_NOVA = Style(
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
            kit((KICK, "x..ox..ox..ox..o"),
                (SIDE_STICK, "x..x..x...x..x....x..x...x..x..."),
                (CLOSED_HAT, "xoxoxoxoxoxoxoxo")),
            kit((KICK, "x..ox..ox..ox..o"),
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
)

JAZZ_PIANO_TRIO = Style(
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
            kit((RIDE, "x...x.x.x...x.x."),
                (PEDAL_HAT, "....x.......x..."),
                (KICK, "o.......o.......")),
            kit((RIDE, "x...x.x.x...x.x."),
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
)

ROCK = Style(
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
            kit((KICK, "X.......X.x....."), (SNARE, "....X.......X..."),
                (CLOSED_HAT, "x.x.x.x.x.x.x.x.")),
            kit((KICK, "X.....x.X......."), (SNARE, "....X.......X..."),
                (RIDE, "x.x.x.x.x.x.x.x.")),
            kit((KICK, "X.x.....X.x....."), (SNARE, "....X.......X..o"),
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
)

STRING_ENSEMBLE = Style(
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
)

FUNK = Style(
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
            kit((KICK, "X.....x...x..x.."), (SNARE, "....X..o.o..X..o"),
                (CLOSED_HAT, "xoxoxoxoxoxoxoxo")),
            kit((KICK, "X..x..x...X..x.."), (SNARE, "....X..o....X.o."),
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
)

REGGAE = Style(
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
            kit((KICK, "........X......."),
                (SIDE_STICK, "........X......."),
                (CLOSED_HAT, "x.x.x.x.x.x.x.x.")),
            kit((KICK, "........X......."), (SNARE, "........X......."),
                (CLOSED_HAT, "x.xox.xox.xox.xo")),
            kit((KICK, "X...X...X...X..."),
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
)
