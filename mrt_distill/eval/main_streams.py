"""The main-streams section: cold-start streams, `seeds_per_prompt` per
held-out prompt, reduced to features as they are written -> style
adherence, distribution, rhythm and transients, boundaries, diversity.

Shape letters: R rows (streams), T chunks, S style width, W windows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from mrt_distill.eval import metrics as M
from mrt_distill.eval import streams as ST
from mrt_distill.eval.context import Context
from mrt_distill.eval.progress import Progress
from mrt_distill.eval.prompts import prompt_label, tempo_range


def chunk_cosines(ctx: Context, audio, targets_RxTxS
                   ) -> tuple[list, np.ndarray]:
  """Style-model embedding of the window ending at each chunk vs a per-chunk
  target: -> (cosines per row (list of (W_r,)), chunk ids (W,) of row 0)."""
  se = ctx.style_embedder
  mono = se.prepare(audio, ctx.sr)
  chunk = int(round(ctx.geometry.chunk_seconds * se.sample_rate))
  out, idx0 = [], None
  wins_all, owner, idx_all = [], [], []
  for r, clip in enumerate(mono):
    wins, idx = M.trailing_windows(clip, chunk, se.window_samples)
    wins_all.append(wins)
    owner += [r] * len(wins)
    idx_all.append(idx)
  wins = np.concatenate(wins_all)
  if not len(wins):
    return [np.zeros(0) for _ in mono], np.zeros(0, np.int64)
  emb = se.embed_windows(wins)
  owner = np.asarray(owner)
  for r in range(len(mono)):
    e, idx = emb[owner == r], idx_all[r]
    tgt = np.asarray(targets_RxTxS[r])
    tgt = tgt[np.minimum(idx, tgt.shape[0] - 1)]
    out.append(M.cosine(e, tgt))
    idx0 = idx if idx0 is None else idx0
  return out, idx0


def _features(ctx: Context, audio, rows: list[dict]) -> dict:
  """Per-row features of cold-start streams (R, N, C) (no audio kept)."""
  g, cfg = ctx.geometry, ctx.cfg
  mono = M.mono(audio)
  f: dict = {}
  proba = ctx.embedder.clip_proba(audio, ctx.sr)
  f["proba"] = proba
  f["emb"], f["emb_owner"] = ctx.embedder.embed_clips(audio, ctx.sr,
                                                      cfg.embed_hop_seconds)
  f["style_emb"], f["style_owner"] = ctx.style_embedder.embed_clips(
      audio, ctx.sr, cfg.embed_hop_seconds)
  targets = [np.asarray(r["text_emb"])[None] for r in rows]
  cos, _ = chunk_cosines(ctx, audio, targets)
  f["style_cos"] = np.array([c.mean() if len(c) else np.nan for c in cos])
  f["rms_db"] = np.array([M.rms_db(x) for x in mono])
  f["flux"] = np.array([M.spectral_flux(x).mean() for x in mono])
  f["onset_rate"] = np.array([M.onset_rate(x, ctx.sr) for x in mono])
  f["tempo"] = np.array([M.estimate_tempo(x, ctx.sr) for x in mono])
  f["boundary"] = np.array([_none_nan(M.boundary_discontinuity(
      x, g.chunk_samples, g.crossfade_samples)["ratio"]) for x in mono])
  # Diversity: pairwise distances between the seeds of each prompt.
  div_stft, div_emb = {}, {}
  for p in dict.fromkeys(r["prompt"] for r in rows):
    idx = [i for i, r in enumerate(rows) if r["prompt"] == p]
    pairs = list(itertools.combinations(idx, 2))
    if not pairs:
      continue
    a = np.stack([mono[i] for i, _ in pairs])
    b = np.stack([mono[j] for _, j in pairs])
    d = 0.5 * (M.mrstft_distance(a, b) + M.mrstft_distance(b, a))
    div_stft[p] = float(np.mean(d))
    if f["emb"].size:
      means = [f["emb"][f["emb_owner"] == i].mean(axis=0) for i in idx]
      div_emb[p] = M.pairwise_mean_distance(means, M.cosine_distance)
  f["diversity_mrstft"], f["diversity_emb"] = div_stft, div_emb
  return f


def _none_nan(x) -> float:
  return np.nan if x is None else float(x)


def _ground_truth(ctx: Context, labels: Sequence[str], seconds: float) -> dict:
  """Renders of each reference-world style: set A (the reference) and set B
  (the floor), embedded like the models' streams."""
  from mrt_distill.world import music
  from mrt_distill.world.music.piece_pool import ground_truth
  cfg, out = ctx.cfg, {}
  for lab in labels:
    if lab not in music.STYLES:
      continue
    a = ground_truth(lab, cfg.gt_pieces, seconds, ctx.sr,
                     bar_grid_hz=ctx.bar_grid_hz)
    b = ground_truth(lab, cfg.gt_pieces, seconds, ctx.sr, offset=10_000,
                     bar_grid_hz=ctx.bar_grid_hz)
    if ctx.geometry.channels > 1:
      a = np.repeat(a, ctx.geometry.channels, axis=-1)
      b = np.repeat(b, ctx.geometry.channels, axis=-1)
    rec = {}
    for name, audio in (("a", a), ("b", b)):
      rec[f"emb_{name}"] = ctx.embedder.embed_clips(
          audio, ctx.sr, cfg.embed_hop_seconds)[0]
      rec[f"style_{name}"] = ctx.style_embedder.embed_clips(
          audio, ctx.sr, cfg.embed_hop_seconds)[0]
    mono_b = M.mono(b)
    rec["proba"] = ctx.embedder.clip_proba(b, ctx.sr)
    rec["tempo"] = [M.estimate_tempo(x, ctx.sr) for x in mono_b]
    rec["flux"] = [float(M.spectral_flux(x).mean()) for x in mono_b]
    rec["onset_rate"] = [M.onset_rate(x, ctx.sr) for x in mono_b]
    rec["boundary"] = [M.boundary_discontinuity(
        x, ctx.geometry.chunk_samples, ctx.geometry.crossfade_samples)
        ["ratio"] for x in mono_b]
    out[lab] = rec
  return out


