"""Reading a student from disk as carefully as `distill` resumes a run.

`generate`, `serve`, `eval` and the Colab player load students through
`bundle.load_student`, which comes here for the two kinds of file and gets
back what to build: the distillation config, the trainable parameters and
where they came from (`Found`); this module builds no model and does not
import `bundle`.

* a student file (`student.npz`, written by `bundle.export_student`):
  every array is read in full, so the zip's CRC-32 catches a flipped bit;
  an empty, truncated or damaged file is one `StudentLoadError` naming the
  file and how to get it back;
* a distill workdir: the newest checkpoint that can be read, falling back
  -- with a warning naming each unreadable step -- to the one before it, or
  to the exported `student.npz` beside them when that is newer than the
  next checkpoint (or no checkpoint can be read), saying which it used. A
  reader never moves or deletes anything (a run may be writing there; the
  next `distill` sets damaged checkpoints aside itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pathlib
import zipfile
from typing import Any

log = logging.getLogger("mrt_distill.serve")

FORMAT = "mrt_distill.student/v1"
EXPORTED = "student.npz"


class StudentLoadError(ValueError):
  """A student checkpoint that cannot be served (missing, other geometry)."""


@dataclasses.dataclass
class Found:
  """A student read from disk, checked, not yet built."""
  config: Any  # ml_collections.ConfigDict: the distillation config
  trainable: Any  # the trainable parameters (numpy)
  source: str  # the file or workdir@step it came from
  label: str | None = None  # what `source` reads as when it was a fallback


def _first_line(e: BaseException, limit: int = 200) -> str:
  text = (str(e).strip().splitlines() or [""])[0]
  return f"{type(e).__name__}: {text[:limit]}" if text else type(e).__name__


def _error(text: str):
  return StudentLoadError(text)


def unflat(flat: dict[str, Any]):
  """{"a/b": array} -> the nested parameter tree."""
  from flax import traverse_util
  return traverse_util.unflatten_dict(
      {tuple(k.split("/")): v for k, v in flat.items()})


def _export_again(path: pathlib.Path) -> str:
  """How to get a student file back."""
  run = path.parent
  if (run / "checkpoints").is_dir():
    return (f"load its run instead (--checkpoint {run}), or write it again "
            f"by rerunning `mrt-distill distill --workdir {run}` with the "
            f"run's config")
  return ("write it again by rerunning `mrt-distill distill --workdir DIR` "
          "on the run that trained it, or give that distill workdir")


def read(path) -> tuple[dict, Any]:
  """A student file -> (meta, trainable params as numpy arrays).

  Raises:
    StudentLoadError: empty, truncated, damaged, another format, or not a
      student file; the message names the file and the fix.
  """
  import numpy as np
  path = pathlib.Path(path)
  try:
    if path.stat().st_size == 0:
      raise ValueError("the file is empty")
    if not zipfile.is_zipfile(path):
      raise ValueError("it is not a whole .npz (zip) archive: cut short, "
                       "or another kind of file")
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(z["__meta__"].tobytes().decode())
      if not isinstance(meta, dict):
        raise ValueError("its metadata is not a JSON object")
      # Reading every array in full checks each member's CRC-32.
      flat = {k[len("params/"):]: z[k] for k in z.files
              if k.startswith("params/")}
  except Exception as e:  # damage shows up as many error types
    raise _error(
        f"{path} is damaged or not a student file written by export_student "
        f"({_first_line(e)}); {_export_again(path)}") from None
  if meta.get("format") != FORMAT:
    raise _error(f"{path}: format {meta.get('format')!r}, expected "
                 f"{FORMAT!r}")
  if not isinstance(meta.get("config"), dict):
    raise _error(f"{path} has no config inside (format {FORMAT}, "
                 f"but not written whole); {_export_again(path)}")
  return meta, unflat(flat)


def check_teacher(saved: str | None, config, what: str) -> None:
  """Refuses a student distilled from another teacher than the one its
  config's world gives now (`distill.checkpoints.check_teacher`)."""
  from mrt_distill.distill import checkpoints
  try:
    checkpoints.check_teacher(saved, config, what,
                              "distil a new student for this teacher, or "
                              "put back the teacher it was trained with")
  except checkpoints.CheckpointMismatchError as e:
    raise StudentLoadError(str(e)) from None


def check_noise_layout(meta: dict, config, path: pathlib.Path) -> None:
  """A coupled student reads its input noise in one layout; a file written
  for another layout would play garbage, so it is refused by name."""
  if not config.get("student", {}).get("coupled", False):
    return
  from mrt_distill import coupling
  saved = meta.get("noise_layout")
  if saved != coupling.NOISE_LAYOUT:
    raise StudentLoadError(
        f"{path}: a coupled student trained for noise layout {saved!r}, but "
        f"this code draws {coupling.NOISE_LAYOUT!r}; use the mrt_distill "
        f"version it was trained with, or distil a new student")


def from_npz(path) -> Found:
  """A student file -> Found, its teacher and noise layout checked."""
  import ml_collections
  path = pathlib.Path(path)
  meta, trainable = read(path)  # damage -> one clear error
  config = ml_collections.ConfigDict(meta["config"])
  check_teacher(meta.get("teacher"), config, f"student {path.name!r}")
  check_noise_layout(meta, config, path)
  return Found(config, trainable, str(path))


