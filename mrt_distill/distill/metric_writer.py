"""The metrics log of a distill run: `workdir/metrics.jsonl`, one JSON row
per logged step, and TensorBoard event files when tensorboardX is installed.

A resumed run first drops the rows logged after the checkpoint it resumes
from, so each step appears once.
"""

from __future__ import annotations

import json
import logging
import pathlib

import jax

from mrt_distill import atomic

log = logging.getLogger("mrt_distill.distill")


class MetricWriter:
  """metrics.jsonl always; TensorBoard event files when tensorboardX is
  installed (process 0 only)."""

  def __init__(self, workdir: pathlib.Path, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.path = workdir / "metrics.jsonl"
    self.tb = None
    if self.enabled:
      self._drop_rows_after(resume_step)
      try:
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(str(workdir / "tensorboard"))
      except ImportError:  # optional: the jsonl has everything
        self.tb = None

  def _drop_rows_after(self, step: int) -> None:
    """A run killed after its last checkpoint logged steps that the resumed
    run logs again (bitwise the same): keep one row per step, so curves and
    readers do not see the stretch twice. Atomic (temp file + rename)."""
    if not self.path.exists():
      return
    lines = self.path.read_text().splitlines(keepends=True)
    keep = [l for l in lines if not l.strip()
            or json.loads(l).get("step", 0) <= step]
    if len(keep) < len(lines):
      atomic.write_text(self.path, "".join(keep))
      log.info("metrics.jsonl: dropped %d rows logged after step %d, the "
               "checkpoint this run resumes from", len(lines) - len(keep),
               step)

  def write(self, step: int, metrics: dict[str, float]):
    if not self.enabled:
      return
    # A failed append (disk full) truncates back: no torn row.
    atomic.append_line(self.path, json.dumps({"step": step, **metrics}))
    if self.tb is not None:
      for k, v in metrics.items():
        self.tb.add_scalar(k, v, step)
      self.tb.flush()

  def close(self):
    if self.tb is not None:
      self.tb.close()
