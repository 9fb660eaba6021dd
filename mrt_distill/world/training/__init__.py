"""Training the reference world's models on procedural music.

`train_codec` (with `codec_data`, `codec_codebooks`, `codec_eval`),
`train_style` (with `style_eval`), `train_judges`, `train_teacher`, and
`evaluate_world`, which measures the built world. They are run by
`tools/build_reference_world.py`; the runtime never imports them.
"""
