"""Loss ablation: the default distillation with each loss removed once.

  python tools/ablate_losses.py --minutes 8 --out runs/ablation --json

Runs `mrt-distill distill` (same config, seed and prompts) once with every
loss and once per loss with that loss's weight set to 0, each with the same
training time budget, and collects the end-of-run reports (judge style
accuracy, Fréchet distance, log-mel distance, all vs the teacher on the same
held-out prompts) into `ablation.json` and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time


def active_terms(config_spec: str) -> tuple[str, ...]:
  """The loss terms the config turns on (each is removed once)."""
  from mrt_distill.distill.config_io import load_config
  from mrt_distill.distill.losses import LossWeights
  return LossWeights(**load_config(config_spec).losses.to_dict()).active()


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="reference_cpu")
  p.add_argument("--minutes", type=float, default=8.0,
                 help="training time budget per run")
  p.add_argument("--samples", type=int, default=8,
                 help="report streams per held-out prompt")
  p.add_argument("--out", default="runs/ablation")
  p.add_argument("--only", default="",
                 help="comma-separated run names (full,no_latent,...)")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  runs = {"full": []}
  runs.update({f"no_{t}": [f"--config.losses.{t}=0.0"]
               for t in active_terms(args.config)})
  if args.only:
    runs = {k: v for k, v in runs.items() if k in args.only.split(",")}
  rows = {}
  for name, extra in runs.items():
    workdir = out / name
    cmd = [sys.executable, "-m", "mrt_distill.main", "distill",
           "--config", args.config, "--workdir", str(workdir),
           f"--config.train.time_budget_minutes={args.minutes}",
           f"--config.report.samples_per_prompt={args.samples}", *extra]
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
      print(proc.stderr[-2000:], file=sys.stderr)
      return proc.returncode
    rep = json.loads((workdir / "report.json").read_text())
    rows[name] = {"summary": rep["summary"], "steps": rep["train"]["steps"],
                  "wall_seconds": time.perf_counter() - t0}
    print(f"[{name}] {json.dumps(rows[name]['summary'])}", flush=True)
  (out / "ablation.json").write_text(json.dumps(rows, indent=2))
  lines = ["| run | steps | student acc | teacher acc | acc ratio | student FD "
           "| teacher FD | FD ratio | student log-mel dB |",
           "|---|---|---|---|---|---|---|---|---|"]
  f = lambda x, nd=3: "n/a" if x is None else f"{x:.{nd}f}"
  for name, r in rows.items():
    s = r["summary"]
    lines.append(
        f"| {name} | {r['steps']} | {f(s['student_accuracy'])} | "
        f"{f(s['teacher_accuracy'])} | {f(s['accuracy_ratio'], 2)} | "
        f"{f(s['student_fd'], 1)} | {f(s['teacher_fd'], 1)} | "
        f"{f(s['fd_ratio'], 2)} | {f(s['student_logmel_db'], 2)} |")
  (out / "ablation.md").write_text("\n".join(lines) + "\n")
  print(json.dumps(rows, indent=2) if args.json else "\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
