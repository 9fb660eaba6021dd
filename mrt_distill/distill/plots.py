"""Loss curves of a run as a PNG (one panel per loss term, train and eval)."""

from __future__ import annotations

import json
import pathlib


def plot_loss_curves(workdir) -> pathlib.Path | None:
  """workdir/metrics.jsonl -> workdir/loss_curves.png (None: no metrics)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  workdir = pathlib.Path(workdir)
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return None
  rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
  terms = sorted({k[len("loss/"):] for r in rows for k in r
                  if k.startswith("loss/")})
  if not terms:
    return None
  fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 3.0),
                           squeeze=False)
  for ax, term in zip(axes[0], terms):
    for prefix, style, label in (("loss/", "-", "train"),
                                 ("eval/loss/", "o-", "eval (held out)")):
      pts = [(r["step"], r[prefix + term]) for r in rows
             if prefix + term in r]
      if pts:
        ax.plot(*zip(*pts), style, label=label, markersize=3)
    ax.set_title(term)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  out = workdir / "loss_curves.png"
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out
