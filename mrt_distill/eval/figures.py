"""The evaluation's PNG figures, drawn from the report dict alone.

Drawing from the JSON-able report (never from audio) means any report.json
can be re-plotted without rerunning the models. Each function writes one
file and returns its path, or None when its section has nothing to draw.

  accuracy_by_style.png  judge accuracy per prompt, every model + ground truth
  distribution.png       Fréchet distances with the ground-truth floor
  timbre.png             same-context distances to the teacher, per chunk
  stability.png          long streams, per window: level, flatness, style
  transitions.png        the Magenta RT paper's Figure 2, model by model
  speed.png              ms per chunk (log) with RTF
"""

from __future__ import annotations

import pathlib

import numpy as np


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _model_keys(report: dict) -> list[str]:
  return [m["key"] for m in report["models"]]


def _colors(keys):
  plt = _plt()
  cmap = plt.get_cmap("tab10")
  return {k: cmap(i % 10) for i, k in enumerate(keys)}


def _save(fig, path: pathlib.Path) -> pathlib.Path:
  fig.tight_layout()
  from mrt_distill import atomic
  with atomic.target(path) as tmp:
    fig.savefig(tmp, dpi=90)
  _plt().close(fig)
  return path


def accuracy_by_style(report: dict, out: pathlib.Path):
  sa = report["style_adherence"]
  rows = [r for r in sa["per_prompt"] if r["label"] is not None]
  if not rows:
    return None
  plt = _plt()
  keys = _model_keys(report) + (["ground_truth"] if any(
      "ground_truth" in r for r in rows) else [])
  colors = _colors(keys)
  width = 0.8 / len(keys)
  fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) * len(keys) / 3),
                                  4))
  x = np.arange(len(rows))
  for i, k in enumerate(keys):
    vals = [(r.get(k) or {}).get("accuracy") for r in rows]
    ax.bar(x + (i - (len(keys) - 1) / 2) * width,
           [np.nan if v is None else v for v in vals], width, label=k,
           color=colors[k])
  ax.set_xticks(x, [r["prompt"] for r in rows], rotation=30, ha="right")
  ax.set_ylim(0, 1.05)
  ax.set_ylabel(f"accuracy ({sa['embedder']})")
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  ax.set_title("Style accuracy per held-out prompt")
  return _save(fig, out / "accuracy_by_style.png")


def distribution(report: dict, out: pathlib.Path):
  d = report["distribution"]
  blocks = [(n, d.get(k)) for n, k in ((d["embedder"], "pooled"),
                                       ("style model", "style_model_pooled"))
            if d.get(k)]
  if not blocks or all(all(v is None for v in b.values()) for _, b in blocks):
    return None
  plt = _plt()
  keys = _model_keys(report)
  colors = _colors(keys)
  fig, axes = plt.subplots(1, len(blocks), figsize=(5 * len(blocks), 3.6),
                           squeeze=False)
  for ax, (name, block) in zip(axes[0], blocks):
    vals = [block.get(k) for k in keys]
    ax.bar(range(len(keys)), [np.nan if v is None else v for v in vals],
           color=[colors[k] for k in keys])
    if block.get("ground_truth_floor") is not None:
      ax.axhline(block["ground_truth_floor"], ls="--", color="k",
                 label="ground truth vs ground truth")
      ax.legend(fontsize=7)
    ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax.set_ylabel("Fréchet distance to ground truth")
    ax.set_title(name)
  return _save(fig, out / "distribution.png")


def timbre(report: dict, out: pathlib.Path):
  p = report["timbre_rhythm"]["paired"]["per_model"]
  if not p:
    return None
  plt = _plt()
  keys = list(p)
  colors = _colors(keys)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for ax, metric, label in ((axes[0], "mrstft", "MR-STFT distance"),
                            (axes[1], "logmel_db", "log-mel distance (dB)")):
    for k in keys:
      y = p[k][f"{metric}_per_chunk"]
      ax.plot(np.arange(len(y)), y, marker="o", color=colors[k], label=k,
              ls="--" if k == "teacher_again" else "-")
    ax.set_xlabel("chunk (same context as the teacher)")
    ax.xaxis.set_major_locator(_plt().MaxNLocator(integer=True))
    ax.set_ylabel(label)
  axes[0].legend(fontsize=7)
  fig.suptitle("Distance to the teacher's chunk from the same context "
               "(teacher_again: the teacher's own second sample)",
               fontsize=9)
  return _save(fig, out / "timbre.png")


