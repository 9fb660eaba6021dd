"""Rebuilds the reference world from seeds: codec, style model, judges, teacher.

  python tools/build_reference_world.py                  # every stage (~1.7 h on 2 CPU cores)
  python tools/build_reference_world.py --stage codec    # one stage
  python tools/build_reference_world.py --stage evaluate --render-examples
  python tools/build_reference_world.py --quick --assets /tmp/rw   # smoke run, minutes

Stages run in order; each writes its checksummed weights into the asset
directory (default: mrt_distill/assets/reference, shipped with the package)
and prints how long it took. `evaluate` streams the teacher for every style
from a cold start and scores it with the judge (style accuracy, Fréchet
distance against ground truth next to the ground-truth floor), writing
report.json and docs/reference_world.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import time

import numpy as np

STAGES = ("codec", "style", "teacher", "judges", "evaluate")

# Full-build budgets (seconds) and sizes, chosen so the whole build stays
# under about two hours on the 2-core reference CPU.
FULL = {
    "codec": dict(steps=3000, batch=16, seconds=1.6, budget=25 * 60),
    "style": dict(steps=800, batch=64, budget=12 * 60),
    "judges": dict(steps=1000, batch=64, budget=9 * 60),
    "teacher": dict(steps=6000, batch=16, lr=2e-3, pieces=48, budget=60 * 60),
    "evaluate": dict(samples=8, seconds=10, gt_pieces=16),
}
QUICK = {
    "codec": dict(steps=30, batch=4, seconds=1.0, budget=120),
    "style": dict(steps=30, batch=16, budget=120),
    "judges": dict(steps=30, batch=16, budget=120),
    "teacher": dict(steps=30, batch=4, lr=2e-3, pieces=2, budget=120),
    "evaluate": dict(samples=2, seconds=6, gt_pieces=2),
}

log = logging.getLogger("build_reference_world")


def stage_codec(cfg, seed):
  from mrt_distill.world.runtime import assets
  from mrt_distill.world.training.train_codec import train_codec
  return train_codec(assets.path("codec"), steps=cfg["steps"],
                     batch=cfg["batch"], seconds_per_example=cfg["seconds"], seed=seed,
                     log_every=max(1, cfg["steps"] // 40),
                     time_budget_s=cfg["budget"], log=log.info)


def stage_style(cfg, seed):
  from mrt_distill.world.runtime import assets
  from mrt_distill.world.training.train_style import train_style
  return train_style(assets.path("style"), steps=cfg["steps"],
                     batch=cfg["batch"], seed=seed,
                     log_every=max(1, cfg["steps"] // 30),
                     time_budget_s=cfg["budget"])


def stage_judges(cfg, seed):
  from mrt_distill.world.runtime import assets
  from mrt_distill.world.training.train_judges import train_judges
  return train_judges(assets.path("judges"), steps=cfg["steps"],
                      batch=cfg["batch"], seed=seed,
                      log_every=max(1, cfg["steps"] // 30),
                      time_budget_s=cfg["budget"])


def stage_teacher(cfg, seed, quick):
  from mrt_distill.teacher.load import load_teacher_config
  from mrt_distill.world.runtime import assets
  from mrt_distill.world.training.train_teacher import train_teacher
  tcfg = load_teacher_config("reference")
  return train_teacher(
      assets.path("teacher"), tcfg, assets.load_codec(),
      assets.load_style_model(), steps=cfg["steps"], batch=cfg["batch"],
      lr=cfg["lr"], pieces_per_style=cfg["pieces"],
      seconds=8.0 if quick else 24.0,
      seed=seed, log_every=max(1, cfg["steps"] // 40),
      time_budget_s=cfg["budget"], gin_name="reference")


def stage_evaluate(cfg, seed, render_examples: pathlib.Path | None):
  from mrt_distill.world.runtime import load_world
  from mrt_distill.world.training import evaluate_world
  world = load_world("reference", with_judge=True)
  report = evaluate_world.evaluate(
      world, samples_per_style=cfg["samples"], seconds=cfg["seconds"],
      gt_pieces_per_style=cfg["gt_pieces"], seed=seed)
  if render_examples:
    evaluate_world.render_examples(world, render_examples, seed=seed)
  return report


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--stage", choices=STAGES + ("all",), default="all")
  p.add_argument("--from-stage", choices=STAGES, default=None,
                 help="run this stage and every later one")
  p.add_argument("--quick", action="store_true",
                 help="tiny step counts: checks the pipeline in minutes")
  p.add_argument("--assets", default=None,
                 help="asset directory (default: the package's own)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--render-examples", nargs="?", const="reference_examples",
                 default=None, metavar="DIR",
                 help="also write wavs + spectrogram PNGs of ground truth, "
                      "codec reconstruction and teacher output to DIR")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  if args.assets:
    os.environ["MRT_DISTILL_ASSETS"] = str(pathlib.Path(args.assets).resolve())
  from mrt_distill.world.runtime import assets  # after MRT_DISTILL_ASSETS is set
  assets.ASSET_DIR.mkdir(parents=True, exist_ok=True)

  if args.from_stage:
    todo = STAGES[STAGES.index(args.from_stage):]
  elif args.stage == "all":
    todo = STAGES
  else:
    todo = (args.stage,)
  sizes = QUICK if args.quick else FULL
  timings = {}
  for stage in todo:
    t0 = time.perf_counter()
    log.info("=== stage %s ===", stage)
    if stage == "codec":
      out = stage_codec(sizes[stage], args.seed)
    elif stage == "style":
      out = stage_style(sizes[stage], args.seed)
    elif stage == "judges":
      out = stage_judges(sizes[stage], args.seed)
    elif stage == "teacher":
      out = stage_teacher(sizes[stage], args.seed, args.quick)
    else:
      examples = (pathlib.Path(args.render_examples)
                  if args.render_examples else None)
      out = stage_evaluate(sizes[stage], args.seed, examples)
    timings[stage] = round(time.perf_counter() - t0, 1)
    log.info("stage %s took %.1f s (%.1f min)", stage, timings[stage],
             timings[stage] / 60)
    if stage == "evaluate":  # trainers write their own <name>.metrics.json
      (assets.ASSET_DIR / "report.json").write_text(
          json.dumps(_jsonable(out), indent=2))
  log.info("stage timings (s): %s; total %.1f min", timings,
           sum(timings.values()) / 60)
  timing_file = assets.ASSET_DIR / "build_timings.json"
  old = json.loads(timing_file.read_text()) if timing_file.exists() else {}
  merged = {**old.get("seconds", {}), **timings} if old.get(
      "quick") == args.quick else timings
  timing_file.write_text(json.dumps({"quick": args.quick, "seconds": merged},
                                    indent=2))
  if "evaluate" in todo and not args.quick:
    from mrt_distill.world.training import evaluate_world
    md = pathlib.Path(__file__).resolve().parents[1] / "docs" / (
        "reference_world.md")
    evaluate_world.write_markdown(
        assets.ASSET_DIR, md, "python tools/build_reference_world.py")
    log.info("wrote %s", md)
  return 0


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return x


if __name__ == "__main__":
  sys.exit(main())
