"""Rebuilds the reference world from seeds: codec, style model, teacher, judges.

  python tools/build_reference_world.py               # every stage, resumable
  python tools/build_reference_world.py --install     # ... then copy the
                                                      # weights into the package
  python tools/build_reference_world.py --stage codec # one stage
  python tools/build_reference_world.py --quick --build-dir /tmp/rw  # minutes

The full build takes hours on a 2-core CPU (per-stage figures in
docs/reference_world.md), so it is resumable: every stage works in the
build folder (default ~/.cache/mrt_distill/world_build, or
$MRT_WORLD_BUILD_DIR, or --build-dir; outside the checkout), the long ones
(codec, teacher) save their whole training state every
--checkpoint-minutes, and rerunning the same command skips finished stages
and continues the running one from its last checkpoint, with weights
identical to an uninterrupted build. `world/training/stage_checkpoints.py` has the
folder's layout and its guarantees. The short stages (style, judges,
evaluate: minutes each) rerun from their start when interrupted.

Each stage records its recipe in its folder: its settings (FULL or QUICK
below), the world's music options, the seed, and the sha256 of the weights
it reads (the teacher reads the codec's and the style model's). A rerun
whose recipe for a stage differs is refused, naming the changed settings,
so checkpoints of one recipe never continue under another; stages whose
recipe is unchanged stay valid (changing the teacher's steps keeps a
finished codec).

Weights go to <build folder>/assets/ (override with --assets), never to the
package until the build is complete and --install copies them (the package
keeps a consistent world: its student and reports match its teacher).
`evaluate` streams the teacher for every style from a cold start and scores
it with the judge, writing report.json; with --install it also writes
docs/reference_world.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import sys
import time

import numpy as np

STAGES = ("codec", "style", "teacher", "judges", "evaluate")
LONG_STAGES = ("codec", "teacher")  # checkpointed inside the stage

# The world's music: tempi whose 4/4 bar is a whole number of 25 Hz codec
# frames, so a repeated bar lands on the same phase of the frame grid
# (music.generate_piece's bar_grid_hz). Applies to what the codec and the
# teacher learn from and to the evaluation's ground truth.
WORLD = {"bar_grid_hz": 25.0}

# Full build: each stage under 2 h on the 2-core reference CPU; this recipe
# took 135 min in all on 2026-12-06 (codec 50, style 12, teacher 64, judges
# 7, evaluate 2; docs/benchmarks.md, "The stable-token world"). It was not
# installed: the shipped world (docs/reference_world.md) is an earlier
# recipe's.
FULL = {
    "world": WORLD,
    # Shift-trained coarse half of the latent, split between levels 0 and 1
    # with 32 codes each (docs/benchmarks.md, "Codec levers").
    "codec": dict(steps=6000, batch=16, seconds=1.6, shift_weight=4.0,
                  coarse_dims=32, coarse_levels=2, coarse_split=True,
                  coarse_codes=32),
    "style": dict(steps=800, batch=64),
    "judges": dict(steps=1000, batch=64),
    # 4500 steps: about 1.5 h at 0.85-0.95 steps/s on the 2-core CPU, inside
    # the 2 h stage limit with room for a machine shared with other work.
    "teacher": dict(steps=4500, batch=16, lr=2e-3, pieces=48, seconds=24.0),
    "evaluate": dict(samples=8, seconds=10, gt_pieces=16, probe_pieces=3,
                     probe_seconds=16.0),
}
QUICK = {
    "world": WORLD,
    "codec": dict(steps=30, batch=4, seconds=1.0, shift_weight=4.0,
                  coarse_dims=32, coarse_levels=2, coarse_split=True,
                  coarse_codes=32),
    "style": dict(steps=30, batch=16),
    "judges": dict(steps=30, batch=16),
    "teacher": dict(steps=30, batch=4, lr=2e-3, pieces=2, seconds=8.0),
    "evaluate": dict(samples=2, seconds=6, gt_pieces=2, probe_pieces=1,
                     probe_seconds=6.0),
}

log = logging.getLogger("build_reference_world")


# The weights each stage reads, whose identity is part of its recipe.
INPUTS = {"codec": (), "style": (), "judges": (),
          "teacher": ("codec", "style"),
          "evaluate": ("codec", "style", "teacher", "judges")}


def recipe(quick: bool, seed: int) -> dict:
  return {"version": 2, "quick": quick, "seed": seed,
          **(QUICK if quick else FULL)}


def stage_recipe(rec: dict, stage: str, assets) -> dict:
  """What decides one stage's weights (see the module docstring)."""
  inputs = {}
  for name in INPUTS[stage]:
    try:
      inputs[name] = assets.recorded_sha256(name)
    except assets.MissingAssetError:
      raise SystemExit(
          f"error: stage {stage} reads the {name} weights, which are not "
          f"built in {assets.ASSET_DIR}: run the build without --stage "
          f"(or with --stage {name} first)") from None
  return {"version": rec["version"], "quick": rec["quick"],
          "seed": rec["seed"], "world": rec["world"],
          "settings": rec[stage], "inputs": inputs}


