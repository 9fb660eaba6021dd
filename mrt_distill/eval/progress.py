"""Progress of an evaluation run: stream-chunks per model kind, with rate
and ETA in the log."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("mrt_distill.eval")


class Progress:
  """Counts generated stream-chunks per model kind and logs rate and ETA.

  The time between two updates is charged to the kind of the second, so
  the analysis between batches is in the rates and the ETA covers it.
  """

  def __init__(self, totals: dict[str, int], every_s: float = 10.0):
    self.totals = dict(totals)
    self.done = {k: 0 for k in totals}
    self.secs = {k: 0.0 for k in totals}
    # The first update of a kind carries its compile: kept out of the rate.
    self._warm = {k: (0, 0.0) for k in totals}
    self.t0 = self._last = self._logged = time.perf_counter()
    self.every_s, self.stage = every_s, ""

  def set_stage(self, stage: str):
    self.stage = stage
    self._last = self._logged = time.perf_counter()
    log.info("%s", self.line())

  def __call__(self, kind: str, n: int):
    now = time.perf_counter()
    if not self.done.get(kind):
      self._warm[kind] = (n, now - self._last)
    self.done[kind] = self.done.get(kind, 0) + n
    self.secs[kind] = self.secs.get(kind, 0.0) + now - self._last
    self._last = now
    if now - self._logged >= self.every_s:
      self._logged = now
      log.info("%s", self.line())

  def rate(self, kind: str) -> float | None:
    """Stream-chunks per second after the first (compiling) update."""
    n0, s0 = self._warm.get(kind, (0, 0.0))
    d, s = self.done.get(kind, 0) - n0, self.secs.get(kind, 0.0) - s0
    return d / s if d > 0 and s > 0 else None

  def eta_s(self) -> float | None:
    eta = 0.0
    for k, total in self.totals.items():
      left = total - self.done.get(k, 0)
      if left <= 0:
        continue
      r = self.rate(k)
      if r is None:
        return None
      eta += left / r
    return eta

  def line(self) -> str:
    parts = []
    for k, total in self.totals.items():
      d, r = self.done.get(k, 0), self.rate(k)
      rate = "-" if r is None else f"{r:.1f}/s"
      parts.append(f"{k} {d}/{total} chunks ({rate})")
    all_done = sum(self.done.values())
    all_total = max(1, sum(self.totals.values()))
    eta = self.eta_s()
    return (f"eval [{self.stage}] " + ", ".join(parts)
            + f" | {100 * all_done / all_total:.0f}% | elapsed "
            f"{hms(time.perf_counter() - self.t0)} | ETA "
            + ("?" if eta is None else hms(eta)))


def hms(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
