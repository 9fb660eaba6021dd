"""Resumable stages of the reference-world build: recipe and checkpoints.

A full build (`tools/build_reference_world.py`) takes hours on a 2-core CPU,
so it has to survive being stopped: each long stage saves its whole
training state every few minutes under the build folder, and rerunning the
same command continues from there. The layout of a build folder (default
`~/.cache/mrt_distill/world_build`, or MRT_WORLD_BUILD_DIR; never inside
the checkout, so that a `git clean` cannot lose hours of training):

  <stage>/recipe.json        what decides the stage's weights (settings,
                             seed, the sha256 of the weights it reads)
  <stage>/checkpoints/<step>/  orbax checkpoints of a running stage
  <stage>/checkpoints_unreadable/  damaged ones, moved aside (never deleted)
  <stage>/done.json          the stage finished: its outputs' sha256
  assets/                    the built weights, installed by --install

Guarantees (tests/world/test_build_resume.py):
* a stage stopped at any step and resumed gives bit-identical weights to an
  uninterrupted run (the state holds parameters, optimiser, quantiser, the
  data stream's generator state and the next batch);
* a stage resumed with a changed recipe is refused, naming each changed
  setting (`check_recipe`);
* a damaged newest checkpoint is skipped for the one before it
  (`orbax_resume.newest_readable`);
* a disk that fills while saving raises `BuildDiskFullError`, naming the
  folder; orbax writes a checkpoint under a temporary name and renames it
  when complete, so the last good checkpoint is intact.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import time
from typing import Any

import orbax.checkpoint as ocp

from mrt_distill import atomic
from mrt_distill import orbax_resume

log = logging.getLogger("mrt_distill.world.build")

DEFAULT_BUILD_DIR = pathlib.Path("~/.cache/mrt_distill/world_build")


def build_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
  """The build folder: `path`, else $MRT_WORLD_BUILD_DIR, else the
  default under the user's cache."""
  chosen = path or os.environ.get("MRT_WORLD_BUILD_DIR") or DEFAULT_BUILD_DIR
  return pathlib.Path(chosen).expanduser().resolve()


class RecipeMismatchError(ValueError):
  """A build folder holds a build of another recipe."""


class StageUnreadableError(RuntimeError):
  """A stage has checkpoints, none of which can be read."""


class BuildDiskFullError(OSError):
  """The disk filled while a stage saved its checkpoint."""


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


def recipe_diff(saved: dict, wanted: dict) -> dict[str, tuple]:
  """{setting: (saved, wanted)} for every setting that differs."""
  a, b = _flatten(saved), _flatten(wanted)
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k)}


def check_recipe(directory: pathlib.Path, recipe: dict) -> None:
  """Records `recipe` in a new build folder, or refuses one that was
  started with another recipe (its checkpoints would mix two builds)."""
  path = directory / "recipe.json"
  wanted = json.loads(json.dumps(recipe))  # tuples -> lists, as saved
  if path.exists():
    try:
      saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
      raise RecipeMismatchError(
          f"{path} cannot be read ({orbax_resume.first_line(e)}); it says "
          f"which recipe the build in {directory} follows: put it back, or "
          f"build in a new folder with --build-dir") from None
    diff = recipe_diff(saved, wanted)
    if diff:
      changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in
                          diff.items())
      raise RecipeMismatchError(
          f"{directory} was started with another recipe (changed: "
          f"{changes}); rerun with the original settings to resume it, or "
          f"pass --build-dir NEW_FOLDER to start a new build (nothing in "
          f"{directory} is deleted)")
    return
  directory.mkdir(parents=True, exist_ok=True)
  atomic.write_text(path, json.dumps(wanted, indent=2, sort_keys=True) + "\n")


def _is_disk_full(e: BaseException) -> bool:
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


