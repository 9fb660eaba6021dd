"""Does the reference teacher get better with other sampling settings?

  python tools/sweep_teacher_sampling.py --json
  python tools/sweep_teacher_sampling.py --grid "3,1.0,40;6,0.8,20"

For each (guidance weight, temperature, top-k) of the grid, the evaluate
stage's protocol (tools/build_reference_world.py): 8 cold-start streams of
10 s per style prompt, classified by the reference judge; prints the mean
and per-style accuracy. About 35 s per setting on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

DEFAULT_GRID = ("3,1.0,40;6,1.0,40;10,1.0,40;3,1.0,8;6,1.0,8;6,0.8,20;1,1.0,40;"
                "10,1.0,8")


def parse_grid(text: str) -> list[dict]:
  out = []
  for item in filter(None, (s.strip() for s in text.split(";"))):
    parts = item.split(",")
    if len(parts) != 3:
      raise ValueError(f"grid item {item!r}: expected 'guidance,temperature,"
                       f"top_k', e.g. '3,1.0,40'")
    out.append(dict(guidance_weight=float(parts[0]),
                    temperature=float(parts[1]), top_k=int(parts[2])))
  return out


def sweep(world, grid: list[dict], *, samples: int = 8, seconds: float = 10.0,
          seed: int = 0) -> list[dict]:
  from mrt_distill.world import music
  from mrt_distill.world.training.evaluate_world import stream_teacher
  g, rows = world.geometry, []
  for sampling in grid:
    t0, per_style = time.perf_counter(), {}
    for style in music.STYLES:
      audio = stream_teacher(world, style, samples, seconds, seed, **sampling)
      pred = world.judge.classify(audio, g.sample_rate)
      per_style[style] = float(np.mean([p == style for p in pred]))
    rows.append({"sampling": sampling,
                 "accuracy_mean": float(np.mean(list(per_style.values()))),
                 "per_style": per_style,
                 "seconds": round(time.perf_counter() - t0, 1)})
    print(f"{sampling}: {rows[-1]['accuracy_mean']:.3f} "
          f"({rows[-1]['seconds']:.0f} s)", file=sys.stderr, flush=True)
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--grid", default=DEFAULT_GRID,
                 help="';'-separated 'guidance,temperature,top_k' items")
  p.add_argument("--samples", type=int, default=8)
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  grid = parse_grid(args.grid)
  from mrt_distill.world.runtime import load_world
  rows = sweep(load_world("reference", with_judge=True), grid,
               samples=args.samples)
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    print("| guidance | temperature | top-k | judge accuracy |")
    print("|---|---|---|---|")
    for r in rows:
      s = r["sampling"]
      print(f"| {s['guidance_weight']:g} | {s['temperature']:g} | "
            f"{s['top_k']} | {r['accuracy_mean']:.3f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
