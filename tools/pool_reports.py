"""Pool distillation reports over runs (seeds, or repeats of one config).

  python tools/pool_reports.py runs/seed0 runs/seed1 runs/seed2 [--json]

One report scores ten held-out prompts, and a student's per-prompt outcome
flips whole (its 8 streams share a prompt and a student), so one run's
accuracy ratio moves by about +-0.25 with the seed. Several runs of the same
config, pooled, say more: every (run, prompt) pair is one paired
observation of teacher vs student, and the bootstrap interval resamples those
pairs (`report.paired_ratio_interval`).

Reads each workdir's `report.json` (written by `mrt-distill distill`); prints
a markdown table (one row per run, then the pooled row) or, with --json, the
same as JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from mrt_distill.distill.report import paired_ratio_interval


def load_rows(workdir: pathlib.Path) -> list[dict]:
  """The per-prompt rows of one run's report.json."""
  path = pathlib.Path(workdir) / "report.json"
  if not path.is_file():
    raise FileNotFoundError(
        f"{path} does not exist: give workdirs of finished `mrt-distill "
        f"distill` runs with the report on (not --no-report)")
  try:
    rows = json.loads(path.read_text())["rows"]
  except (json.JSONDecodeError, KeyError) as e:
    raise ValueError(f"{path} is not a distillation report ({e})") from None
  return rows


def summarize(rows: list[dict]) -> dict:
  """Means, ratios and paired 90% intervals over (run, prompt) rows."""
  col = lambda k: np.asarray([r[k] for r in rows], np.float64)
  ta, sa = col("teacher_accuracy"), col("student_accuracy")
  tf, sf = col("teacher_fd"), col("student_fd")
  out = {"pairs": len(rows),
         "teacher_accuracy": float(ta.mean()),
         "student_accuracy": float(sa.mean()),
         "teacher_fd": float(tf.mean()), "student_fd": float(sf.mean())}
  out["accuracy_ratio"] = (out["student_accuracy"] / out["teacher_accuracy"]
                           if out["teacher_accuracy"] else None)
  out["fd_ratio"] = out["student_fd"] / out["teacher_fd"]
  out["accuracy_ratio_ci90"] = paired_ratio_interval(ta, sa)
  out["fd_ratio_ci90"] = paired_ratio_interval(tf, sf)
  return out


def pool(workdirs: list[pathlib.Path]) -> dict:
  """{"runs": {workdir: summary}, "pooled": summary over all pairs}."""
  if not workdirs:
    raise ValueError("give at least one workdir")
  per = {str(w): load_rows(w) for w in workdirs}
  prompts = {w: [r["prompt"] for r in rows] for w, rows in per.items()}
  first = next(iter(prompts.values()))
  for w, p in prompts.items():
    if p != first:
      raise ValueError(
          f"{w} scored other held-out prompts ({p}) than {next(iter(prompts))}"
          f" ({first}): pool runs of one prompt set")
  return {"runs": {w: summarize(rows) for w, rows in per.items()},
          "pooled": summarize([r for rows in per.values() for r in rows])}


def _ci(ci) -> str:
  return "n/a" if ci is None else f"{ci[0]:.2f}-{ci[1]:.2f}"


def markdown(result: dict) -> str:
  lines = ["| run | teacher acc | student acc | ratio (90% CI) | teacher FD "
           "| student FD | ratio (90% CI) |",
           "|---|---|---|---|---|---|---|"]
  items = list(result["runs"].items()) + [("**pooled**", result["pooled"])]
  for name, s in items:
    ratio = ("n/a" if s["accuracy_ratio"] is None
             else f"{s['accuracy_ratio']:.2f}")
    lines.append(
        f"| {name} | {s['teacher_accuracy']:.3f} | {s['student_accuracy']:.3f}"
        f" | {ratio} ({_ci(s['accuracy_ratio_ci90'])}) | "
        f"{s['teacher_fd']:.1f} | {s['student_fd']:.1f} | "
        f"{s['fd_ratio']:.2f} ({_ci(s['fd_ratio_ci90'])}) |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdirs", nargs="+", type=pathlib.Path)
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  try:
    result = pool(args.workdirs)
  except (FileNotFoundError, ValueError) as e:
    print(f"pool_reports: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result, indent=2) if args.json else markdown(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