class StageCheckpoints:
  """The orbax checkpoints of one running stage.

  Args:
    directory: the stage's folder (`<build>/<stage>`).
    every_s: seconds between saves (`due`).
    keep: checkpoints kept (older readable ones are rotated out by orbax;
      damaged ones are moved aside, never deleted).
  """

  def __init__(self, directory: pathlib.Path, every_s: float = 300.0,
               keep: int = 2):
    self.directory = pathlib.Path(directory)
    self.every_s = float(every_s)
    (self.directory / "checkpoints").mkdir(parents=True, exist_ok=True)
    self._mngr = ocp.CheckpointManager(
        (self.directory / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self._last_save = time.time()
    # Wall seconds the stage has taken, across resumed runs: each checkpoint
    # records the total up to it, and a resumed run counts on from the one it
    # restored (work after an interrupted run's newest checkpoint is redone,
    # so it is counted once). `elapsed()`; the build's stage timings.
    self._t0 = time.time()
    self._base = 0.0

  def elapsed(self) -> float:
    """Wall seconds of this stage so far, over all its runs."""
    return self._base + time.time() - self._t0

  def restore(self, target) -> tuple[Any, dict | None, int | None]:
    """-> (state shaped like `target`, meta, step) of the newest readable
    checkpoint, or (None, None, None) when the stage has none."""
    def restore_one(step):
      out = self._mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target),
          meta=ocp.args.JsonRestore()))
      return out["state"], out["meta"]

    def none_readable(directory, detail):
      return StageUnreadableError(
          f"no checkpoint in {directory} can be read ({detail}); they were "
          f"left in place: move {self.directory} aside to run this stage "
          f"from the start")
    restored, step = orbax_resume.newest_readable(
        self._mngr, self.directory / "checkpoints_unreadable", restore_one,
        none_readable=none_readable)
    self._last_save = time.time()
    if restored is None:
      return None, None, None
    meta = dict(restored[1])
    self._base = float(meta.pop("stage_seconds", 0.0))
    self._t0 = time.time()
    return restored[0], meta, step

  def due(self) -> bool:
    return time.time() - self._last_save >= self.every_s

  def save(self, step: int, state, meta: dict) -> None:
    """Saves `state` (a pytree of arrays) and `meta` (JSON) as `step`."""
    try:
      self._mngr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          meta=ocp.args.JsonSave({**meta, "stage_seconds": self.elapsed()})),
                      force=True)
      self._mngr.wait_until_finished()
    except Exception as e:
      if not _is_disk_full(e):
        raise
      good = [s for s in self._mngr.all_steps() if s != step]
      raise BuildDiskFullError(
          errno.ENOSPC,
          f"the disk filled while saving step {step} of "
          f"{self.directory.name} in {self.directory}; free some space and "
          f"rerun the same command: it resumes from "
          + (f"step {max(good)}, which is intact" if good
             else "the start of the stage")) from None
    self._last_save = time.time()
    log.info("[%s] checkpoint at step %d in %s", self.directory.name, step,
             self.directory / "checkpoints")

  def close(self) -> None:
    self._mngr.close()


def mark_done(directory: pathlib.Path, outputs: dict[str, pathlib.Path],
              extra: dict | None = None) -> None:
  """Records that a stage finished, with its outputs' sha256."""
  from mrt_distill.checksummed import sha256_file
  directory.mkdir(parents=True, exist_ok=True)
  record = {"outputs": {name: {"path": str(p), "sha256": sha256_file(p)}
                        for name, p in outputs.items()}, **(extra or {})}
  atomic.write_text(directory / "done.json",
                    json.dumps(record, indent=2) + "\n")


def is_done(directory: pathlib.Path) -> bool:
  """The stage finished and its outputs are still the ones it wrote."""
  from mrt_distill.checksummed import sha256_file
  path = directory / "done.json"
  if not path.exists():
    return False
  try:
    record = json.loads(path.read_text())
    return all(pathlib.Path(o["path"]).exists()
               and sha256_file(pathlib.Path(o["path"])) == o["sha256"]
               for o in record["outputs"].values())
  except (OSError, ValueError, KeyError):
    return False
