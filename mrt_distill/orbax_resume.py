"""Resuming from the newest orbax checkpoint that can be read.

Shared by the distill loop (`distill/checkpoints.py`) and the reference
world's build stages (`world/training/stage_checkpoints.py`): both keep an orbax
`CheckpointManager` and, after a crash, a full disk or a killed run, must
continue from the newest checkpoint that restores, without ever deleting
one.

A damaged checkpoint (a file lost or truncated) is logged with its step and
error; once an older one restores, the damaged ones are moved to an
`aside` folder so that the run can save those steps again. Unfinished
orbax writes (`<step>.orbax-checkpoint-tmp-*` folders) are never listed as
steps by orbax; they are logged and left alone.
"""

from __future__ import annotations

import logging
import pathlib
import re
from typing import Callable, TypeVar

import jax

log = logging.getLogger("mrt_distill")

R = TypeVar("R")

# An orbax save writes `<step>.orbax-checkpoint-tmp-<time>` and renames it to
# `<step>` when complete; a run killed in between leaves the tmp folder.
UNFINISHED = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")


def first_line(e: BaseException, limit: int = 300) -> str:
  text = (str(e).strip().splitlines() or [""])[0]
  return f"{type(e).__name__}: {text[:limit]}"


def move_aside(aside: pathlib.Path, directory: pathlib.Path,
               steps: list[int]) -> pathlib.Path:
  """Moves unreadable step folders out of the manager's sight (so the run
  can save those steps again), keeping every byte: nothing is deleted."""
  if jax.process_index() == 0:
    aside.mkdir(parents=True, exist_ok=True)
    for step in steps:
      dst, n = aside / str(step), 0
      while dst.exists():
        n += 1
        dst = aside / f"{step}-{n}"
      (directory / str(step)).rename(dst)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("mrt_distill_checkpoint_fallback")
  return aside


def newest_readable(mngr, aside: pathlib.Path,
                    restore_one: Callable[[int], R], *,
                    user_errors: tuple[type[BaseException], ...] = (),
                    none_readable: Callable[[pathlib.Path, str],
                                            BaseException]
                    ) -> tuple[R | None, int | None]:
  """-> (restore_one(step), step) for the newest step that restores, or
  (None, None) when there is no checkpoint.

  Args:
    mngr: the orbax CheckpointManager.
    aside: where damaged step folders go once an older one restores.
    restore_one: step -> restored value; raising means damaged.
    user_errors: exception types that are the user's mistake (another
      config, another teacher), not damage: they propagate at once.
    none_readable: (directory, "step N: error; ...") -> the exception to
      raise when checkpoints exist but none restores (all left in place).
  """
  directory = pathlib.Path(str(mngr.directory))
  steps = sorted(mngr.all_steps(), reverse=True)
  for p in sorted(directory.iterdir()):
    m = UNFINISHED.match(p.name)
    if m and (not steps or int(m.group(1)) > steps[0]):
      log.warning(
          "ignoring the unfinished checkpoint write for step %s (%s: the "
          "run stopped while saving it; left in place); %s", m.group(1),
          p.name, f"resuming from step {steps[0]}" if steps
          else "no finished checkpoint, starting fresh")
  failures = []
  for step in steps:
    try:
      restored = restore_one(step)
    except user_errors:
      raise
    except Exception as e:  # damage shows up as many error types
      failures.append((step, first_line(e)))
      log.warning("the checkpoint at step %d in %s cannot be read (%s); "
                  "trying the one before it", step, directory, failures[-1][1])
      continue
    if failures:
      bad = [s for s, _ in failures]
      moved = move_aside(aside, directory, bad)
      mngr.reload()
      log.warning("skipped the unreadable checkpoint(s) at step(s) %s and "
                  "resumed from step %d; moved them to %s (nothing deleted)",
                  ", ".join(map(str, bad)), step, moved)
    return restored, step
  if failures:
    detail = "; ".join(f"step {s}: {msg}" for s, msg in failures)
    raise none_readable(directory, detail)
  return None, None
