"""The speed section: batch-1 ms per chunk, RTF, control delay and memory
of every model."""

from __future__ import annotations

from mrt_distill.eval import streams as ST
from mrt_distill.eval.context import Context
from mrt_distill.eval.progress import Progress
from mrt_distill.info import peak_rss_mib


def speed_section(ctx: Context, progress: Progress) -> dict:
  cfg = ctx.cfg
  emb = ctx.text_emb(ctx.prompts[0])[None]
  progress.set_stage("speed (batch 1, all models round-robin)")
  reps = {m.key: (cfg.teacher_speed_reps if m.kind == "teacher"
                  else cfg.speed_reps) for m in ctx.models}
  out = ST.measure_speed(ctx.models, emb, reps, cfg.seed)
  for m in ctx.models:
    progress(m.kind, reps[m.key] + 1)
    # After the speed run, so the compiled step is usually a cache hit.
    out[m.key].update(ST.measure_memory(m, emb))
  t = out["teacher"]["ms_per_chunk"]
  for rec in out.values():
    rec["speedup_vs_teacher"] = t / rec["ms_per_chunk"]
  import jax
  return {"batch": 1, "device": str(jax.devices()[0]),
          "chunk_seconds": ctx.geometry.chunk_seconds,
          "process_peak_rss_mib": peak_rss_mib(), "per_model": out}
