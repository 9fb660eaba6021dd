"""How predictable are the reference codec's tokens? (what the teacher models)

  python tools/probe_codec_tokens.py --json

A language model over codec tokens can only copy what repeats in its
context if the same music gives the same tokens. This probe encodes renders
the codec never trained on and prints, per RVQ level the teacher generates,
how many tokens survive a one-frame and a half-frame (20 ms) delay, how
often a token recurs a bar later, the chance of that, and the level's
entropy (definitions: `mrt_distill/world/training/codec_tokens.py`, which
the world build's evaluate stage also runs). Low shift_half and lag_bar
close to chance mean the tokens are not a stable function of the music, so
even a perfect teacher must spread its probability over many tokens per
frame.

`--teacher` adds the shipped teacher's held-out cross-entropy per level
with its full 4 s context and with none (cold start), next to the corpus's
unigram entropy: how much the teacher gains from what it could copy.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from mrt_distill.world.training.codec_tokens import judge_ceiling
from mrt_distill.world.training.codec_tokens import reconstruction_fidelity
from mrt_distill.world.training.codec_tokens import token_stability


def teacher_levels(world, *, batches: int = 6, batch: int = 16,
                   seed: int = 0) -> dict:
  """Held-out per-level cross-entropy (nats) of the teacher with full and
  no context, and the held-out corpus's unigram entropy per level."""
  import jax
  import jax.numpy as jnp
  from mrt_distill.world.training import train_teacher as tt
  cfg, g = world.teacher_cfg, world.geometry
  k = g.target_levels
  held = tt.make_corpus(world.codec, world.style_model, pieces_per_style=2,
                        seconds=24.0, seed=seed + 7919)  # the trainer's
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                        world.teacher_params)
  out = tt.level_cross_entropy(params, cfg, held, batches=batches,
                               batch=batch, seed=seed + 13)
  codes = np.concatenate([p.codes for p in held]).astype(np.int64)
  uni = []
  for lv in range(k):
    q = np.bincount(codes[:, lv], minlength=g.codebook_size) / len(codes)
    q = q[q > 0]
    uni.append(float(-(q * np.log(q)).sum()))
  out["unigram_entropy"] = np.round(uni, 3).tolist()
  return out


def markdown(report: dict) -> str:
  k = report["levels"]
  head = "| | " + " | ".join(f"level {i}" for i in range(k)) + " |"
  lines = [head, "|---" * (k + 1) + "|"]
  for key in ("shift_frame", "shift_half", "lag_bar", "chance", "entropy"):
    lines.append(f"| {key} | " + " | ".join(
        f"{v:.3f}" if key != "entropy" else f"{v:.2f}"
        for v in report["mean"][key]) + " |")
  for key, vals in report.get("teacher", {}).items():
    lines.append(f"| teacher {key} | " + " | ".join(
        f"{v:.2f}" for v in vals) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--pieces", type=int, default=3)
  p.add_argument("--seconds", type=float, default=16.0)
  p.add_argument("--levels", type=int, default=None,
                 help="RVQ levels to probe (default: the teacher's)")
  p.add_argument("--teacher", action="store_true",
                 help="add the shipped teacher's per-level cross-entropy")
  p.add_argument("--bar-grid", action="store_true",
                 help="pieces whose bar is a whole number of codec frames "
                      "(music.generate_piece's bar_grid_hz)")
  p.add_argument("--codec", default=None,
                 help="a codec .npz to probe (default: the shipped one)")
  p.add_argument("--judge", action="store_true",
                 help="add the codec ceiling: the shipped judge's accuracy "
                      "on renders through the codec at 2 and 4 levels")
  p.add_argument("--fidelity", action="store_true",
                 help="add what the coarse levels keep: SNR and chroma "
                      "(pitch) agreement through the codec at 1, 2 and 4 "
                      "levels")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  from mrt_distill.world.runtime import assets, load_world
  if args.codec:
    from mrt_distill.codec.neural import NeuralCodec
    codec = NeuralCodec.load(args.codec)
  else:
    codec = assets.load_codec()
  report = token_stability(codec, pieces=args.pieces, seconds=args.seconds,
                 levels=args.levels,
                 bar_grid_hz=(codec.geometry.frame_rate if args.bar_grid
                              else None))
  if args.teacher:
    report["teacher"] = teacher_levels(load_world("reference"))
  if args.judge:
    report["judge_ceiling"] = judge_ceiling(
        codec, assets.load_judge(), pieces=args.pieces,
        bar_grid_hz=report["bar_grid_hz"])
  if args.fidelity:
    report["fidelity"] = reconstruction_fidelity(
        codec, pieces=args.pieces, bar_grid_hz=report["bar_grid_hz"])
  print(json.dumps(report, indent=1) if args.json else markdown(report))
  if args.fidelity and not args.json:
    m = report["fidelity"]["mean"]
    print("through the codec (mean over styles): " + ", ".join(
        f"{k} levels SNR {m[f'snr_db_{k}']:.2f} dB chroma "
        f"{m[f'chroma_{k}']:.2f}" for k in report["fidelity"]["levels"]))
  if args.judge and not args.json:
    c = report["judge_ceiling"]
    print("judge accuracy through the codec (mean; worst style): " + ", ".join(
        f"{k} {v:.2f} ({c['worst_style'][k]} "
        f"{c['per_style'][c['worst_style'][k]][k]:.2f})"
        for k, v in c["mean"].items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