def _mean(xs) -> float | None:
  v = [float(x) for x in xs if x is not None and np.isfinite(x)]
  return float(np.mean(v)) if v else None


def _fd_block(sets: dict[str, np.ndarray], gt_a, gt_b, what: str,
              notes: list[str]) -> dict:
  """FD of each model's set to GT set A, and the floor: GT set B (cut to
  the size of the models' sets) to set A."""
  out = {k: M.frechet(v, gt_a) if v.size and gt_a.size else None
         for k, v in sets.items()}
  n = min((len(v) for v in sets.values()), default=0)
  out["ground_truth_floor"] = (M.frechet(gt_b[:n], gt_a) if n and gt_b.size
                               else None)
  if all(v is None for v in out.values()):
    e = next((v.shape[1] for v in sets.values() if v.ndim == 2), 0)
    notes.append(f"{what}: too few windows for a Fréchet distance "
                 f"({n} per model, {len(gt_a)} ground truth; needs more than "
                 f"the embedding width {e}); stream longer or more seeds")
  return out


def main_section(ctx: Context, progress: Progress) -> dict:
  cfg, g = ctx.cfg, ctx.geometry
  classes = ctx.embedder.classes
  rows = [{"prompt": p, "seed_index": s, "label": prompt_label(p, classes),
           "tempo_range": tempo_range(p) if ctx.reference_world else None,
           "text_emb": ctx.text_emb(p)}
          for p in ctx.prompts for s in range(cfg.seeds_per_prompt)]
  styles = np.stack([r["text_emb"] for r in rows])
  chunks = math.ceil(cfg.seconds / g.chunk_seconds)
  feats = {}
  for model in ctx.models:
    progress.set_stage(f"main streams: {model.key}")
    audio = ST.collect(model, styles, chunks, cfg.batch, cfg.seed, progress)
    feats[model.key] = _features(ctx, audio, rows)
    del audio
  progress.set_stage("ground truth renders")
  labels = list(dict.fromkeys(r["label"] for r in rows if r["label"]))
  gt = (_ground_truth(ctx, labels, chunks * g.chunk_seconds)
        if ctx.reference_world else {})
  if not gt:
    ctx.notes.append("no ground-truth renders for these prompts (only "
                     "reference-world style names have them): Fréchet "
                     "distances and ground-truth columns are empty")
  return {"rows": rows, "features": feats, "gt": gt, "chunks": chunks}


def style_adherence(ctx: Context, main: dict) -> dict:
  rows, feats, gt = main["rows"], main["features"], main["gt"]
  classes = ctx.embedder.classes
  per_prompt, summary = [], {}
  for p in ctx.prompts:
    idx = [i for i, r in enumerate(rows) if r["prompt"] == p]
    label = rows[idx[0]]["label"]
    row = {"prompt": p, "label": label}
    for key, f in feats.items():
      acc = None
      if label is not None and f["proba"] is not None:
        pred = np.argmax(f["proba"][idx], axis=-1)
        acc = float(np.mean(pred == classes.index(label)))
      row[key] = {"accuracy": acc,
                  "style_cosine": _mean(f["style_cos"][idx])}
    if label in gt and gt[label]["proba"] is not None:
      pred = np.argmax(gt[label]["proba"], axis=-1)
      row["ground_truth"] = {"accuracy": float(np.mean(
          pred == classes.index(label)))}
    per_prompt.append(row)
  for key in feats:
    summary[key] = {
        "accuracy": _mean(r[key]["accuracy"] for r in per_prompt),
        "style_cosine": _mean(r[key]["style_cosine"] for r in per_prompt)}
  gt_acc = [r["ground_truth"]["accuracy"] for r in per_prompt
            if "ground_truth" in r]
  summary["ground_truth"] = {"accuracy": _mean(gt_acc)}
  return {"embedder": ctx.embedder.name,
          "classes": list(classes) if classes else None,
          "per_prompt": per_prompt, "summary": summary,
          "accuracy_ratio": {k: M.ratio(summary[k]["accuracy"],
                                        summary["teacher"]["accuracy"])
                             for k in feats if k != "teacher"}}


