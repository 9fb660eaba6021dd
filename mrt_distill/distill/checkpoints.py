"""Checkpoints of a distill run: what is saved, and resuming from them.

Owns the orbax `CheckpointManager` of `workdir/checkpoints` (`manager`) and
what one checkpoint holds (`save`): the student train state (trainable
params, optimizer state), the step, the host data state -- rollout sessions
and RNGs, the replay buffer, the grain prompt-iterator state -- and the
config's shape fingerprint. The teacher is referenced (world name and
`world.runtime.teacher_identity`), never copied.

Resume (`resume`, `restore`) continues from the newest checkpoint that can
be read: a damaged one is skipped, with a warning naming its step, for the
one before it, and moved aside to `workdir/checkpoints_unreadable/`
(`UNREADABLE_DIR`) rather than deleted; unfinished orbax writes are ignored
and left. A checkpoint written by another config is refused
(`CheckpointMismatchError`), also before the slow build
(`check_resume_config`); so is one distilled from another teacher (the
reference world rebuilt since): its LoRA factors would be merged into base
weights they were never trained against.
"""

from __future__ import annotations

import logging
import pathlib
from typing import TYPE_CHECKING

import jax
import numpy as np
import orbax.checkpoint as ocp

from mrt_distill import distributed
from mrt_distill import orbax_resume
from mrt_distill.distill import config_io, prompts as P
from mrt_distill.distill import train_step as T

if TYPE_CHECKING:
  from mrt_distill.distill.run import Run

log = logging.getLogger("mrt_distill.distill")


class CheckpointMismatchError(ValueError):
  """The workdir's checkpoint was written by another config."""


class CheckpointUnreadableError(ValueError):
  """Checkpoints exist in the workdir but none of them can be read."""


def check_teacher(saved: str | None, config, what: str, fix: str) -> None:
  """Refuses `what` (a checkpoint, a student file) distilled from another
  teacher than the one `config`'s world gives now (its
  `world.runtime.teacher_identity`, told without loading the world, so
  that the refusal comes before the slow build). Files written before the
  identity was recorded (`saved` None) are accepted."""
  if saved is None:
    return
  from mrt_distill.world.runtime import teacher_identity
  now = teacher_identity(config)
  if saved != now:
    raise CheckpointMismatchError(
        f"{what} was distilled from another teacher ({saved}) than this "
        f"world's ({now}), e.g. the reference world was rebuilt since; "
        f"{fix}")


def manager(workdir: pathlib.Path, config) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      (workdir / "checkpoints").absolute(),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=int(config.train.max_to_keep), create=True,
          enable_async_checkpointing=False))


def save(mngr, state: T.TrainState, run: Run, step: int, it_state: str):
  saved = {"step": state.step, "params": state.params,
           "opt_state": state.opt_state}
  host = {"rollout": run.rollout.get_state(),
          "replay": run.replay.get_state(), "prompt_iterator": it_state}
  meta = {
      "fingerprint": config_io.shape_fingerprint(run.config),
      # referenced, not copied
      "teacher": {"world": run.config.world,
                  "id": run.world.teacher_identity},
      **host,
  }
  replay = run.replay.arrays() or {"empty": np.zeros((1,), np.int32)}
  if jax.process_count() > 1:
    # orbax writes JSON from process 0 only: every process's data state
    # (prompt iterator, rollout sessions) goes in, gathered. The replay
    # buffer is host-local and refills after a multi-host resume.
    meta["hosts"] = distributed.allgather_json(
        {"rollout": host["rollout"], "prompt_iterator": it_state})
    replay = {"empty": np.zeros((1,), np.int32)}
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(saved), meta=ocp.args.JsonSave(meta),
      replay=ocp.args.StandardSave(replay)), force=True)
  mngr.wait_until_finished()


def read_meta(mngr, step: int) -> dict:
  return mngr.restore(step, args=ocp.args.Composite(
      meta=ocp.args.JsonRestore()))["meta"]


