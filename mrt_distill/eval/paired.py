"""The paired-chunks section: each student writes the chunk the teacher is
about to write, from the teacher's context -> timbre distances, next to
the teacher's own second sample (the floor)."""

from __future__ import annotations

import numpy as np

from mrt_distill.eval import metrics as M
from mrt_distill.eval import streams as ST
from mrt_distill.eval.context import Context
from mrt_distill.eval.progress import Progress


def paired_section(ctx: Context, progress: Progress) -> dict:
  cfg = ctx.cfg
  progress.set_stage("paired chunks (same context)")
  prompts = [p for p in ctx.prompts for _ in range(cfg.paired_seeds)]
  styles = np.stack([ctx.text_emb(p) for p in prompts])
  keys = [s.key for s in ctx.students] + ["teacher_again"]
  stft = {k: np.full((len(prompts), cfg.paired_chunks), np.nan) for k in keys}
  mel = {k: np.full((len(prompts), cfg.paired_chunks), np.nan) for k in keys}
  for pc in ST.paired(ctx.teacher, ctx.students, styles, cfg.paired_chunks,
                      cfg.batch, cfg.seed + 1, progress):
    ref = M.mono(pc.teacher)
    for k, audio in {**pc.students, "teacher_again": pc.teacher_again}.items():
      x = M.mono(audio)
      stft[k][pc.rows, pc.chunk] = M.mrstft_distance(x, ref)
      mel[k][pc.rows, pc.chunk] = [M.log_mel_distance(a, b, ctx.sr)
                                   for a, b in zip(x, ref)]
  per_model = {}
  for k in keys:
    per_model[k] = {
        "mrstft": float(np.nanmean(stft[k])),
        "mrstft_std": float(np.nanstd(stft[k])),
        "logmel_db": float(np.nanmean(mel[k])),
        "logmel_db_std": float(np.nanstd(mel[k])),
        "mrstft_per_chunk": np.nanmean(stft[k], axis=0).tolist(),
        "logmel_db_per_chunk": np.nanmean(mel[k], axis=0).tolist()}
  return {"chunks": cfg.paired_chunks, "streams": len(prompts),
          "floor_key": "teacher_again", "per_model": per_model}
