"""The prompt-transitions section: A -> B over `transition_seconds` in
`transition_steps` steps (Magenta RT paper, Figure 2).

Shape letters: R rows (streams), T chunks, S style width.
"""

from __future__ import annotations

import math

import numpy as np

from mrt_distill.eval import streams as ST
from mrt_distill.eval.context import Context
from mrt_distill.eval.main_streams import chunk_cosines
from mrt_distill.eval.progress import Progress


def transition_schedule(emb_a, emb_b, chunks: int, steps: int,
                        ) -> tuple[np.ndarray, np.ndarray]:
  """Stepwise linear interpolation A -> B: -> (style per chunk (T, S),
  weight of B per chunk (T,)). Step j of `steps` covers chunks
  [j T / steps, (j + 1) T / steps) with weight j / (steps - 1), so the
  first step is pure A and the last pure B (the paper's 6 x 10 s)."""
  from mrt_distill.style import mixing
  j = np.minimum((np.arange(chunks) * steps) // chunks, steps - 1)
  w = j / (steps - 1)
  both = np.stack([emb_a, emb_b])
  emb = np.stack([mixing.mix_embeddings(both, [1 - x, x]) for x in w])
  return emb.astype(np.float32), w


def transition_section(ctx: Context, progress: Progress) -> dict:
  cfg, g = ctx.cfg, ctx.geometry
  chunks = math.ceil(cfg.transition_seconds / g.chunk_seconds)
  a = np.stack([ctx.text_emb(p) for p, _ in ctx.pairs])
  b = np.stack([ctx.text_emb(p) for _, p in ctx.pairs])
  sched = [transition_schedule(x, y, chunks, cfg.transition_steps)
           for x, y in zip(a, b)]
  styles = np.stack([s for s, _ in sched])  # (R, T, S)
  weight_b = sched[0][1]
  per_model = {}
  for model in ctx.models:
    progress.set_stage(f"transitions: {model.key}")
    audio = ST.collect(model, styles, chunks, cfg.batch, cfg.seed + 3,
                       progress)
    cos_t, idx = chunk_cosines(ctx, audio, styles)
    cos_a, _ = chunk_cosines(ctx, audio, a[:, None])
    cos_b, _ = chunk_cosines(ctx, audio, b[:, None])
    del audio
    rec = {"t_seconds": ((idx + 1) * g.chunk_seconds).tolist()}
    for name, c in (("a", cos_a), ("b", cos_b), ("target", cos_t)):
      arr = np.stack(c) if len(idx) else np.zeros((len(c), 0))
      rec[f"cos_{name}_mean"] = arr.mean(axis=0).tolist()
      rec[f"cos_{name}_std"] = arr.std(axis=0).tolist()
    if len(idx):
      ca, cb = np.stack(cos_a).mean(0), np.stack(cos_b).mean(0)
      cross = np.flatnonzero(cb > ca)
      rec["summary"] = {
          "cos_target": float(np.stack(cos_t).mean()),
          "start_a_minus_b": float(ca[0] - cb[0]),
          "end_b_minus_a": float(cb[-1] - ca[-1]),
          "crossing_seconds": (float(rec["t_seconds"][cross[0]])
                               if len(cross) else None)}
    else:
      rec["summary"] = None
      ctx.notes.append("transitions: streams shorter than the style "
                       "model's window, no curves")
    per_model[model.key] = rec
  return {"pairs": [list(p) for p in ctx.pairs],
          "seconds": chunks * g.chunk_seconds, "steps": cfg.transition_steps,
          "weight_b_per_chunk": weight_b.tolist(),
          "embedding": "style model audio vs text (window ending at each "
                       f"chunk, {ctx.style_embedder.window_seconds:g} s)",
          "per_model": per_model}
