"""The styles of the reference world and their descriptor vocabulary.

`STYLES` maps each style name to its `style_spec.Style` (defined in
`styles_electronic` and `styles_live`). Its order matters: the style judges
and style models use it as their class order. `DESCRIPTOR_VOCAB` is every
word the generated pieces can be described with.
"""

from __future__ import annotations

from mrt_distill.world.music.descriptors import build_vocab
from mrt_distill.world.music.style_spec import Style
from mrt_distill.world.music.styles_electronic import (
    AMBIENT_PADS, DRUM_AND_BASS, LOFI_HIPHOP, TECHNO)
from mrt_distill.world.music.styles_live import (BOSSA_NOVA, FUNK,
                                                 JAZZ_PIANO_TRIO, REGGAE, ROCK,
                                                 STRING_ENSEMBLE)

STYLES: dict[str, Style] = {
    "techno": TECHNO,
    "bossa_nova": BOSSA_NOVA,
    "ambient_pads": AMBIENT_PADS,
    "drum_and_bass": DRUM_AND_BASS,
    "jazz_piano_trio": JAZZ_PIANO_TRIO,
    "rock": ROCK,
    "lofi_hiphop": LOFI_HIPHOP,
    "string_ensemble": STRING_ENSEMBLE,
    "funk": FUNK,
    "reggae": REGGAE,
}

DESCRIPTOR_VOCAB: list[str] = build_vocab(STYLES.values())