def check_fingerprint(meta: dict, config, step: int, directory) -> None:
  want = config_io.shape_fingerprint(config)
  # Keys newer than the checkpoint read as the value older configs meant;
  # the sha (over all keys) would differ for that reason alone.
  saved = lambda k: meta["fingerprint"].get(
      k, config_io.SHAPE_DEFAULTS.get(k))
  diff = {k: (saved(k), v) for k, v in want.items()
          if k != "sha" and saved(k) != v}
  if diff:
    raise CheckpointMismatchError(
        f"the checkpoint at step {step} in {directory} was written by "
        f"another config (checkpoint vs this run: {diff}); use a fresh "
        f"--workdir or the original config")
  check_teacher((meta.get("teacher") or {}).get("id"), config,
                f"the checkpoint at step {step} in {directory}",
                "use a fresh --workdir, or put back the teacher it was "
                "trained with")


def check_resume_config(workdir: pathlib.Path, config) -> None:
  """Refuses, before anything slow, a workdir whose newest readable
  checkpoint was written by a config of other shapes. Reads only the small
  JSON item and writes nothing; unreadable checkpoints are left to
  `resume`, which reports them."""
  directory = workdir / "checkpoints"
  if not directory.is_dir():
    return
  mngr = ocp.CheckpointManager(
      directory.absolute(),
      options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    for step in sorted(mngr.all_steps(), reverse=True):
      try:
        meta = read_meta(mngr, step)
      except Exception:  # damaged: resume names it and falls back
        continue
      check_fingerprint(meta, config, step, mngr.directory)
      return
  finally:
    mngr.close()


UNREADABLE_DIR = "checkpoints_unreadable"


def resume(mngr, workdir: pathlib.Path, restore_one):
  """Restores the newest checkpoint that can be read, falling back to older
  ones: -> (restore_one(step), step), or (None, None) with no checkpoints.

  A damaged newest checkpoint (a file lost or truncated: disk full, a host
  crash) must not cost the whole run, and must not be deleted either: each
  one that fails is logged with its step and error, and once an older one
  restores they are moved to `workdir/checkpoints_unreadable/`. Unfinished
  orbax writes (tmp folders) are never listed as steps; they are logged and
  left alone (`orbax_resume.newest_readable`). A checkpoint of another
  config is a user error, not damage: CheckpointMismatchError propagates
  without any fallback.

  Raises:
    CheckpointUnreadableError: checkpoints exist but none can be read (all
      left in place).
  """
  def none_readable(directory, detail):
    return CheckpointUnreadableError(
        f"no checkpoint in {directory} can be read ({detail}); they were "
        f"left in place: move that folder aside to start over in this "
        f"--workdir, or use a fresh --workdir")
  return orbax_resume.newest_readable(
      mngr, workdir / UNREADABLE_DIR, restore_one,
      user_errors=(CheckpointMismatchError,), none_readable=none_readable)


def restore(mngr, state: T.TrainState, run: Run, step: int):
  meta = read_meta(mngr, step)
  check_fingerprint(meta, run.config, step, mngr.directory)
  target = {"step": state.step, "params": state.params,
            "opt_state": state.opt_state}
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target),
      replay=ocp.args.StandardRestore()))
  saved = out["state"]
  if jax.process_count() > 1:
    hosts = meta.get("hosts") or []
    if len(hosts) != jax.process_count():
      raise CheckpointMismatchError(
          f"the checkpoint at step {step} in {mngr.directory} was written by "
          f"{len(hosts) or 1} process(es), this run has "
          f"{jax.process_count()}: resume with the same number of processes")
    meta.update(hosts[jax.process_index()])
  else:
    arrays = {k: np.asarray(v) for k, v in out["replay"].items()
              if k != "empty"}
    run.replay.set_state(meta["replay"], arrays)
  run.rollout.set_state(meta["rollout"])
  run.prompt_iter = P.restore_iterator(run.dataset, meta["prompt_iterator"])
  run.rollout.prompts = run.prompt_iter
  return state.replace(step=saved["step"], params=saved["params"],
                       opt_state=saved["opt_state"])
