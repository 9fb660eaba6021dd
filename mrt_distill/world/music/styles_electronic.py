"""Styles built on machines: techno, ambient pads, drum and bass, lofi hip hop.

Each is a `style_spec.Style` constant; `styles.STYLES` collects them.
"""

from __future__ import annotations

from mrt_distill.world.music.gm import (CLAP, CLOSED_HAT, KICK, OPEN_HAT, RIDE,
                                        SHAKER, SIDE_STICK, SNARE)
from mrt_distill.world.music.style_spec import DrumSpec, PartSpec, Style, kit

TECHNO = Style(
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
            kit((KICK, "X...X...X...X..."), (CLAP, "....x.......x..."),
                (CLOSED_HAT, "..x...x...x...x.")),
            kit((KICK, "X...X...X...X..."), (CLAP, "....x.......x..."),
                (CLOSED_HAT, "xoxoxoxoxoxoxoxo"),
                (OPEN_HAT, "..x...x...x...x.")),
            kit((KICK, "X...X...X...X..o"), (CLAP, "....x.......x..."),
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
)

AMBIENT_PADS = Style(
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
)

DRUM_AND_BASS = Style(
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
            kit((KICK, "X.........X....."), (SNARE, "....X.......X..."),
                (CLOSED_HAT, "x.x.x.x.x.x.x.x.")),
            kit((KICK, "X.x.......Xx....X.x.......x....."),
                (SNARE, "....X..o.o..X..o....X..o.o....X."),
                (RIDE, "x.x.x.x.x.x.x.x.")),
            kit((KICK, "X.........X....."), (SNARE, "....X..o...oX..."),
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
)

LOFI_HIPHOP = Style(
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
            kit((KICK, "X......x..X....."), (SNARE, "....X.......X..."),
                (CLOSED_HAT, "x.xox.x.x.xox.x.")),
            kit((KICK, "X.....x..xX....."), (SNARE, "....X.......X..."),
                (CLOSED_HAT, "x.x.x.x.x.x.x.xo")),
            kit((KICK, "X..x....X......."),
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
)
