"""`mrt-distill distill`: config + overrides -> train (or resume) -> report."""

from __future__ import annotations

import logging
import sys

from mrt_distill.distill import config_io, loop, report

log = logging.getLogger("mrt_distill.distill")


def run(args) -> int:
  config = config_io.load_config(args.config)
  config = config_io.apply_overrides(config, list(args.config_overrides))
  try:
    summary, r, state = loop.train(config, args.workdir)
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
  if args.no_report or not config.report.enabled:
    return 0
  rep = report.evaluate(r, state, samples=int(config.report.samples_per_prompt),
                        seconds=float(config.report.seconds),
                        gt_pieces=int(config.report.gt_pieces),
                        seed=int(config.seed))
  rep["train"] = summary
  md = report.write(rep, args.workdir)
  print(md.read_text())
  print(f"report: {md}")
  return 0
