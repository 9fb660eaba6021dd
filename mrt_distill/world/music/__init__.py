"""Procedural music in named styles (the reference world's data).

`pieces` is the generator; its names (`generate_piece`, `Piece`, `STYLES`,
...) are handed on here, so `from mrt_distill.world import music` reads
`music.generate_piece`. The parts: `styles` (with `styles_electronic`,
`styles_live`, `style_spec`), `theory`, `patterns`, `melody`, `gm`,
`descriptors`, the data types `score`; `render` synthesises a piece with a
General MIDI soundfont, `piece_pool` keeps rendered pieces for training and
renders the held-out ground truth.
"""

from mrt_distill.world.music.pieces import (CLAP, CLOSED_HAT, CRASH,
                                            DESCRIPTOR_VOCAB, DRUM_CHANNEL,
                                            DRUM_KITS, DrumSpec, HIGH_TOM,
                                            KICK, LOW_TOM, MID_TOM, MODES,
                                            MOOD_WORDS, Note, OPEN_HAT,
                                            PEDAL_HAT, PITCH_NAMES, Part,
                                            PartSpec, Piece, RIDE, SHAKER,
                                            SIDE_STICK, SNARE, STEPS_PER_BAR,
                                            STEPS_PER_BEAT, STYLES, Style,
                                            TEMPO_WORDS, generate_piece,
                                            program_words, tempo_word)

__all__ = [
    "CLAP", "CLOSED_HAT", "CRASH", "DESCRIPTOR_VOCAB", "DRUM_CHANNEL",
    "DRUM_KITS", "DrumSpec", "HIGH_TOM", "KICK", "LOW_TOM", "MID_TOM",
    "MODES", "MOOD_WORDS", "Note", "OPEN_HAT", "PEDAL_HAT", "PITCH_NAMES",
    "Part", "PartSpec", "Piece", "RIDE", "SHAKER", "SIDE_STICK", "SNARE",
    "STEPS_PER_BAR", "STEPS_PER_BEAT", "STYLES", "Style", "TEMPO_WORDS",
    "generate_piece", "program_words", "tempo_word",
]
