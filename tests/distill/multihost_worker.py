"""One process of the multi-host check (tests/distill/test_multihost.py).

  python multihost_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR

Runs the tiny student on a (data=2, fsdp=1, tensor=1) mesh over two devices:
either two JAX processes with one CPU device each (NUM_PROCESSES=2, joined
through a coordinator on 127.0.0.1:PORT, gloo collectives), or one process
with two fake CPU devices (NUM_PROCESSES=1, the caller sets XLA_FLAGS). Both
see the same three global batches (`TinySetup.batch(4, seed=step)`) and the
same rngs; each process feeds only its own rows (`distributed.global_batch`).

After three steps every process takes part in an orbax save. Process 0
alone writes the JSON item, so per-process host state goes into it gathered
(`allgather_json`); a per-process row buffer (the replay buffer's case) is
saved as one global array. Then step 4 runs twice: on the live state, and on
a fresh state restored from the checkpoint. WORKDIR/result_<pid>.json gets
the per-step metrics, both step-4 results, hashes of the trainable params
and what came back of the host state.

It is a separate script, not a pytest test: `jax.distributed.initialize`
must run before JAX creates devices, and each process needs its own
interpreter.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import pathlib
import signal
import sys

GLOBAL_BATCH = 4
TRAIN_STEPS = 3


def _optim():
  import ml_collections
  return ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, warmup_steps=0, decay_steps=10,
      final_lr_fraction=1.0, b1=0.9, b2=0.99, weight_decay=0.0,
      grad_clip=1.0))


def _params_digest(params) -> dict:
  """sha256 over every trainable leaf's bytes (tree order) and their sum;
  gathered to this host first (a leaf may live partly on other processes)."""
  import jax
  import numpy as np
  from jax.experimental import multihost_utils
  leaves = jax.tree.leaves(multihost_utils.process_allgather(params,
                                                             tiled=True))
  h = hashlib.sha256()
  for leaf in leaves:
    h.update(np.ascontiguousarray(leaf).tobytes())
  return {"sha256": h.hexdigest(),
          "sum": float(sum(np.sum(np.asarray(x, np.float64))
                           for x in leaves))}


def main(argv: list[str]) -> int:
  # The test sends SIGUSR1 before it kills a stuck worker: every thread's
  # Python stack then lands in the stderr it prints.
  faulthandler.register(signal.SIGUSR1, all_threads=True)
  pid, nproc, port = int(argv[1]), int(argv[2]), int(argv[3])
  workdir = pathlib.Path(argv[4])

  # Before anything creates JAX devices.
  from mrt_distill import distributed
  launch = distributed.initialize(
      coordinator=f"127.0.0.1:{port}" if nproc > 1 else None,
      num_processes=nproc, process_id=pid if nproc > 1 else None)

  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  from mrt_distill.distill import student as S
  from mrt_distill.distill import train_step as T
  from mrt_distill.distill.tiny import tiny_setup

  assert jax.process_index() == pid and jax.process_count() == nproc, (
      jax.process_index(), jax.process_count())
  assert jax.device_count() == 2, jax.devices()

  su = tiny_setup()
  mesh = T.make_mesh((2, 1, 1))
  t_specs, f_specs = S.split_params(S.student_partition_spec(su.model.cfg))
  t_sh = T.param_shardings(t_specs, mesh)
  f_sh = T.param_shardings(f_specs, mesh)
  bsh = T.batch_sharding(mesh)
  rep = T.replicated(mesh)
  opt = T.make_optimizer(_optim())
  # Host copies, identical on every process (same seed): the source of both
  # the first state and the fresh restore target.
  host_trainable, host_frozen = jax.device_get((su.trainable, su.frozen))

  def fresh_state():
    trainable = jax.device_put(host_trainable, t_sh)
    frozen = jax.device_put(host_frozen, f_sh)
    state = T.init_state(trainable, frozen, opt)
    st_sh = T.state_shardings(state, t_sh, f_sh, mesh)
    return jax.device_put(state, st_sh), st_sh

  state, st_sh = fresh_state()
  step_fn = T.jit_train_step(su.train_step(opt), st_sh, mesh)
  start, stop = distributed.local_slice(GLOBAL_BATCH, bsh)

  def run_step(state, step):
    full = su.batch(GLOBAL_BATCH, seed=step)  # the same global batch
    batch = distributed.global_batch(
        {k: full[k][start:stop] for k in T.BATCH_KEYS}, bsh)
    rng = jax.device_put(jax.random.PRNGKey(step), rep)
    state, metrics = step_fn(state, batch, rng)
    return state, {k: float(v) for k, v in jax.device_get(metrics).items()}

  metrics = []
  for step in range(TRAIN_STEPS):
    state, m = run_step(state, step)
    metrics.append(m)

  mngr = ocp.CheckpointManager(
      (workdir / "checkpoints").absolute(),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=2, create=True, enable_async_checkpointing=False))
  saved = {"step": state.step, "params": state.params,
           "opt_state": state.opt_state}
  # Host state that differs per process, as the real loop has it: JSON
  # (gathered, since orbax writes JSON from process 0 only) and a buffer of
  # rows (saved as one global array, each process owning its block).
  hosts = distributed.allgather_json({"process": pid, "rows": [start, stop]})
  buffer_rows = (np.arange(GLOBAL_BATCH * 3, dtype=np.float32).reshape(
      GLOBAL_BATCH, 3) * 1.5)[start:stop]
  buffer = distributed.global_batch({"rows": buffer_rows}, bsh)
  mngr.save(TRAIN_STEPS, args=ocp.args.Composite(
      state=ocp.args.StandardSave(saved),
      buffer=ocp.args.StandardSave(buffer),
      meta=ocp.args.JsonSave({"written_by": jax.process_index(),
                              "process_count": jax.process_count(),
                              "hosts": hosts})))
  mngr.wait_until_finished()

  state, continued = run_step(state, TRAIN_STEPS)
  digest_continued = _params_digest(state.params)
  del state

  target, _ = fresh_state()
  out = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(
          {"step": target.step, "params": target.params,
           "opt_state": target.opt_state}),
      buffer=ocp.args.StandardRestore(jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                         sharding=x.sharding), buffer)),
      meta=ocp.args.JsonRestore()))
  buffer_back = distributed.process_local(out["buffer"]["rows"])
  restored = target.replace(step=out["state"]["step"],
                            params=out["state"]["params"],
                            opt_state=out["state"]["opt_state"])
  restored_step = int(jax.device_get(restored.step))
  restored, after_restore = run_step(restored, TRAIN_STEPS)
  mngr.close()

  result = {
      "launch": launch.mode, "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
      "rows": [start, stop], "is_main": distributed.is_main(),
      "metrics": metrics, "restored_step": restored_step,
      "restored_meta": {k: v for k, v in out["meta"].items()
                        if k != "hosts"},
      "restored_hosts": out["meta"]["hosts"],
      "buffer_roundtrip": bool(np.array_equal(buffer_back, buffer_rows)),
      "step4_continued": continued, "step4_restored": after_restore,
      "params_continued": digest_continued,
      "params_restored": _params_digest(restored.params),
      "final_step": int(jax.device_get(restored.step)),
  }
  (workdir / f"result_{pid}.json").write_text(json.dumps(result, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
