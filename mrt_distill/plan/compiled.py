"""Checks of the estimate: XLA's memory_analysis() of the real jitted train
step and teacher decode, on CPU devices or compiled ahead of time for a
named TPU slice (needs libtpu, no TPU).
"""

from __future__ import annotations

from mrt_distill.plan.abstract import TrainSetup, abstract_batch, train_setup
from mrt_distill.plan.accelerators import Accelerator


# ---- compiled memory (checks) ------------------------------------------------
def compiled_train_memory(config, devices, mesh_shape=None,
                          setup: TrainSetup | None = None) -> dict[str, int]:
  """memory_analysis() of the real jitted train step over `devices`
  (CPU devices, or compile-only TPU devices), per device.

  Returns argument/output/alias/temp bytes and peak = argument + output -
  alias + temp.
  """
  import jax

  from mrt_distill.distill import train_step as T
  setup = setup or train_setup(config)
  shape = tuple(int(x) for x in (config.mesh_shape if mesh_shape is None
                                 else mesh_shape))
  mesh = T.make_mesh(shape, devices=devices)
  t_sh = T.param_shardings(setup.trainable_specs, mesh)
  f_sh = T.param_shardings(setup.frozen_specs, mesh)
  state_sh = T.state_shardings(setup.state, t_sh, f_sh, mesh)
  soft = bool(float(config.losses.get("token_kl", 0.0) or 0.0))
  step = T.jit_train_step(setup.step, state_sh, mesh,
                          coupled=setup.student_cfg.coupled, soft_tokens=soft)
  batch = abstract_batch(setup, int(config.train.batch))
  key = jax.ShapeDtypeStruct((2,), jax.numpy.uint32)
  mem = step.lower(setup.state, batch, key).compile().memory_analysis()
  out = {k: int(getattr(mem, f"{k}_size_in_bytes"))
         for k in ("argument", "output", "alias", "temp")}
  out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


class AotUnavailable(RuntimeError):
  """TPU ahead-of-time compilation is not possible here (why in message)."""


def tpu_topology_devices(accel: Accelerator, libtpu_dir: str | None = None):
  """Compile-only devices of a named TPU slice (needs libtpu, no TPU).

  libtpu_dir: a directory holding the `libtpu` package (e.g. from `pip
  install --target DIR libtpu==<the version jax[tpu] pins>`), put on
  sys.path. Run with JAX_PLATFORMS=cpu so jax does not look for a TPU.
  """
  import importlib
  import os
  import sys
  if libtpu_dir:
    if not os.path.isdir(os.path.join(libtpu_dir, "libtpu")):
      raise AotUnavailable(f"{libtpu_dir} holds no libtpu package")
    if libtpu_dir not in sys.path:
      sys.path.insert(0, libtpu_dir)
  try:
    importlib.import_module("libtpu")
  except ImportError:
    raise AotUnavailable(
        "libtpu is not importable, so this host cannot compile for a TPU "
        "topology; install it beside the venv (pip install --target DIR "
        "'libtpu==<version jax[tpu] pins>') and pass --libtpu DIR") from None
  # A compile-only client, not a TPU VM: no GCE metadata queries, and no
  # claim on /tmp/libtpu_lockfile (another compile may hold it).
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  x, y = (int(v) for v in accel.topology.split("x"))
  bounds = (x, y, 1) if accel.hosts == 1 else (2, 2, 1)
  try:
    topo = topologies.get_topology_desc(
        platform="tpu", topology_name=f"{accel.generation}:{accel.topology}",
        chip_config_name="default", chips_per_host_bounds=bounds,
        num_slices=1, wrap=(False, False, False))
  except Exception as e:  # noqa: BLE001 -- libtpu's errors vary by version
    raise AotUnavailable(f"libtpu could not describe {accel.name} "
                         f"({type(e).__name__}: {e})") from None
  return list(topo.devices)


def compiled_rollout_memory(config, device, sessions: int,
                            setup: TrainSetup | None = None) -> dict[str, int]:
  """memory_analysis() of the teacher's chunk decode (`teacher.decode`, the
  jit `generate_tokens` calls) for `sessions` sessions on one device, with
  CFG rows when the config guides. Same keys as `compiled_train_memory`."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import SingleDeviceSharding

  from mrt_distill.teacher import decode
  from mrt_distill.teacher.model import abstract_params
  setup = setup or train_setup(config)
  tcfg = setup.teacher_cfg
  use_cfg = float(config.sampling.guidance_weight) > 0
  rows = sessions * (2 if use_cfg else 1)
  sh = SingleDeviceSharding(device)
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sh)
  params = jax.tree.map(lambda x: spec(x.shape, x.dtype),
                        abstract_params(tcfg)[0])
  args = (params, spec((rows, tcfg.geometry.encoder_length), jnp.int32),
          spec((2,), jnp.uint32), spec((), jnp.float32),
          spec((), jnp.float32), spec((), jnp.int32), spec((), jnp.int32))
  mem = decode._decode_jit.lower(tcfg, use_cfg, True, False, *args).compile(
      ).memory_analysis()
  out = {k: int(getattr(mem, f"{k}_size_in_bytes"))
         for k in ("argument", "output", "alias", "temp")}
  out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def aot_train_memory(config, accel: Accelerator, libtpu_dir: str | None = None,
                     setup: TrainSetup | None = None) -> dict[str, int]:
  """memory_analysis() of the train step compiled for the named slice."""
  devices = tpu_topology_devices(accel, libtpu_dir)
  return compiled_train_memory(config, devices, setup=setup)


def aot_rollout_memory(config, accel: Accelerator, sessions: int,
                       libtpu_dir: str | None = None,
                       setup: TrainSetup | None = None) -> dict[str, int]:
  """memory_analysis() of the teacher decode compiled for one chip of the
  named slice."""
  device = tpu_topology_devices(accel, libtpu_dir)[0]
  return compiled_rollout_memory(config, device, sessions, setup=setup)
