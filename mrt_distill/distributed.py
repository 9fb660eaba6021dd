"""Multi-host JAX: start-up, who writes, and global batches from local rows.

A pod slice runs one Python process per host. Each process sees only its
own (local) devices, yet the mesh, the train state and every batch span all
of them. Three things must then agree between processes, and each is easy to
get silently wrong:

  1. The distributed runtime is up before anything touches a JAX backend
     (`jax.distributed.initialize` refuses to start later). `initialize`
     decides from flags, `MRT_*` variables or the Cloud TPU environment
     whether to start it, and is a no-op for one process, so the same command
     runs on a laptop, a single host and a pod.
  2. Each process feeds only its own rows of the global batch, and those rows
     assemble into one global `jax.Array` (`local_slice`, `global_batch`).
     Which rows are "its own" follows from the batch sharding, not from the
     process index alone, so both helpers ask the sharding.
  3. One process writes what must exist once (metrics, plots, JSON metadata):
     `is_main()`. Orbax checkpoints are collective: every process calls save
     and restore, and orbax writes JSON items from process 0 only. Host
     state that differs per process therefore goes into the JSON gathered
     (`allgather_json`), and per-process arrays (a replay buffer) as one
     global array that each process reads its block of (`process_local`).

On CPU the cross-process collectives are gloo over TCP, which is what lets
tests run two real JAX processes on one machine
(tests/distill/test_multihost.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np

ENV_COORDINATOR = "MRT_COORDINATOR"
ENV_NUM_PROCESSES = "MRT_NUM_PROCESSES"
ENV_PROCESS_ID = "MRT_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "MRT_LOCAL_DEVICE_IDS"

# Variables a multi-host Cloud TPU launcher sets (GKE JobSet, queued
# resources, Multislice). Their presence alone means "more than one host".
_TPU_MULTIHOST_ENV = ("MEGASCALE_COORDINATOR_ADDRESS", "MEGASCALE_NUM_SLICES")
# Comma-separated host lists: more than one entry means a multi-host slice.
_TPU_HOST_LISTS = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES")


@dataclasses.dataclass(frozen=True)
class Launch:
  """How this process was (or was not) joined to a multi-process run.

  mode: "single" (nothing started), "explicit" (coordinator, process count
    and id given) or "auto" (JAX's own cluster detection: Cloud TPU
    metadata, GKE, Slurm, Open MPI; a given coordinator is passed on).
  reason: where the decision came from, for the start-up log line.
  """

  mode: str
  reason: str
  coordinator: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None


def _int(name: str, value) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name}={value!r} is not an integer") from None


def _device_ids(value) -> tuple[int, ...] | None:
  if value is None or value == "":
    return None
  if isinstance(value, str):
    value = [v for v in value.split(",") if v.strip()]
  elif isinstance(value, int):
    value = [value]
  return tuple(_int("local_device_ids", v) for v in value)


def _cloud_tpu_reason(env: Mapping[str, str]) -> str | None:
  """Why this looks like a Cloud TPU host, or None."""
  for name in _TPU_MULTIHOST_ENV:
    if env.get(name):
      return f"{name} is set (multi-slice Cloud TPU)"
  for name in _TPU_HOST_LISTS:
    hosts = [h for h in env.get(name, "").split(",") if h.strip()]
    if len(hosts) > 1:
      return f"{name} lists {len(hosts)} hosts (multi-host Cloud TPU)"
  if env.get("TPU_ACCELERATOR_TYPE") and env.get("TPU_WORKER_ID"):
    return "TPU_ACCELERATOR_TYPE and TPU_WORKER_ID are set (Cloud TPU)"
  # A GCE TPU VM keeps its topology in the metadata server, not in the
  # environment: look for TPU chips on the PCI bus instead. JAX keeps the
  # list of TPU PCI ids (a Google vendor id alone also matches gVNIC network
  # cards on ordinary GCE VMs). JAX then reads the metadata itself, and
  # starts a one-process cluster on a single host.
  try:
    from jax._src import hardware_utils
    chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
  except (ImportError, AttributeError, OSError):
    chips = 0  # moved in a newer JAX: the variables above still work
  if chips:
    return f"{chips} TPU chips on the PCI bus (Cloud TPU VM)"
  return None


def resolve(coordinator: str | None = None,
            num_processes: int | str | None = None,
            process_id: int | None = None,
            local_device_ids: Sequence[int] | str | None = None,
            env: Mapping[str, str] | None = None) -> Launch:
  """Decide how to start, without starting anything (pure; testable).

  Arguments win over the environment (`MRT_COORDINATOR`,
  `MRT_NUM_PROCESSES`, `MRT_PROCESS_ID`, `MRT_LOCAL_DEVICE_IDS`).
  num_processes "auto" hands every choice to `jax.distributed.initialize()`;
  with no count at all a Cloud TPU environment also means "auto", anything
  else one process.
  """
  env = os.environ if env is None else env
  coordinator = coordinator or env.get(ENV_COORDINATOR) or None
  if num_processes is None:
    num_processes = env.get(ENV_NUM_PROCESSES) or None
  if process_id is None and env.get(ENV_PROCESS_ID, "") != "":
    process_id = env[ENV_PROCESS_ID]
  if local_device_ids is None:
    local_device_ids = env.get(ENV_LOCAL_DEVICE_IDS)
  ids = _device_ids(local_device_ids)

  if isinstance(num_processes, str) and num_processes.strip() == "auto":
    return Launch("auto", f"num_processes=auto ({ENV_NUM_PROCESSES} or "
                  "flag): JAX's cluster detection", coordinator,
                  local_device_ids=ids)
  if num_processes is None:
    tpu = _cloud_tpu_reason(env)
    if tpu is not None:
      return Launch("auto", tpu, coordinator, local_device_ids=ids)
    if coordinator is not None or process_id is not None:
      raise ValueError(
          f"a coordinator ({coordinator!r}) or process id ({process_id!r}) "
          f"was given without a process count: also set num_processes "
          f"(--num_processes or {ENV_NUM_PROCESSES})")
    return Launch("single", "no process count given and no Cloud TPU "
                  "environment found")
  n = _int("num_processes", num_processes)
  if n < 1:
    raise ValueError(f"num_processes={n} must be >= 1")
  if n == 1:
    return Launch("single", "num_processes=1", num_processes=1,
                  process_id=0)
  missing = [name for name, v in (("coordinator", coordinator),
                                  ("process_id", process_id)) if v is None]
  if missing:
    raise ValueError(
        f"num_processes={n} also needs {' and '.join(missing)}: pass them as "
        f"arguments or set {ENV_COORDINATOR}=host:port (process 0's address, "
        f"the same on every process) and {ENV_PROCESS_ID}=0..{n - 1} (a "
        f"different one per process)")
  pid = _int("process_id", process_id)
  if not 0 <= pid < n:
    raise ValueError(f"process_id={pid} must lie in 0..{n - 1} for "
                     f"num_processes={n}")
  if ":" not in coordinator:
    raise ValueError(f"coordinator {coordinator!r} needs a port: "
                     f"'host:port', e.g. '10.0.0.1:1234'")
  return Launch("explicit", f"{n} processes via {coordinator}", coordinator,
                n, pid, ids)


def _use_gloo_on_cpu() -> None:
  """Cross-process collectives on CPU: gloo over TCP, unless the user chose
  an implementation (e.g. 'mpi') already. Only read by the CPU client."""
  name = "jax_cpu_collectives_implementation"
  if name in jax.config.values and jax.config.values[name] is None:
    jax.config.update(name, "gloo")


def initialize(coordinator: str | None = None,
               num_processes: int | str | None = None,
               process_id: int | None = None,
               local_device_ids: Sequence[int] | str | None = None) -> Launch:
  """Join this process to a multi-process JAX run, or do nothing for one.

  Call it first, before any JAX computation or `jax.devices()`: the runtime
  cannot start after a backend exists. Calling it again after a successful
  start is a no-op. Returns the `Launch` it acted on.

  Raises:
    ValueError: an incomplete or inconsistent launch (names what to set).
    RuntimeError: a JAX backend already exists (call this earlier).
  """
  launch = resolve(coordinator, num_processes, process_id, local_device_ids)
  if launch.mode == "single" or jax.distributed.is_initialized():
    return launch
  from jax._src import xla_bridge  # no public "is a backend up?" yet
  if xla_bridge.backends_are_initialized():
    raise RuntimeError(
        f"cannot start the {launch.mode} multi-process run ({launch.reason}): "
        f"JAX already created its devices in this process. Call "
        f"mrt_distill.distributed.initialize() before anything that touches "
        f"JAX devices (jax.devices(), device_put, a jitted call)")
  _use_gloo_on_cpu()
  ids = list(launch.local_device_ids) if launch.local_device_ids else None
  if launch.mode == "auto":  # JAX fills in whatever is None
    jax.distributed.initialize(coordinator_address=launch.coordinator,
                               local_device_ids=ids)
  else:
    jax.distributed.initialize(coordinator_address=launch.coordinator,
                               num_processes=launch.num_processes,
                               process_id=launch.process_id,
                               local_device_ids=ids)
  return launch


def is_main() -> bool:
  """True in process 0: the one that logs and writes once-only files."""
  return jax.process_index() == 0


# ---- global batches from process-local rows ------------------------------
def _row_blocks(sharding, shape: tuple[int, ...]):
  """(all row blocks, this process's row blocks) of an array of `shape`
  laid out by `sharding`, as sorted unique (start, stop) pairs on axis 0."""
  def block(idx):
    s = idx[0] if idx else slice(None)
    start, stop, _ = s.indices(shape[0])
    return start, stop

  index_map = sharding.devices_indices_map(tuple(shape))
  every = sorted({block(i) for i in index_map.values()})
  local = sorted({block(i) for d, i in index_map.items()
                  if d.process_index == jax.process_index()})
  return every, local


def _batch_shards(sharding, trailing: tuple[int, ...] = ()) -> tuple[int, int]:
  """(row shards over all devices, distinct row shards on this process).

  Probed with one row per device: a row count that every split of axis 0 by
  the sharding divides."""
  probe = (len(sharding.device_set),) + tuple(trailing)
  every, local = _row_blocks(sharding, probe)
  return len(every), len(local)


def check_global_batch(global_batch_size: int, sharding=None) -> None:
  """A clear error when the global batch cannot be split evenly over the
  processes and their devices (every device gets the same whole rows)."""
  b, p, d = int(global_batch_size), jax.process_count(), \
      jax.local_device_count()
  if sharding is None:
    n = p * d
    where = f"{p} processes x {d} local devices = {n} batch shards"
  else:
    n, _ = _batch_shards(sharding)
    where = (f"the {n} batch shards of the mesh ({p} processes x {d} local "
             f"devices)")
  if b < 1 or b % n:
    up = max(n, -(-b // n) * n)
    raise ValueError(
        f"global batch size {b} does not divide over {where}: every batch "
        f"shard needs the same whole number of rows. Use a multiple of {n} "
        f"for config.train.batch (e.g. {up})")


def local_slice(global_batch_size: int, sharding=None) -> tuple[int, int]:
  """(start, stop): the rows of the global batch this process feeds.

  With `sharding` (the batch sharding, e.g. train_step.batch_sharding(mesh))
  the rows are those its local devices hold, which must be one contiguous
  block (true for meshes built over jax.devices() in order). Without it the
  batch is split evenly in process order.
  """
  check_global_batch(global_batch_size, sharding)
  b = int(global_batch_size)
  if sharding is None:
    per = b // jax.process_count()
    return jax.process_index() * per, (jax.process_index() + 1) * per
  _, local = _row_blocks(sharding, (b,))
  start, stop = local[0][0], local[-1][1]
  covered = sum(e - s for s, e in local)
  if covered != stop - start:
    raise ValueError(
        f"process {jax.process_index()} holds rows {local} of the global "
        f"batch: not one contiguous block. Build the mesh over the devices "
        f"in process order (train_step.make_mesh over jax.devices()) so each "
        f"process feeds one slice")
  return start, stop


def global_batch(local_arrays: Mapping[str, np.ndarray],
                 sharding) -> dict[str, jax.Array]:
  """This process's rows -> global jax.Arrays laid out by `sharding`.

  local_arrays: name -> rows [start:stop) of the global batch (see
    `local_slice`); every array has the same number of rows. For a
    replicated sharding pass the whole batch (identical on every process).
  sharding: one Sharding for every array, or a name -> Sharding mapping.

  With one process this equals device_put, so the host loop can call it
  unconditionally.
  """
  out = {}
  for name, value in local_arrays.items():
    sh = sharding[name] if isinstance(sharding, Mapping) else sharding
    x = np.asarray(value)
    if x.ndim == 0:
      raise ValueError(f"batch array {name!r} is a scalar: a batch needs a "
                       f"leading row axis")
    shards, local = _batch_shards(sh, x.shape[1:])
    if x.shape[0] % local:
      raise ValueError(
          f"batch array {name!r}: process {jax.process_index()} passed "
          f"{x.shape[0]} rows, which do not split over the {local} row "
          f"shards its devices hold; pass a multiple of {local} rows (the "
          f"global batch must be a multiple of {shards})")
    rows = x.shape[0] // local * shards
    out[name] = jax.make_array_from_process_local_data(
        sh, x, (rows,) + x.shape[1:])
  return out


def process_local(x: jax.Array) -> np.ndarray:
  """This process's rows of a global array: the inverse of `global_batch`
  (e.g. a per-process replay buffer restored from a checkpoint). The whole
  array when it is replicated."""
  if x.ndim == 0:
    return np.asarray(x.addressable_shards[0].data)
  blocks = {}
  for shard in x.addressable_shards:
    start, stop, _ = shard.index[0].indices(x.shape[0])
    blocks.setdefault((start, stop), shard.data)
  keys = sorted(blocks)
  if any(a[1] != b[0] for a, b in zip(keys, keys[1:])):
    raise ValueError(f"process {jax.process_index()} holds rows {keys} of "
                     f"an array of {x.shape[0]} rows: not one contiguous "
                     f"block")
  return np.concatenate([np.asarray(blocks[k]) for k in keys])


def allgather_json(obj) -> list:
  """Every process's JSON-able `obj`, in process order, on every process.

  For host state that differs per process (prompt iterator, rollout RNGs,
  replay cursors): orbax writes a JSON item from process 0 only, so the
  checkpoint stores this gathered list and each process takes its own entry
  on restore. A collective: every process must call it.
  """
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  if jax.process_count() == 1:
    return [json.loads(data.tobytes())]
  from jax.experimental import multihost_utils
  sizes = np.asarray(multihost_utils.process_allgather(
      np.array([data.size], np.int32))).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  every = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(every[i, :n].tobytes()) for i, n in enumerate(sizes)]