def stability(report: dict, out: pathlib.Path):
  s = report["stability"]
  if not s.get("per_model"):
    return None
  plt = _plt()
  keys = list(s["per_model"])
  colors = _colors(keys)
  win = s["window_seconds"]
  # Minutes for long streams, seconds for short (quick) ones.
  unit, scale = (("minutes", 60.0) if s["minutes"] * 60 >= 180
                 else ("seconds", 1.0))
  panels = (("rms_db", "RMS (dBFS)"), ("flatness", "spectral flatness"),
            ("style_prob", "judge P(prompt style)"),
            ("style_cosine", "style cosine to prompt"),
            ("flux", "spectral flux"),
            ("any_flag", "fraction of streams flagged"))
  fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
  for ax, (metric, label) in zip(axes.ravel(), panels):
    for k in keys:
      m = s["per_model"][k]
      y = np.array(m[f"{metric}_mean"], dtype=float)
      t = (np.arange(len(y)) + 1) * win / scale
      ax.plot(t, y, marker="o", ms=3, color=colors[k], label=k)
    if metric == "rms_db":
      ax.axhline(s["thresholds"]["silence_db"], ls=":", color="k")
    if metric == "flatness":
      ax.axhline(s["thresholds"]["noise_flatness"], ls=":", color="k")
    if metric == "style_prob" and s["thresholds"]["style_prob_min"]:
      ax.axhline(s["thresholds"]["style_prob_min"], ls=":", color="k")
    ax.set_title(label, fontsize=9)
    ax.set_xlabel(f"{unit} (window end)")
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f"Long-form stability: {s['streams']} streams of "
               f"{s['minutes']:g} min, {win:g} s windows (dotted: flag "
               "thresholds)", fontsize=10)
  return _save(fig, out / "stability.png")


def transitions(report: dict, out: pathlib.Path):
  """Figure 2 of the Magenta RT paper for every model, side by side: top,
  cosine to prompt A (blue) and B (red); bottom, cosine to the
  interpolated conditioning; mean +- std over pairs."""
  tr = report["transitions"]
  keys = [k for k, v in tr["per_model"].items() if v["t_seconds"]]
  if not keys:
    return None
  plt = _plt()
  fig, axes = plt.subplots(2, len(keys), figsize=(3.2 * len(keys), 6),
                           squeeze=False, sharey="row")
  for j, k in enumerate(keys):
    m = tr["per_model"][k]
    t = np.array(m["t_seconds"])
    for ax, parts in ((axes[0, j], (("a", "tab:blue", "A"),
                                    ("b", "tab:red", "B"))),
                      (axes[1, j], (("target", "tab:green", "target"),))):
      for name, color, label in parts:
        mu = np.array(m[f"cos_{name}_mean"])
        sd = np.array(m[f"cos_{name}_std"])
        ax.plot(t, mu, color=color, label=label)
        ax.fill_between(t, mu - sd, mu + sd, color=color, alpha=0.2)
      ax.set_xlabel("seconds")
    axes[0, j].set_title(k, fontsize=9)
  axes[0, 0].set_ylabel("cosine to A / B")
  axes[1, 0].set_ylabel("cosine to interpolation")
  axes[0, 0].legend(fontsize=7)
  axes[1, 0].legend(fontsize=7)
  fig.suptitle(f"Prompt transitions: {len(tr['pairs'])} pairs, "
               f"{tr['seconds']:g} s in {tr['steps']} steps", fontsize=10)
  return _save(fig, out / "transitions.png")


def speed(report: dict, out: pathlib.Path):
  sp = report["speed"]["per_model"]
  if not sp:
    return None
  plt = _plt()
  keys = list(sp)
  colors = _colors(keys)
  ms = [sp[k]["ms_per_chunk"] for k in keys]
  fig, ax = plt.subplots(figsize=(7, 0.5 * len(keys) + 1.5))
  ax.barh(range(len(keys)), ms, color=[colors[k] for k in keys])
  for i, k in enumerate(keys):
    ax.text(ms[i], i, f"  {ms[i]:.1f} ms, RTF {sp[k]['rtf']:.1f}, "
            f"{sp[k]['calls_per_chunk']} calls", va="center", fontsize=8)
  ax.axvline(1000 * report["speed"]["chunk_seconds"], ls="--", color="k",
             label="real time (one chunk of audio)")
  ax.set_xscale("log")
  ax.set_yticks(range(len(keys)), keys)
  ax.set_xlabel("ms per chunk, batch 1 (log)")
  ax.legend(fontsize=7, loc="lower right")
  return _save(fig, out / "speed.png")


ALL = (accuracy_by_style, distribution, timbre, stability, transitions,
       speed)


def write_all(report: dict, out_dir) -> list[pathlib.Path]:
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  return [p for p in (fn(report, out) for fn in ALL) if p is not None]
