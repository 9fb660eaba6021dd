"""The student-vs-teacher evaluation harness (`mrt-distill eval`).

  metrics.py    pure metric functions on audio and embeddings (numpy/librosa)
  embedders.py  the audio embedders the metrics look through: the reference
                judge (default) or any style model (MusicCoCa's role)
  streams.py    teacher and student streams from the same prompts, seeds and
                contexts; speed and memory per chunk
  config.py     EvalConfig (what is measured, how much) and the quick preset
  prompts.py    the held-out prompts, the class and tempo each asks for
  context.py    the models, embedders and prompts loaded once
  progress.py   chunks done per model kind, rate and ETA in the log
  main_streams.py, paired.py, stability.py, transitions.py, speed.py
                one module per measured section of the report
  harness.py    `evaluate`: runs every section and builds the report dict
  figures.py    the PNG figures
  report.py     report.md / report.json
  cli.py        `mrt-distill eval` (no JAX import at module level)

Nothing is imported here, so `mrt-distill --help` stays fast.
"""
