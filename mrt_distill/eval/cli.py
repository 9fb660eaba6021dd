"""`mrt-distill eval`: the student-vs-teacher report.

  mrt-distill eval --checkpoint runs/reference_cpu --out eval_out
  mrt-distill eval --checkpoint student.npz --quick
  mrt-distill eval --checkpoint off_policy.npz \
      --compare-checkpoint on_policy.npz --minutes 5
  mrt-distill eval --checkpoint random-tiny --quick --set seconds=4.8

Writes OUT/report.md (the command that regenerates it at the top),
OUT/report.json and OUT/*.png. The module imports nothing heavy at load
time so that `mrt-distill --help` stays fast; the harness (and JAX) load in
`run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import typing


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--checkpoint", default="reference",
                 help="student: 'reference' (shipped), 'random-tiny', a "
                      "distill workdir (WORKDIR@STEP: its checkpoint at that "
                      "step) or a student .npz (default "
                      "reference)")
  p.add_argument("--compare-checkpoint", default=None,
                 help="a second student of the same teacher, reported "
                      "next to the first (e.g. trained on-policy)")
  p.add_argument("--prompts", default=None,
                 help="held-out prompt file (.txt/.csv/.jsonl; 'A -> B' "
                      "lines are the transitions); default: the reference "
                      "world's bare style names")
  p.add_argument("--out", default="eval_out",
                 help="output directory (default eval_out)")
  p.add_argument("--quick", action="store_true",
                 help="small configuration: 3 prompts x 2 seeds, 15 s long "
                      "streams, 6 short transitions (a few minutes)")
  p.add_argument("--minutes", type=float, default=None,
                 help="long-form stream length (default 5, quick 0.25)")
  p.add_argument("--steps", default="1,2,4",
                 help="student steps k to evaluate, comma separated "
                      "(default 1,2,4)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--embedder", default="auto",
                 choices=("auto", "judge", "style-model"),
                 help="the ear for accuracy and Fréchet distance: the "
                      "reference judge, or the style model (MusicCoCa's "
                      "role); auto = the judge in the reference world")
  p.add_argument("--set", dest="overrides", action="append", default=[],
                 metavar="KEY=VALUE",
                 help="any EvalConfig field, e.g. --set seconds=8 --set "
                      "transition_pairs=32 (repeatable)")


def _parse_value(field: dataclasses.Field, text: str, hints: dict):
  kind = hints[field.name]
  origin = typing.get_origin(kind)
  args = typing.get_args(kind)
  if origin is tuple:
    return tuple(int(v) for v in text.split(",") if v.strip())
  if type(None) in args:  # Optional[X]
    if text.lower() in ("none", ""):
      return None
    kind = next(a for a in args if a is not type(None))
  if kind is bool:
    if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
      raise ValueError(f"--set {field.name}={text}: expected true or false")
    return text.lower() in ("1", "true", "yes")
  return kind(text)


def config_from_args(args):
  """argparse namespace -> config.EvalConfig (quick preset first, then the
  flags, then --set overrides)."""
  from mrt_distill.eval.config import QUICK, EvalConfig
  fields = {f.name: f for f in dataclasses.fields(EvalConfig)}
  hints = typing.get_type_hints(EvalConfig)
  values = dict(QUICK) if args.quick else {}
  try:
    steps = tuple(int(k) for k in args.steps.split(",") if k.strip())
  except ValueError:
    raise ValueError(f"--steps {args.steps!r}: expected e.g. 1,2,4") from None
  values.update(checkpoint=args.checkpoint,
                compare_checkpoint=args.compare_checkpoint,
                prompts=args.prompts, out=args.out, steps=steps,
                seed=args.seed, embedder=args.embedder)
  if args.minutes is not None:
    values["minutes"] = args.minutes
  for item in args.overrides:
    key, sep, text = item.partition("=")
    if not sep or key not in fields:
      raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of "
                       f"{', '.join(sorted(fields))}")
    try:
      values[key] = _parse_value(fields[key], text, hints)
    except (TypeError, ValueError) as e:
      raise ValueError(f"--set {item!r}: {e}") from None
  cfg = EvalConfig(**values)
  check_limits(cfg)
  return cfg


# Upper bounds, and why: every stream's audio is held in memory until it
# is scored, and the time grows with them (5 minutes per long stream is
# already 15-25 minutes on a 2-core CPU).
LIMITS = {"minutes": (60.0, "each long-form stream is held in memory and "
                      "takes about its own length again to score"),
          "seconds": (600.0, "every sample is held in memory"),
          "transition_seconds": (600.0, "every transition stream is held "
                                 "in memory")}


def check_limits(cfg) -> None:
  for key, (hi, why) in LIMITS.items():
    v = getattr(cfg, key)
    if v > hi:
      flag = "--minutes" if key == "minutes" else f"--set {key}"
      raise ValueError(f"{flag} {v:g}: at most {hi:g} ({why})")


def check_out(out) -> None:
  """--out is a new folder, an empty one, or an earlier eval's (it has a
  report.json): a report never overwrites files of the user's own."""
  import pathlib
  out = pathlib.Path(out)
  if out.exists() and not out.is_dir():
    raise ValueError(f"--out {str(out)!r} is a file; give a folder for "
                     f"report.md, report.json and the figures")
  if out.is_dir() and not (out / "report.json").is_file():
    entries = sorted(p.name for p in out.iterdir())
    if entries:
      shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
      raise ValueError(
          f"--out {str(out)!r} holds files that are not an eval report "
          f"({shown}); eval writes report.md, report.json and PNGs there "
          f"and would overwrite files of those names. Give a new or empty "
          f"folder, e.g. --out {str(out / 'eval')!r}")


def command_line(args) -> str:
  """The `mrt-distill eval ...` line that reproduces this run."""
  parts = ["mrt-distill", "eval", "--checkpoint", args.checkpoint]
  if args.compare_checkpoint:
    parts += ["--compare-checkpoint", args.compare_checkpoint]
  if args.prompts:
    parts += ["--prompts", args.prompts]
  parts += ["--out", args.out]
  if args.quick:
    parts.append("--quick")
  if args.minutes is not None:
    parts += ["--minutes", f"{args.minutes:g}"]
  parts += ["--steps", args.steps, "--seed", str(args.seed)]
  if args.embedder != "auto":
    parts += ["--embedder", args.embedder]
  for item in args.overrides:
    parts += ["--set", item]
  return " ".join(shlex.quote(p) for p in parts)


def run(args, context=None) -> int:
  """Evaluate, write OUT/report.{md,json} and figures, print a summary.
  `context`: an already loaded `context.Context` for this config (tests)."""
  cfg = config_from_args(args)  # bad flags fail before anything loads
  check_out(cfg.out)
  from mrt_distill.eval import harness
  from mrt_distill.eval import report as report_lib
  report = harness.evaluate(cfg, command=command_line(args), context=context)
  paths = report_lib.write(report, cfg.out)
  sa = report["style_adherence"]["summary"]
  sp = report["speed"]["per_model"]
  for m in report["models"]:
    k = m["key"]
    acc = sa[k]["accuracy"]
    print(f"{k:>14}: accuracy {'n/a' if acc is None else f'{acc:.2f}'} | "
          f"{sp[k]['ms_per_chunk']:.1f} ms/chunk, RTF {sp[k]['rtf']:.1f}")
  print(f"report: {paths['md']} ({report['timing_seconds']['total']:.0f} s)")
  return 0
