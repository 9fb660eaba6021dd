"""The long-streams section: `minutes`-long streams measured per window,
with silence / noise / style-loss flags (drift and collapse).

Shape letters: R rows (streams), W windows.
"""

from __future__ import annotations

import math

import numpy as np

from mrt_distill.eval import metrics as M
from mrt_distill.eval import streams as ST
from mrt_distill.eval.context import Context
from mrt_distill.eval.progress import Progress
from mrt_distill.eval.prompts import prompt_label


def stability_section(ctx: Context, progress: Progress) -> dict:
  cfg, g = ctx.cfg, ctx.geometry
  classes = ctx.embedder.classes
  win_s = cfg.window_seconds()
  chunks = math.ceil(60.0 * cfg.minutes / g.chunk_seconds)
  prompts = [p for p in ctx.prompts[:cfg.long_prompts]
             for _ in range(cfg.long_seeds)]
  styles = np.stack([ctx.text_emb(p) for p in prompts])
  labels = [prompt_label(p, classes) for p in prompts]
  chance = 1.0 / len(classes) if classes else None
  win = int(round(win_s * ctx.sr))
  n_win = chunks * g.chunk_samples // win
  if n_win < 1:
    ctx.notes.append(f"stability: streams of {cfg.minutes} min are shorter "
                     f"than one {win_s:g} s window")
    return {"window_seconds": win_s, "windows": 0, "per_model": {}}
  metric_names = ("rms_db", "flatness", "flux", "onset_rate", "style_prob",
                  "style_cosine", "silence", "noise", "style_loss")
  per_model = {}
  for model in ctx.models:
    progress.set_stage(f"long streams ({cfg.minutes:g} min): {model.key}")
    vals = {m: np.full((len(prompts), n_win), np.nan) for m in metric_names}
    for rows, audio in ST.streams(model, styles, chunks, cfg.batch,
                                  cfg.seed + 2, progress):
      for r, clip in zip(rows, audio):
        _window_metrics(ctx, clip, r, win, n_win, labels, prompts, chance,
                        vals)
      del audio
    flags = {m: vals[m] for m in ("silence", "noise", "style_loss")}
    any_flag = np.max(np.stack(list(flags.values())), axis=0)
    per_model[model.key] = {
        **{f"{m}_mean": np.nanmean(vals[m], axis=0).tolist()
           for m in metric_names},
        **{f"{m}_std": np.nanstd(vals[m], axis=0).tolist()
           for m in ("rms_db", "flatness", "style_prob", "style_cosine")},
        "any_flag_mean": np.mean(any_flag, axis=0).tolist(),
        "flagged_fraction": float(np.mean(any_flag)),
        "first_flag_window": _first_flag(any_flag),
        "drift_style_prob": _drift(vals["style_prob"]),
        "drift_style_cosine": _drift(vals["style_cosine"]),
        "drift_rms_db": _drift(vals["rms_db"]),
    }
  return {"window_seconds": win_s, "windows": n_win,
          "minutes": cfg.minutes, "streams": len(prompts),
          "prompts": prompts, "chance": chance,
          "thresholds": {"silence_db": M.SILENCE_DB,
                         "noise_flatness": M.NOISE_FLATNESS,
                         "style_prob_min": chance},
          "per_model": per_model}


def _window_metrics(ctx, clip, r, win, n_win, labels, prompts, chance, vals):
  """Fills vals[metric][r, w] for each stability window w of one stream."""
  mono = M.mono(clip)
  emb_text = ctx.text_emb(prompts[r])
  classes = ctx.embedder.classes
  for w in range(n_win):
    x = mono[w * win:(w + 1) * win]
    prob = None
    if labels[r] is not None:
      p = ctx.embedder.clip_proba(x[None], ctx.sr)
      prob = None if p is None else float(p[0, classes.index(labels[r])])
    flags = M.stability_flags(x, style_score=prob, style_min=chance)
    se = ctx.style_embedder
    sx = se.prepare(x[None], ctx.sr)[0]
    wins = M.windows(sx, se.window_samples)
    cos = (float(M.cosine(se.embed_windows(wins), emb_text).mean())
           if len(wins) else np.nan)
    vals["rms_db"][r, w] = flags["rms_db"]
    vals["flatness"][r, w] = flags["flatness"]
    vals["flux"][r, w] = M.spectral_flux(x).mean()
    vals["onset_rate"][r, w] = M.onset_rate(x, ctx.sr)
    vals["style_prob"][r, w] = np.nan if prob is None else prob
    vals["style_cosine"][r, w] = cos
    for m in ("silence", "noise", "style_loss"):
      vals[m][r, w] = float(flags[m])


def _first_flag(any_flag_RxW) -> int | None:
  hit = np.flatnonzero(np.nanmax(any_flag_RxW, axis=0) > 0)
  return int(hit[0]) if len(hit) else None


def _drift(v_RxW) -> float | None:
  """Last window minus first, mean over streams (None with one window)."""
  if v_RxW.shape[1] < 2 or np.all(np.isnan(v_RxW)):
    return None
  return float(np.nanmean(v_RxW[:, -1] - v_RxW[:, 0]))
