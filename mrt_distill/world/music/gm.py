"""General MIDI facts the music generator and the renderer share.

The percussion channel, the GM percussion keys the style drum patterns use,
and the GS drum kits (program numbers in the percussion bank) the soundfont
has.
"""

DRUM_CHANNEL = 9  # MIDI channel 10, zero-based.

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
