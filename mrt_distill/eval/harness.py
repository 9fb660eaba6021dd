"""Runs the student-vs-teacher evaluation and builds the report dict.

One call, `evaluate(EvalConfig)`, loads the models once (`context.py`) and
runs seven sections on the same prompts, seeds and contexts for every model
(the teacher, and each student at each k in `steps`; with a second student
from `compare_checkpoint`, e.g. one trained on-policy, both), each measured
in its own module:

  main_streams.py   cold-start streams -> style adherence, distribution,
                    rhythm and transients, boundaries, diversity
  paired.py         same-context chunks -> timbre distances to the teacher
  stability.py      `minutes`-long streams per window: drift and collapse
  transitions.py    A -> B prompt transitions (Magenta RT paper, Figure 2)
  speed.py          batch-1 ms per chunk, RTF, control delay, memory

Each model's streams are reduced to features as soon as they are written,
so a 5-minute run never holds every model's audio at once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

from mrt_distill.eval.config import EvalConfig
from mrt_distill.eval.context import Context, build_context
from mrt_distill.eval.main_streams import (distribution, diversity,
                                           main_section, rhythm,
                                           style_adherence)
from mrt_distill.eval.paired import paired_section
from mrt_distill.eval.progress import Progress, hms
from mrt_distill.eval.prompts import training_overlap
from mrt_distill.eval.speed import speed_section
from mrt_distill.eval.stability import stability_section
from mrt_distill.eval.transitions import transition_section

log = logging.getLogger("mrt_distill.eval")

SECTIONS = ("style_adherence", "distribution", "timbre_rhythm", "diversity",
            "stability", "transitions", "speed")


def _totals(ctx: Context) -> dict[str, int]:
  cfg, g = ctx.cfg, ctx.geometry
  n_s = len(ctx.students)
  main = len(ctx.prompts) * cfg.seeds_per_prompt * math.ceil(
      cfg.seconds / g.chunk_seconds)
  pair = len(ctx.prompts) * cfg.paired_seeds * cfg.paired_chunks
  long = (min(cfg.long_prompts, len(ctx.prompts)) * cfg.long_seeds
          * math.ceil(60 * cfg.minutes / g.chunk_seconds))
  trans = len(ctx.pairs) * math.ceil(cfg.transition_seconds / g.chunk_seconds)
  return {"teacher": main + 2 * pair + long + trans + cfg.teacher_speed_reps
                     + 1,
          "student": n_s * (main + pair + long + trans + cfg.speed_reps + 1)}


def evaluate(cfg: EvalConfig, command: str | None = None,
             context: Context | None = None) -> dict:
  """Runs every section; -> the report dict (see `report.py`).

  context: models already loaded by `build_context` for this cfg (tests
  load once and reuse them); it must have been built from the same
  checkpoints, prompts and steps."""
  t0 = time.perf_counter()
  if context is None:
    log.info("eval: loading %s%s", cfg.checkpoint,
             f" and {cfg.compare_checkpoint}" if cfg.compare_checkpoint
             else "")
    context = build_context(cfg)
  elif context.cfg != cfg:
    raise ValueError("evaluate: the context was built for another config")
  ctx = dataclasses.replace(context, notes=list(context.notes))
  load_s = time.perf_counter() - t0
  progress = Progress(_totals(ctx))
  timing = {"load": load_s}

  def timed(name, fn, *args):
    s = time.perf_counter()
    out = fn(*args)
    timing[name] = time.perf_counter() - s
    return out

  main = timed("main_streams", main_section, ctx, progress)
  paired_out = timed("paired", paired_section, ctx, progress)
  stab = timed("stability", stability_section, ctx, progress)
  trans = timed("transitions", transition_section, ctx, progress)
  speed = timed("speed", speed_section, ctx, progress)
  progress.set_stage("report")
  overlap = training_overlap(ctx.students[0].bundle, ctx.prompts)
  if overlap:
    ctx.notes.append(f"prompts seen in training (not held out): {overlap}")
  report = {
      "command": command,
      "config": dataclasses.asdict(cfg),
      "geometry": ctx.geometry.name,
      "world": str(ctx.students[0].bundle.config.world),
      "models": _models_meta(ctx),
      "prompts": {"held_out": ctx.prompts, "training_overlap": overlap,
                  "held_out_verified": overlap == [] if overlap is not None
                  else None},
      "style_adherence": style_adherence(ctx, main),
      "distribution": distribution(ctx, main),
      "timbre_rhythm": rhythm(ctx, main, paired_out),
      "diversity": diversity(ctx, main),
      "stability": stab,
      "transitions": trans,
      "speed": speed,
      "notes": ctx.notes,
  }
  timing["total"] = time.perf_counter() - t0
  report["timing_seconds"] = timing
  log.info("eval: done in %s", hms(timing["total"]))
  return report


def _models_meta(ctx: Context) -> list[dict]:
  out = [{"key": "teacher", "kind": "teacher",
          "calls_per_chunk": ctx.teacher.calls_per_chunk,
          "sampling": ctx.teacher.system.sampling._asdict()}]
  for st in ctx.students:
    out.append({"key": st.key, "kind": "student",
                "calls_per_chunk": st.calls_per_chunk,
                **ctx.student_meta[st.key]})
  return out