def _exported_step(path: pathlib.Path) -> int | None:
  """The training step a student file was exported at (its metrics), None
  when it is absent or unreadable."""
  import numpy as np
  try:
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(z["__meta__"].tobytes().decode())
    return int(meta["metrics"]["steps"])
  except Exception:
    return None


@contextlib.contextmanager
def _manager(workdir: pathlib.Path):
  """A read-only orbax manager of workdir/checkpoints (creates nothing)."""
  import orbax.checkpoint as ocp
  absl = logging.getLogger("absl")
  level = absl.level
  absl.setLevel(logging.ERROR)  # read_only's notes on its own options
  try:
    mngr = ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(read_only=True))
  finally:
    absl.setLevel(level)
  try:
    yield mngr
  finally:
    mngr.close()


def _restore(workdir: pathlib.Path, step: int):
  """-> (trainable params, teacher id or None) of one checkpoint."""
  import orbax.checkpoint as ocp
  from mrt_distill.distill import checkpoints
  with _manager(workdir) as mngr:
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))
    try:
      meta = checkpoints.read_meta(mngr, step)
    except Exception:  # no metadata item: written before it was recorded
      meta = {}
  return out["state"]["params"], (meta.get("teacher") or {}).get("id")


def _config(workdir: pathlib.Path):
  import ml_collections
  cfg_path = workdir / "config.json"
  if not cfg_path.is_file():
    raise _error(f"{workdir} is not a distill workdir (no config.json); "
                 f"give one written by `mrt-distill distill --workdir DIR`")
  try:
    return ml_collections.ConfigDict(json.loads(cfg_path.read_text()))
  except Exception as e:
    raise _error(
        f"{cfg_path} cannot be read ({_first_line(e)}); distill writes it "
        f"when a run starts: rerun `mrt-distill distill --workdir {workdir}` "
        f"with the run's config, or load its {EXPORTED}") from None


def from_workdir(workdir: pathlib.Path, step: int | None = None) -> Found:
  """A distill workdir -> Found (see the module docstring). step: that
  checkpoint and no other (`workdir@STEP`, for a curve over training)."""
  workdir = pathlib.Path(workdir)
  exported = workdir / EXPORTED
  if step is not None:
    config = _config(workdir)
    with _manager(workdir) as mngr:
      kept = sorted(mngr.all_steps())
    if step not in kept:
      raise _error(
          f"{workdir} has no checkpoint at step {step} (kept: "
          f"{', '.join(map(str, kept)) or 'none'}); give one of those, or "
          f"train with a larger --config.train.max_to_keep to keep more")
    try:
      trainable, teacher = _restore(workdir, step)
    except Exception as e:  # damage shows up as many error types
      raise _error(
          f"the checkpoint at step {step} in {workdir / 'checkpoints'} "
          f"cannot be read ({_first_line(e)}); give another step (kept: "
          f"{', '.join(map(str, kept))}) or the workdir alone (it falls "
          f"back to a readable checkpoint)") from None
    check_teacher(teacher, config, f"the checkpoint at step {step} in "
                  f"{workdir}")
    return Found(config, trainable, f"{workdir}@{step}")
  try:
    config = _config(workdir)
  except StudentLoadError as e:
    if not exported.is_file() or not (workdir / "config.json").exists():
      raise
    log.warning("%s; using the exported %s instead", e, exported)
    return from_npz(exported)
  with _manager(workdir) as mngr:
    steps = sorted(mngr.all_steps(), reverse=True)
  failures: list[tuple[int, str]] = []
  exported_step = _exported_step(exported) if exported.is_file() else None

  def use_exported(why: str):
    log.warning("using the exported %s (step %s): %s", exported,
                exported_step, why)
    found = from_npz(exported)
    found.label = f"{exported} (fallback: {why})"
    return found

  for step in steps:
    if failures and exported_step is not None and exported_step >= step:
      break
    try:
      trainable, teacher = _restore(workdir, step)
    except Exception as e:  # damage shows up as many error types
      failures.append((step, _first_line(e)))
      log.warning("the checkpoint at step %d in %s cannot be read (%s); "
                  "trying the one before it", step, workdir / "checkpoints",
                  failures[-1][1])
      continue
    check_teacher(teacher, config,
                  f"the checkpoint at step {step} in {workdir}")
    if failures:
      log.warning("using the checkpoint at step %d in %s (unreadable: "
                  "step(s) %s; left in place)", step, workdir,
                  ", ".join(str(s) for s, _ in failures))
    return Found(config, trainable, f"{workdir}@{step}")
  bad = ", ".join(str(s) for s, _ in failures)
  if exported_step is not None or (exported.is_file() and not failures):
    return use_exported(f"the checkpoint(s) at step(s) {bad} cannot be read"
                        if failures else "the workdir has no checkpoint")
  if failures:
    detail = "; ".join(f"step {s}: {m}" for s, m in failures)
    also = (f"; its {EXPORTED} cannot be read either"
            if exported.is_file() else f" and there is no {EXPORTED}")
    raise _error(
        f"no checkpoint in {workdir / 'checkpoints'} can be read ({detail})"
        f"{also}. Rerun `mrt-distill distill --workdir {workdir}` (it sets "
        f"damaged checkpoints aside and resumes from the newest good one), "
        f"or give another student")
  raise _error(f"{workdir} has no checkpoint yet: train with "
               f"`mrt-distill distill --workdir {workdir}`")
