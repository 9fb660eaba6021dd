"""The numeric config values of a distill run, checked before anything loads.

A value out of range does not fail loudly by itself: `train.steps=0` would
train nothing and export the untrained student with exit status 0, a
`log_every` of 0 divides by zero after the whole build, and a negative
replay capacity fails deep inside numpy. Each is refused here with the
allowed range and why.
"""

from __future__ import annotations

import math
import numbers

# (key, smallest, largest or None, why). Whole numbers unless noted in
# `_REAL`. The upper bounds are sizes that would not fit in memory (the
# replay buffer holds examples on the host; the report's audio is decoded
# whole), not preferences.
_LIMITS = (
    ("train.steps", 1, None, "0 trains nothing and would export an untrained "
     "student"),
    ("train.batch", 1, None, "a step needs at least one example"),
    ("train.log_every", 1, None, "it is a step interval"),
    ("train.eval_every", 1, None, "it is a step interval"),
    ("train.checkpoint_every", 1, None, "it is a step interval"),
    ("train.max_to_keep", 1, None, "resuming needs the newest checkpoint"),
    ("train.max_nonfinite", 0, None, "it counts skipped updates"),
    ("train.time_budget_minutes", 1e-3, None, "it is the training time"),
    ("rollout.batch", 1, None, "a rollout needs at least one stream"),
    ("rollout.session_chunks", 1, None, "a session is at least one chunk"),
    ("rollout.replay_capacity", 1, 1_000_000, "the replay buffer holds every "
     "example in host memory (a million reference-world examples is tens of "
     "GB)"),
    ("rollout.updates_per_rollout", 1, None, "it is a step interval"),
    ("report.samples_per_prompt", 1, 1000, "the report holds every sample's "
     "audio in memory"),
    ("report.seconds", 0.1, 600.0, "the report decodes each sample whole "
     "in memory; 10 minutes per sample is already far past a report's use"),
    ("student.feedback_noise", 0.0, 1.0, "it is the probability that a "
     "fed-back code is replaced"),
    ("student.own_picks", 0.0, 1.0, "it is the probability that a "
     "fed-back code is replaced by the student's own pick"),
    ("student.pick_temperature", 1e-3, 100.0, "the token head's logits are "
     "divided by it before each pick; 1 = as trained"),
)
_REAL = {"train.time_budget_minutes", "report.seconds",
         "student.feedback_noise", "student.own_picks",
         "student.pick_temperature"}


def _get(config, key):
  node = config
  for part in key.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def check(config) -> None:
  """Raises ValueError naming the key, its range and why, for the first
  numeric value out of range; keys the config does not have are skipped."""
  for key, lo, hi, why in _LIMITS:
    v = _get(config, key)
    if v is None:
      continue
    real = key in _REAL
    bad_type = (isinstance(v, bool) or not isinstance(v, numbers.Real)
                or (not real and not float(v).is_integer()))
    span = f">= {lo:g}" if hi is None else f"in {lo:g}..{hi:g}"
    if not real:
      span = f">= {lo}" if hi is None else f"in {lo}..{hi}"
    if bad_type or not math.isfinite(float(v)) or v < lo or (
        hi is not None and v > hi):
      what = "a number" if real else "a whole number"
      raise ValueError(
          f"config {key}={v!r}: must be {what} {span} ({why}); set e.g. "
          f"--config.{key}={_example(key, lo)}")


def _example(key, lo):
  defaults = {"train.steps": 600, "train.batch": 16, "train.log_every": 25,
              "train.eval_every": 100, "train.checkpoint_every": 100,
              "train.max_to_keep": 2, "train.max_nonfinite": 20,
              "train.time_budget_minutes": 25.0, "rollout.batch": 8,
              "rollout.session_chunks": 6, "rollout.replay_capacity": 512,
              "rollout.updates_per_rollout": 2,
              "report.samples_per_prompt": 8, "report.seconds": 10.0,
              "student.feedback_noise": 0.2, "student.own_picks": 0.5,
              "student.pick_temperature": 1.25}
  return defaults.get(key, lo)