def distribution(ctx: Context, main: dict) -> dict:
  rows, feats, gt = main["rows"], main["features"], main["gt"]
  out = {"embedder": ctx.embedder.name,
         "hop_seconds": ctx.cfg.embed_hop_seconds,
         "ground_truth_pieces": ctx.cfg.gt_pieces}
  if not gt:
    out["pooled"] = out["style_model_pooled"] = None
    out["per_style"] = []
    return out
  labelled = [i for i, r in enumerate(rows) if r["label"] in gt]

  def pick(f, emb_key, owner_key):
    keep = np.isin(f[owner_key], labelled)
    return f[emb_key][keep] if f[emb_key].size else f[emb_key]

  cat = lambda key: np.concatenate([gt[lab][key] for lab in gt])
  out["pooled"] = _fd_block(
      {k: pick(f, "emb", "emb_owner") for k, f in feats.items()},
      cat("emb_a"), cat("emb_b"), f"{ctx.embedder.name} FD (pooled)",
      ctx.notes)
  out["style_model_pooled"] = _fd_block(
      {k: pick(f, "style_emb", "style_owner") for k, f in feats.items()},
      cat("style_a"), cat("style_b"), "style-model FD (pooled)", ctx.notes)
  per_style = []
  for lab in gt:
    idx = [i for i, r in enumerate(rows) if r["label"] == lab]
    sets = {k: f["emb"][np.isin(f["emb_owner"], idx)]
            for k, f in feats.items() if f["emb"].size}
    per_style.append({"style": lab, **_fd_block(
        sets, gt[lab]["emb_a"], gt[lab]["emb_b"], f"FD {lab}", [])})
  if per_style and all(v is None for p in per_style
                       for k, v in p.items() if k != "style"):
    ctx.notes.append(f"{ctx.embedder.name} FD per style: too few windows "
                     "per style in this configuration (pooled only)")
  out["per_style"] = per_style
  out["windows_per_model"] = int(min(
      (len(pick(f, "emb", "emb_owner")) for f in feats.values()), default=0))
  return out


def rhythm(ctx: Context, main: dict, paired_out: dict) -> dict:
  rows, feats, gt = main["rows"], main["features"], main["gt"]
  t = feats["teacher"]
  out = {"paired": paired_out, "per_model": {}}
  ranged = [i for i, r in enumerate(rows) if r["tempo_range"]]
  for key, f in feats.items():
    rec = {"flux": _mean(f["flux"]), "onset_rate": _mean(f["onset_rate"]),
           "boundary_ratio": _mean(f["boundary"]),
           "rms_db": _mean(f["rms_db"])}
    rec["flux_ratio"] = M.ratio(rec["flux"], _mean(t["flux"]))
    rec["onset_ratio"] = M.ratio(rec["onset_rate"], _mean(t["onset_rate"]))
    if ranged:
      agree = [M.tempo_agreement(f["tempo"][i], *rows[i]["tempo_range"])
               for i in ranged]
      agree8 = [M.tempo_agreement(f["tempo"][i], *rows[i]["tempo_range"],
                                  octave=True) for i in ranged]
      rec["tempo_agreement"] = float(np.mean(agree))
      rec["tempo_agreement_octave"] = float(np.mean(agree8))
    else:
      rec["tempo_agreement"] = rec["tempo_agreement_octave"] = None
    out["per_model"][key] = rec
  if gt:
    tempo_ok, tempo_ok8 = [], []
    for lab, rec in gt.items():
      rng = tempo_range(lab)
      tempo_ok += [M.tempo_agreement(b, *rng) for b in rec["tempo"]]
      tempo_ok8 += [M.tempo_agreement(b, *rng, octave=True)
                    for b in rec["tempo"]]
    out["ground_truth"] = {
        "flux": _mean(itertools.chain(*(r["flux"] for r in gt.values()))),
        "onset_rate": _mean(itertools.chain(*(r["onset_rate"]
                                              for r in gt.values()))),
        "boundary_ratio": _mean(itertools.chain(*(r["boundary"]
                                                  for r in gt.values()))),
        "tempo_agreement": _mean(tempo_ok),
        "tempo_agreement_octave": _mean(tempo_ok8)}
  return out


def diversity(ctx: Context, main: dict) -> dict:
  feats = main["features"]
  out = {"seeds_per_prompt": ctx.cfg.seeds_per_prompt, "per_model": {}}
  if ctx.cfg.seeds_per_prompt < 2:
    ctx.notes.append("diversity needs >= 2 seeds per prompt")
  t_stft = _mean(feats["teacher"]["diversity_mrstft"].values())
  t_emb = _mean(feats["teacher"]["diversity_emb"].values())
  for key, f in feats.items():
    s, e = _mean(f["diversity_mrstft"].values()), _mean(
        f["diversity_emb"].values())
    out["per_model"][key] = {
        "mrstft": s, "embedding_cosine": e,
        "mrstft_ratio": M.ratio(s, t_stft),
        "embedding_ratio": M.ratio(e, t_emb),
        "per_prompt_mrstft": f["diversity_mrstft"]}
  return out
