"""How predictable are the reference codec's tokens? (what the teacher models)

  python tools/probe_codec_tokens.py --json

A language model over codec tokens can only copy what repeats in its
context if the same music gives the same tokens. Procedural pieces repeat
their drum and bass patterns every bar, so this probe encodes held-out
renders (seeds disjoint from training and ground truth) with the shipped
codec and measures, per RVQ level the teacher generates:

  shift_frame   tokens of the audio delayed by exactly one frame vs the
                original's, aligned (the encoder is frame-equivariant, so
                this should be ~1: a sanity check of the probe);
  shift_half    the same with a half-frame delay: music does not fall on the
                frame grid, so this is how stable a token is to where a note
                lands inside its frame;
  lag_bar       token at frame t vs at t + one bar (4 beats at the piece's
                tempo), in the same piece: the repetition a teacher copies;
  chance        agreement of two independent draws from the level's token
                frequencies (sum of squared frequencies): the floor;
  entropy       unigram entropy of the level (nats; ln 256 = 5.55 is
                uniform use of the codebook).

Low shift_half and lag_bar close to chance mean the tokens are not a stable
function of the music, so even a perfect teacher must spread its
probability over many tokens per frame.

`--teacher` adds the shipped teacher's held-out cross-entropy per level
with its full 4 s context and with none (cold start), next to the corpus's
unigram entropy: how much the teacher gains from what it could copy.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

PROBE_SEED_BASE = 556_000  # disjoint from training and ground-truth seeds


def level_stats(codes_TxK: list[np.ndarray], other_TxK: list[np.ndarray]
                ) -> np.ndarray:
  """Mean per-level agreement of aligned code arrays -> (K,)."""
  eq = [np.mean(a == b, axis=0) for a, b in zip(codes_TxK, other_TxK)]
  return np.mean(eq, axis=0)


def probe(codec, *, pieces: int = 3, seconds: float = 16.0, levels: int
          | None = None, styles=None, bar_grid_hz: float | None = None
          ) -> dict:
  from mrt_distill.world import music
  from mrt_distill.world.music import render
  g = codec.geometry
  k = levels or g.target_levels
  spf = g.samples_per_frame
  rows = []
  for si, style in enumerate(list(styles or music.STYLES)):
    base, frame, half, bar_a, bar_b = [], [], [], [], []
    for j in range(pieces):
      piece = music.generate_piece(style, PROBE_SEED_BASE + si * 31 + j,
                                   seconds, bar_grid_hz=bar_grid_hz)
      audio = render.render(piece, g.sample_rate, g.channels)
      n = (len(audio) // spf - 2) * spf  # room for the delayed copies

      def codes(delay, audio=audio, n=n):
        x = np.concatenate([np.zeros((delay, audio.shape[1]), audio.dtype),
                            audio])[:n]
        return codec.encode(x, g.sample_rate)[:, :k]

      c0 = codes(0)
      c_frame, c_half = codes(spf), codes(spf // 2)
      base.append(c0[4:-4])
      frame.append(c_frame[5:-3])  # delayed by one frame: index t+1 = t
      half.append(c_half[4:-4])
      lag = int(round(4 * 60.0 / piece.tempo_bpm * g.frame_rate))
      bar_a.append(c0[:-lag])
      bar_b.append(c0[lag:])
    allc = np.concatenate(base)
    chance, entropy = [], []
    for lv in range(k):
      p = np.bincount(allc[:, lv], minlength=g.codebook_size) / len(allc)
      chance.append(float(np.sum(p**2)))
      nz = p[p > 0]
      entropy.append(float(-(nz * np.log(nz)).sum()))
    rows.append({
        "style": style,
        "shift_frame": level_stats(base, frame).round(3).tolist(),
        "shift_half": level_stats(base, half).round(3).tolist(),
        "lag_bar": level_stats(bar_a, bar_b).round(3).tolist(),
        "chance": np.round(chance, 3).tolist(),
        "entropy": np.round(entropy, 2).tolist(),
    })
  mean = {key: np.mean([r[key] for r in rows], axis=0).round(3).tolist()
          for key in ("shift_frame", "shift_half", "lag_bar", "chance",
                      "entropy")}
  return {"levels": k, "pieces_per_style": pieces, "seconds": seconds,
          "bar_grid_hz": bar_grid_hz,
          "per_style": rows, "mean": mean}


def judge_ceiling(codec, judge, *, pieces: int = 2, seconds: float = 10.0,
                  levels=(2, 4), bar_grid_hz: float | None = None) -> dict:
  """Judge accuracy of held-out renders passed through the codec at each of
  `levels` RVQ depths (the ceiling of a teacher that writes that many),
  per style, next to the ground truth's own accuracy."""
  from mrt_distill.world import music
  from mrt_distill.world.music import render
  g = codec.geometry
  rows = {}
  for si, style in enumerate(music.STYLES):
    audio = np.stack([render.render(music.generate_piece(
        style, PROBE_SEED_BASE + 7_000 + si * 31 + j, seconds,
        bar_grid_hz=bar_grid_hz), g.sample_rate, g.channels)
                      for j in range(pieces)])
    codes = codec.encode(audio, g.sample_rate)
    row = {"ground_truth": float(np.mean(
        np.array(judge.classify(audio, g.sample_rate)) == style))}
    for k in levels:
      rec = codec.decode(codes[..., :k])[:, :audio.shape[1]]
      row[f"levels_{k}"] = float(np.mean(
          np.array(judge.classify(rec, g.sample_rate)) == style))
    rows[style] = row
  mean = {key: round(float(np.mean([r[key] for r in rows.values()])), 3)
          for key in next(iter(rows.values()))}
  worst = {key: min(rows, key=lambda s: rows[s][key]) for key in mean}
  return {"per_style": rows, "mean": mean, "worst_style": worst}


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
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  from mrt_distill.world.runtime import assets, load_world
  if args.codec:
    from mrt_distill.codec.neural import NeuralCodec
    codec = NeuralCodec.load(args.codec)
  else:
    codec = assets.load_codec()
  report = probe(codec, pieces=args.pieces, seconds=args.seconds,
                 levels=args.levels,
                 bar_grid_hz=(codec.geometry.frame_rate if args.bar_grid
                              else None))
  if args.teacher:
    report["teacher"] = teacher_levels(load_world("reference"))
  if args.judge:
    report["judge_ceiling"] = judge_ceiling(
        codec, assets.load_judge(), pieces=args.pieces,
        bar_grid_hz=report["bar_grid_hz"])
  print(json.dumps(report, indent=1) if args.json else markdown(report))
  if args.judge and not args.json:
    c = report["judge_ceiling"]
    print("judge accuracy through the codec (mean; worst style): " + ", ".join(
        f"{k} {v:.2f} ({c['worst_style'][k]} "
        f"{c['per_style'][c['worst_style'][k]][k]:.2f})"
        for k, v in c["mean"].items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
