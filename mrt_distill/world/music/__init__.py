"""Procedural music in named styles (the reference world's data).

`pieces` is the generator; its names (`generate_piece`, `Piece`, `STYLES`,
...) are handed on here, so `from mrt_distill.world import music` reads
`music.generate_piece`. The parts: `styles` (with `styles_electronic`,
`styles_live`, `style_spec`), `theory`, `patterns`, `melody`, `gm`,
`descriptors`, the data types `score`; `render` synthesises a piece with a
General MIDI soundfont, `piece_pool` keeps rendered pieces for training.
"""

from mrt_distill.world.music.pieces import *  # noqa: F401,F403
from mrt_distill.world.music.pieces import __all__  # noqa: F401
