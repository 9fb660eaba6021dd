"""Is the reference teacher's weakness its conditioning or its modelling?

  python tools/probe_teacher_conditioning.py --json

Scores the shipped teacher with the reference judge (the evaluate stage of
tools/build_reference_world.py: 8 cold-start streams of 10 s per style)
three times, changing only the style embedding each style is prompted with:

  text         the style's name through the text tower (what players do);
  audio        the mean audio embedding of 4 renders of the style (seeds
               disjoint from training and ground truth): an audio prompt;
  audio-tokens the most common (level 1, level 2) style-token pair of those
               renders' 4 s windows, i.e. exactly the tokens the teacher saw
               most often for the style in pretraining.

If audio prompts scored far above text prompts, the text/audio token
mismatch would be the problem; if all three are alike, the teacher is.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np

MODES = ("text", "audio", "audio-tokens")
PROBE_SEED_BASE = 555_000  # disjoint from training and ground-truth seeds


def style_embeddings(world, mode: str, pieces: int = 4,
                     seconds: float = 16.0) -> dict[str, np.ndarray] | None:
  """{style: (E,)} for `mode`, or None for text prompts."""
  from mrt_distill.world import music
  from mrt_distill.world.music import render
  if mode == "text":
    return None
  sm, g = world.style_model, world.geometry
  out = {}
  for si, style in enumerate(music.STYLES):
    win = g.context_samples
    windows = []
    for j in range(pieces):
      audio = render.render(music.generate_piece(
          style, PROBE_SEED_BASE + si * 31 + j, seconds), g.sample_rate, 1)
      windows += [audio[i * win:(i + 1) * win] for i in range(len(audio) // win)]
    emb = sm.embed_audio(np.stack(windows), g.sample_rate)  # (W, E)
    if mode == "audio":
      m = emb.mean(axis=0)
      out[style] = m / np.linalg.norm(m)
    else:
      pairs = [tuple(t) for t in sm.tokenize(emb)[:, :2]]
      (t0, t1), _ = collections.Counter(pairs).most_common(1)[0]
      # The sum of the two codewords tokenises back to exactly (t0, t1).
      out[style] = sm.codebooks[0][t0] + sm.codebooks[1][t1]
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--modes", default=",".join(MODES))
  p.add_argument("--samples", type=int, default=8)
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  from mrt_distill.world.runtime import load_world
  from mrt_distill.world.training import evaluate_world as EW
  world = load_world("reference", with_judge=True)
  rows = {}
  for mode in args.modes.split(","):
    if mode not in MODES:
      p.error(f"unknown mode {mode!r}; use {', '.join(MODES)}")
    rep = EW.evaluate(world, samples_per_style=args.samples,
                      embeddings=style_embeddings(world, mode))
    rows[mode] = {"accuracy": rep["teacher_accuracy_mean"],
                  "per_style": {r["style"]: r["teacher_accuracy"]
                                for r in rep["per_style"]}}
    print(f"[{mode}] judge accuracy {rows[mode]['accuracy']:.3f}",
          file=sys.stderr, flush=True)
  if args.json:
    print(json.dumps(rows, indent=2))
  else:
    for mode, r in rows.items():
      print(f"{mode:13s} {r['accuracy']:.3f}  " + " ".join(
          f"{k}={v:.2f}" for k, v in r["per_style"].items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
