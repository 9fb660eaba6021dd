"""The reference world: procedural music, the models trained on it, and the
worlds (reference, random-tiny, Magenta RT) that distillation runs in.

Layout, one subpackage a concern, in data-flow order:

  music/     procedural music: the styles, the generator (`music.
             generate_piece`, `Piece`), and its General MIDI rendering
             (`music.render`). Depends on nothing else of the world.
  training/  building the reference world's models from that music: the
             codec, style model, judges and teacher trainers and the
             world's evaluation (`tools/build_reference_world.py` runs
             them). Imports music/ and runtime/; nothing imports it at
             run time.
  runtime/   what the rest of the package uses: `load_world(config)` gives
             a `World` (teacher system, codec, style model, judge, teacher
             identity) for any config.world; `assets` locates the shipped
             weights, `judges` is the style judge, `magenta_rt` assembles
             the real Magenta RT world.

Distillation, serving and evaluation get a world only through
`runtime.load_world`.
"""
