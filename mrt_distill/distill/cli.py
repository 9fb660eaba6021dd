"""`mrt-distill distill`: config + overrides -> train (or resume) -> report."""

from __future__ import annotations

import logging
import pathlib
import sys

import jax

from mrt_distill.distill import config_io, loop, report
from mrt_distill.distill import train_step as T

log = logging.getLogger("mrt_distill.distill")


def run(args) -> int:
  # Before anything creates JAX devices: a no-op for one process.
  from mrt_distill import distributed
  num = getattr(args, "num_processes", None)
  if num not in (None, "auto"):
    try:
      num = int(num)
    except ValueError:
      raise ValueError(f"--num-processes {num!r}: give a whole number or "
                       f"'auto'") from None
  distributed.initialize(getattr(args, "coordinator", None), num,
                         getattr(args, "process_id", None))
  if jax.process_count() > 1 and not distributed.is_main():
    logging.getLogger("mrt_distill").setLevel(logging.WARNING)
  config = config_io.load_config(args.config)
  config = config_io.apply_overrides(config, list(args.config_overrides))
  # The workdir is checked and locked for the whole command: training,
  # export and report (workdir.py); a refused start leaves nothing behind.
  from mrt_distill.distill import workdir as workdirs
  with workdirs.claim(args.workdir, main=distributed.is_main()) as claim:
    return _train_export_report(args, config, claim)


def _train_export_report(args, config, claim) -> int:
  try:
    summary, r, state = loop.train(config, args.workdir, claim=claim)
  except loop.NonFiniteError as e:
    # A diverged run is an outcome, not a crash: one line (step, terms,
    # the checkpoint kept), as main() prints caller mistakes.
    if getattr(args, "verbose", False):
      raise
    print(f"mrt-distill distill: error: {e}", file=sys.stderr)
    return 1
  log.info("trained %d steps in %.0f s (stopped: %s); trainable %.2f%%",
           summary["steps"], summary["train_seconds"], summary["stopped"],
           100 * summary["trainable_fraction"])
  if summary["stopped"] == "sigterm":
    log.warning("stopped by SIGTERM after a checkpoint; rerun the same "
                "command to resume")
    return 0
  # The parameter average, when the optimizer keeps one, is the student.
  state = state.replace(params=T.served_params(state))
  student_file = _export(config, state, args.workdir, summary)
  if args.no_report or not config.report.enabled:
    return 0
  rep = report.evaluate(r, state, samples=int(config.report.samples_per_prompt),
                        seconds=float(config.report.seconds),
                        gt_pieces=int(config.report.gt_pieces),
                        seed=int(config.seed))
  rep["train"] = summary
  md = report.write(rep, args.workdir)
  if student_file is not None:  # the report's figures travel with it
    _export(config, state, args.workdir, summary,
            {"report": rep["summary"], "speed": rep["speed"]})
  print(md.read_text())
  print(f"report: {md}")
  if student_file is not None:
    print(f"student: {student_file} (play it: mrt-distill generate "
          f"--checkpoint {student_file} --prompt funk --out funk.wav)")
  return 0


def _export(config, state, workdir, summary, extra=None):
  """workdir/student.npz: the trainable parameters and the config, what
  `generate`, `serve`, `eval` and Colab load (serve/bundle.py)."""
  params = state.params
  if jax.process_count() > 1:  # a collective: every process takes part
    from jax.experimental import multihost_utils
    params = multihost_utils.process_allgather(params, tiled=True)
  if jax.process_index() != 0:
    return None
  from mrt_distill.serve.bundle import export_student
  metrics = {"steps": summary["steps"], "stopped": summary["stopped"],
             **(extra or {})}
  return export_student(config, jax.device_get(params),
                        pathlib.Path(workdir) / "student.npz", metrics)
