"""Per-chip HBM plan of a distillation config before a slice is paid for.

  python tools/plan_memory.py --config configs/mrt_large_v6e.py
  python tools/plan_memory.py --config configs/mrt_base_v5e.py --remat
  python tools/plan_memory.py --config configs/mrt_large_v6e.py \
      --rollout-placement sharded --config.train.batch=512
  python tools/plan_memory.py --config configs/mrt_base_v5e.py \
      --libtpu /opt/libtpu_aot           # + the train step compiled for v5e-16
  python tools/plan_memory.py --config configs/reference_cpu.py:tiny \
      --cpu-devices 8 --mesh 2,2,2       # estimate vs the compiled CPU step

Prints a table (state, train step, teacher rollout; GiB per chip) and a
verdict against the chip's HBM (v5e 16 GiB, v6e 32 GiB). Exit status: 0 when
the plan fits (FITS or TIGHT), 1 when it does not (the message names the
peak, the HBM and the largest parts), 2 for bad arguments. See
mrt_distill/plan/__init__.py for what is counted and why.

Ahead-of-time compilation: when libtpu is importable (or --libtpu DIR holds
it: `pip install --target DIR "libtpu==<the version jax[tpu] pins>"`), the
real train step is also compiled for the named slice from this CPU host and
its memory_analysis() is printed beside the estimate. Otherwise the output
says the numbers are the planner's estimate. A large config takes minutes to
compile on a laptop CPU; --no-aot skips it.

--cpu-devices N compiles the real train step on N fake CPU devices instead
(XLA_FLAGS is set before jax loads) and prints estimate / compiled: the check
tests/test_plan_memory.py runs on the tiny config.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def parse(argv):
  p = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Override any config value with --config.KEY=VALUE.")
  p.add_argument("--config", required=True, help="path or shipped name, "
                 "optionally :arg")
  p.add_argument("--tpu", help="accelerator type (default: from the config's "
                 "name and mesh), e.g. v5litepod-16, v6e-64")
  p.add_argument("--mesh", help="data,fsdp,tensor (default: the config's)")
  p.add_argument("--remat", action="store_true",
                 help="plan per-layer remat (a what-if; the model has none)")
  p.add_argument("--rollout-placement", default="host-device",
                 choices=("host-device", "sharded"),
                 help="host-device: each host decodes its sessions on one "
                 "chip (loop.py today); sharded: over the host's chips")
  p.add_argument("--libtpu", help="a directory holding the libtpu package, "
                 "for ahead-of-time TPU compilation")
  p.add_argument("--no-aot", action="store_true",
                 help="never compile for the TPU topology")
  p.add_argument("--cpu-devices", type=int, help="compile on N fake CPU "
                 "devices and compare (no TPU plan)")
  p.add_argument("--json", action="store_true")
  args, unknown = p.parse_known_args(argv)
  bad = [u for u in unknown if not u.startswith("--config.")]
  if bad:
    p.error(f"unrecognized arguments: {' '.join(bad)}")
  args.overrides = [u[len("--config."):] for u in unknown]
  return args


def main(argv=None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  # Before jax loads: fake CPU devices, and never look for an attached TPU
  # (TPU plans compile against a described topology, not a local chip).
  if args.cpu_devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                               f"--xla_force_host_platform_device_count="
                               f"{args.cpu_devices}").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

  from mrt_distill import plan
  from mrt_distill.distill import config_io

  try:
    config = config_io.apply_overrides(config_io.load_config(args.config),
                                       args.overrides)
    mesh = (tuple(int(x) for x in args.mesh.split(",")) if args.mesh
            else None)
    if args.cpu_devices:
      return _cpu_check(plan, config, mesh, args)
    accel = plan.accelerator(args.tpu) if args.tpu else None
    p = plan.estimate(config, accel, mesh_shape=mesh, remat=args.remat,
                      rollout_placement=args.rollout_placement)
  except (ValueError, plan.UnknownAcceleratorError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  aot = _aot(plan, config, p, args)
  if args.json:
    print(json.dumps({**p.to_dict(), "aot": aot}, indent=2))
  else:
    print(plan.format_table(p))
    print(_aot_lines(plan, p, aot))
  try:
    plan.check(p)
  except plan.DoesNotFitError as e:
    print(f"refused: {e}", file=sys.stderr)
    return 1
  if p.verdict == "TIGHT":
    print(f"warning: peak is {100 * p.fraction:.0f}% of HBM (> "
          f"{100 * plan.FIT_MARGIN:.0f}%): XLA fragmentation or the runtime's "
          f"reserve may push it over", file=sys.stderr)
  return 0


def _aot(plan, config, p, args) -> dict:
  """{'status': 'compiled' | 'unavailable' | 'skipped', ...}."""
  if args.no_aot or args.remat or (args.mesh and tuple(
      int(x) for x in args.mesh.split(",")) != tuple(config.mesh_shape)):
    why = ("--no-aot" if args.no_aot else "--remat is a what-if the model "
           "does not implement" if args.remat else "--mesh differs from the "
           "config's mesh")
    return {"status": "skipped", "reason": why}
  try:
    # The decode first: it compiles in a minute, the train step in many.
    roll = plan.aot_rollout_memory(config, p.accelerator,
                                   p.rollout_sessions_per_chip, args.libtpu,
                                   setup=p.setup)
    mem = plan.aot_train_memory(config, p.accelerator, args.libtpu,
                                setup=p.setup)
  except plan.AotUnavailable as e:
    return {"status": "unavailable", "reason": str(e)}
  return {"status": "compiled", "memory": mem, "rollout_memory": roll,
          "estimate_over_compiled": p.train_peak / max(mem["peak"], 1),
          "rollout_estimate_over_compiled":
              p.rollout_total / max(roll["peak"], 1)}


def _aot_lines(plan, p, aot) -> str:
  if aot["status"] != "compiled":
    return (f" ahead-of-time compile: {aot['status']} ({aot['reason']}); the "
            f"numbers above are the planner's estimate")
  m, r = aot["memory"], aot["rollout_memory"]
  return (f" ahead-of-time compile for {p.accelerator.name} (XLA "
          f"memory_analysis per chip):\n"
          f"  train step: arguments {plan.gib(m['argument'])}, temporaries "
          f"{plan.gib(m['temp'])}, peak {plan.gib(m['peak'])}; planned state "
          f"+ train step {plan.gib(p.train_peak)} = "
          f"{aot['estimate_over_compiled']:.2f} x compiled\n"
          f"  teacher decode ({p.rollout_sessions_per_chip} sessions): peak "
          f"{plan.gib(r['peak'])}; planned rollout "
          f"{plan.gib(p.rollout_total)} = "
          f"{aot['rollout_estimate_over_compiled']:.2f} x compiled")


def _cpu_check(plan, config, mesh, args) -> int:
  import jax
  mesh = mesh or (len(jax.devices()), 1, 1)
  n = mesh[0] * mesh[1] * mesh[2]
  setup = plan.train_setup(config)
  p = plan.estimate(config, None, mesh_shape=mesh, hbm_bytes=2**40,
                    setup=setup)
  mem = plan.compiled_train_memory(config, jax.devices()[:n], mesh_shape=mesh,
                                   setup=setup)
  roll = plan.compiled_rollout_memory(config, jax.devices()[0],
                                      p.rollout_sessions_per_chip, setup=setup)
  ratio = p.train_peak / max(mem["peak"], 1)
  out = {"config": config.get("config_source", config.name), "mesh": mesh,
         "estimate": {"state": p.state_total, "train": p.train,
                      "train_peak": p.train_peak, "rollout": p.rollout,
                      "rollout_total": p.rollout_total},
         "compiled": mem, "estimate_over_compiled": ratio,
         "rollout_compiled": roll,
         "rollout_estimate_over_compiled": p.rollout_total / max(
             roll["peak"], 1)}
  if args.json:
    print(json.dumps(out, indent=2))
  else:
    print(f"{out['config']} on {n} CPU device(s), mesh {mesh}: estimate "
          f"{p.train_peak / 2**20:.2f} MiB per device (state "
          f"{p.state_total / 2**20:.2f} + train step "
          f"{p.train_total / 2**20:.2f}), compiled peak "
          f"{mem['peak'] / 2**20:.2f} MiB (arguments "
          f"{mem['argument'] / 2**20:.2f}, temporaries "
          f"{mem['temp'] / 2**20:.2f}) -> estimate / compiled = {ratio:.2f}"
          f"; teacher decode of {p.rollout_sessions_per_chip} sessions on "
          f"one device: estimate {p.rollout_total / 2**20:.2f} MiB, compiled "
          f"{roll['peak'] / 2**20:.2f} MiB -> "
          f"{out['rollout_estimate_over_compiled']:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