def _checkpoints(build: pathlib.Path, stage: str, minutes: float):
  from mrt_distill.world.training.stage_checkpoints import StageCheckpoints
  return StageCheckpoints(build / stage, every_s=60.0 * minutes)


def stage_codec(cfg, rec, assets, ckpt, stop_at):
  import dataclasses
  from mrt_distill.world.training.train_codec import TrainHParams, train_codec
  hp = dataclasses.replace(TrainHParams(), shift_weight=cfg["shift_weight"],
                           coarse_dims=cfg["coarse_dims"],
                           coarse_levels=cfg["coarse_levels"],
                           coarse_split=cfg["coarse_split"],
                           coarse_codes=cfg["coarse_codes"])
  return train_codec(assets.path("codec"), steps=cfg["steps"],
                     batch=cfg["batch"], seconds_per_example=cfg["seconds"],
                     seed=rec["seed"], hparams=hp,
                     bar_grid_hz=rec["world"]["bar_grid_hz"],
                     log_every=max(1, cfg["steps"] // 40),
                     checkpoints=ckpt, stop_at_step=stop_at, log=log.info)


def stage_style(cfg, rec, assets):
  from mrt_distill.world.training.train_style import train_style
  return train_style(assets.path("style"), steps=cfg["steps"],
                     batch=cfg["batch"], seed=rec["seed"],
                     log_every=max(1, cfg["steps"] // 30),
                     time_budget_s=None)


def stage_judges(cfg, rec, assets):
  from mrt_distill.world.training.train_judges import train_judges
  return train_judges(assets.path("judges"), steps=cfg["steps"],
                      batch=cfg["batch"], seed=rec["seed"],
                      log_every=max(1, cfg["steps"] // 30),
                      time_budget_s=None)


def stage_teacher(cfg, rec, assets, ckpt, stop_at):
  from mrt_distill.teacher.load import load_teacher_config
  from mrt_distill.world.training.train_teacher import train_teacher
  tcfg = load_teacher_config("reference")
  return train_teacher(
      assets.path("teacher"), tcfg, assets.load_codec(),
      assets.load_style_model(), steps=cfg["steps"], batch=cfg["batch"],
      lr=cfg["lr"], pieces_per_style=cfg["pieces"], seconds=cfg["seconds"],
      seed=rec["seed"], log_every=max(1, cfg["steps"] // 40),
      gin_name="reference", bar_grid_hz=rec["world"]["bar_grid_hz"],
      checkpoints=ckpt, stop_at_step=stop_at)


def stage_evaluate(cfg, rec, assets, render_examples: pathlib.Path | None):
  from mrt_distill.world.runtime import load_world
  from mrt_distill.world.training import evaluate_world
  world = load_world("reference", with_judge=True)
  report = evaluate_world.evaluate(
      world, samples_per_style=cfg["samples"], seconds=cfg["seconds"],
      gt_pieces_per_style=cfg["gt_pieces"], seed=rec["seed"],
      bar_grid_hz=rec["world"]["bar_grid_hz"])
  # How stable the codec's tokens are (issue 19's codec figures; the full
  # build uses `tools/probe_codec_tokens.py`'s default sizes).
  from mrt_distill.world.training.codec_tokens import token_stability
  report["codec_tokens"] = token_stability(
      world.codec, pieces=cfg["probe_pieces"], seconds=cfg["probe_seconds"],
      bar_grid_hz=rec["world"]["bar_grid_hz"])
  if render_examples:
    evaluate_world.render_examples(world, render_examples, seed=rec["seed"])
  return report


def _outputs(assets, stage: str) -> dict[str, pathlib.Path]:
  if stage == "evaluate":
    return {"report": assets.ASSET_DIR / "report.json"}
  return {stage: assets.path(stage)}


def install(build_assets: pathlib.Path) -> pathlib.Path:
  """Copies a complete build's weights into the package's asset folder
  (each file replaced atomically, its checksum sidecar with it)."""
  from mrt_distill import atomic
  pkg = pathlib.Path(__file__).resolve().parents[1] / "mrt_distill" / (
      "assets") / "reference"
  names = ("codec.npz", "style.npz", "judge.npz", "teacher.npz")
  missing = [n for n in names if not (build_assets / n).exists()]
  if missing:
    raise SystemExit(f"error: the build in {build_assets} is not complete "
                     f"({', '.join(missing)} missing): run the build first")
  for src in sorted(build_assets.iterdir()):
    if src.is_file() and not src.name.startswith("."):
      with atomic.target(pkg / src.name) as tmp:
        shutil.copyfile(src, tmp)
  return pkg


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--stage", choices=STAGES + ("all",), default="all")
  p.add_argument("--from-stage", choices=STAGES, default=None,
                 help="run this stage and every later one")
  p.add_argument("--redo", action="store_true",
                 help="rerun the chosen stages even if finished (a long "
                      "stage continues from its newest checkpoint)")
  p.add_argument("--quick", action="store_true",
                 help="tiny step counts: checks the pipeline in minutes")
  p.add_argument("--build-dir", default=None,
                 help="the build folder (default $MRT_WORLD_BUILD_DIR or "
                      "~/.cache/mrt_distill/world_build)")
  p.add_argument("--assets", default=None,
                 help="where the weights go (default <build-dir>/assets)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--checkpoint-minutes", type=float, default=5.0,
                 help="minutes between checkpoints of the long stages")
  p.add_argument("--stop-after-steps", type=int, default=None,
                 help="stop the running long stage after this step, with a "
                      "checkpoint (a planned pause; tests)")
  p.add_argument("--install", action="store_true",
                 help="when every stage is done, copy the weights into the "
                      "package (mrt_distill/assets/reference) and write "
                      "docs/reference_world.md")
  p.add_argument("--render-examples", nargs="?", const="reference_examples",
                 default=None, metavar="DIR",
                 help="also write wavs + spectrogram PNGs of ground truth, "
                      "codec reconstruction and teacher output to DIR")
  args = p.parse_args(argv)
  if args.install and args.quick:
    p.error("--install with --quick: a quick build checks the pipeline, its "
            "weights are not fit to ship; build without --quick to install")
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  logging.getLogger("absl").setLevel(logging.WARNING)

  from mrt_distill import atomic
  from mrt_distill.world.training import stage_checkpoints as SC
  build = SC.build_dir(args.build_dir)
  rec = recipe(args.quick, args.seed)
  asset_dir = pathlib.Path(args.assets or build / "assets").resolve()
  asset_dir.mkdir(parents=True, exist_ok=True)
  os.environ["MRT_DISTILL_ASSETS"] = str(asset_dir)
  from mrt_distill.world.runtime import assets  # after MRT_DISTILL_ASSETS is set
  log.info("build folder %s; weights to %s", build, asset_dir)

  if args.from_stage:
    todo = STAGES[STAGES.index(args.from_stage):]
  elif args.stage == "all":
    todo = STAGES
  else:
    todo = (args.stage,)
  sizes = rec
  timing_file = build / "build_timings.json"
  timings = (json.loads(timing_file.read_text())
             if timing_file.exists() else {})
  for stage in todo:
    sdir = build / stage
    try:
      SC.check_recipe(sdir, stage_recipe(rec, stage, assets))
    except SC.RecipeMismatchError as e:
      print(f"error: stage {stage}: {e}", file=sys.stderr)
      return 2
    if not args.redo and SC.is_done(sdir):
      log.info("=== stage %s: done (%s), skipped; --redo reruns it ===",
               stage, sdir / "done.json")
      continue
    log.info("=== stage %s ===", stage)
    t0 = time.perf_counter()
    try:
      if stage in LONG_STAGES:
        ckpt = _checkpoints(build, stage, args.checkpoint_minutes)
        fn = stage_codec if stage == "codec" else stage_teacher
        out = fn(sizes[stage], rec, assets, ckpt, args.stop_after_steps)
        stage_seconds = ckpt.elapsed()  # over every run of the stage
        ckpt.close()
      elif stage == "style":
        out = stage_style(sizes[stage], rec, assets)
      elif stage == "judges":
        out = stage_judges(sizes[stage], rec, assets)
      else:
        examples = (pathlib.Path(args.render_examples)
                    if args.render_examples else None)
        out = stage_evaluate(sizes[stage], rec, assets, examples)
    except SC.BuildDiskFullError as e:
      print(f"error: {e.strerror}", file=sys.stderr)
      return 3
    except SC.StageUnreadableError as e:
      print(f"error: {e}", file=sys.stderr)
      return 3
    took = time.perf_counter() - t0
    timings[stage] = round(stage_seconds if stage in LONG_STAGES
                           else timings.get(stage, 0.0) + took, 1)
    atomic.write_text(timing_file, json.dumps(timings, indent=2) + "\n")
    if isinstance(out, dict) and "stopped_at_step" in out:
      log.info("stage %s paused at step %d after %.1f min; rerun the same "
               "command to continue", stage, out["stopped_at_step"],
               took / 60)
      return 0
    if stage == "evaluate":  # trainers write their own <name>.metrics.json
      atomic.write_text(assets.ASSET_DIR / "report.json",
                        json.dumps(_jsonable(out), indent=2))
    SC.mark_done(sdir, _outputs(assets, stage), {"seconds": timings[stage]})
    log.info("stage %s took %.1f min (%.1f min in all its runs)", stage,
             took / 60, timings[stage] / 60)
  log.info("stage timings (s): %s; total %.1f min", timings,
           sum(timings.values()) / 60)
  # Beside the weights: what built them (evaluate_world.write_markdown reads
  # the timings).
  atomic.write_text(asset_dir / "build_recipe.json",
                    json.dumps(rec, indent=2) + "\n")
  atomic.write_text(asset_dir / "build_timings.json", json.dumps(
      {"quick": args.quick, "seconds": timings}, indent=2) + "\n")
  if args.install:
    if not all(SC.is_done(build / s) for s in STAGES):
      print("error: --install needs every stage done; rerun without "
            "--stage to finish the build", file=sys.stderr)
      return 2
    pkg = install(asset_dir)
    log.info("installed the build's weights into %s", pkg)
    if not args.quick:
      from mrt_distill.world.training import evaluate_world
      md = pathlib.Path(__file__).resolve().parents[1] / "docs" / (
          "reference_world.md")
      evaluate_world.write_markdown(
          asset_dir, md, "python tools/build_reference_world.py --install")
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
