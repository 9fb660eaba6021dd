"""A plan as text: the fixed-width table and the refusal of one that does
not fit (`check`). Its JSON form is `Plan.to_dict`.
"""

from __future__ import annotations

import math

from mrt_distill.plan.accelerators import GIB
from mrt_distill.plan.chip_plan import DoesNotFitError, Plan


def check(plan: Plan) -> None:
  """Raises DoesNotFitError (with the numbers) when the plan does not fit."""
  if plan.fits:
    return
  big = sorted(list(plan.state.items()) + list(plan.train.items())
               + list(plan.rollout.items()), key=lambda kv: -kv[1])[:3]
  where = ("train step" if plan.train_total >= plan.rollout_total
           else "teacher rollout")
  raise DoesNotFitError(
      f"{plan.config_name} on {_target(plan)}: peak {gib(plan.peak)} per "
      f"chip > {gib(plan.hbm_bytes)} HBM ({100 * plan.fraction:.0f}%), in "
      f"the {where}; largest parts: "
      + ", ".join(f"{k} {gib(v)}" for k, v in big)
      + ". Lower train.batch (per chip now "
      f"{plan.batch_per_chip}) or rollout.batch, raise mesh fsdp, or use a "
      f"larger slice")


def gib(n: float) -> str:
  return f"{n / GIB:.2f} GiB"


def _target(plan: Plan) -> str:
  m = "x".join(str(v) for v in plan.mesh.values())
  return (f"{plan.accelerator.name} (mesh data x fsdp x tensor = {m})"
          if plan.accelerator else f"{math.prod(plan.mesh.values())} devices"
          f" (mesh {m})")


def format_table(plan: Plan) -> str:
  """The plan as a fixed-width table (GiB and MiB per chip)."""
  lines = [f"{plan.config_name} on {_target(plan)}: "
           f"{plan.batch_per_chip} examples per chip, HBM "
           f"{gib(plan.hbm_bytes)} per chip"]
  width = 56

  def row(name, n):
    lines.append(f"  {name:<{width}} {n / GIB:>8.3f} GiB {n / 2**20:>10.1f} "
                 f"MiB")

  def section(title, rows, total):
    lines.append(f" {title}")
    for k, v in rows.items():
      row(k, v)
    row("= " + title.split(" (")[0] + " total", total)

  section("state (all run)", plan.state, plan.state_total)
  section("train step (transient)", plan.train, plan.train_total)
  section("teacher rollout (transient)", plan.rollout, plan.rollout_total)
  lines.append(f" {'peak = state + max(train step, rollout)':<{width + 1}} "
               f"{plan.peak / GIB:>8.3f} GiB {plan.peak / 2**20:>10.1f} MiB "
               f"({100 * plan.fraction:.0f}% of HBM) -> {plan.verdict}")
  if plan.today_rollout_peak is not None:
    lines.append(f" with rollouts as loop.py places them today "
                 f"(host-device): peak {gib(plan.today_rollout_peak)} "
                 f"({100 * plan.today_rollout_peak / plan.hbm_bytes:.0f}%)")
  lines.append(" host RAM per host (not HBM): " + ", ".join(
      f"{k} {gib(v)}" for k, v in plan.host_ram.items()))
  for n in plan.notes:
    lines.append(f" note: {n}")
  return "\n".join(lines)
