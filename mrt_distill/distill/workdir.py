"""What a `mrt-distill distill --workdir` may be, and who is using it.

A workdir is one of
  * new: the folder does not exist (it is created, with its parents);
  * empty: an existing folder with nothing in it;
  * a run of this program: it holds the marker file `MARKER`, written when a
    run first writes into it (or, for runs made before the marker existed,
    a `checkpoints/` folder; the marker is added on the next run).
Anything else -- a folder of the user's own files, a file -- is refused
before anything is written, so `distill` never trains into (and overwrites
files of) a folder that is not its own.

While a run uses a workdir it holds a lock: an exclusive `flock` on the
folder itself (the kernel drops it when the process dies, however it dies)
and `LOCK_FILE`, a small JSON note of the holder's PID, host and start
time. A second run is refused, naming that PID and host. A note left by a
process that died without removing it (SIGKILL, a crash) is stale: the
next run takes the lock over with a warning naming the dead holder. A note
from another host whose lock cannot be seen from here is refused with the
fix (remove the note once that run is over).

A refused or failed start leaves nothing behind: the lock note is removed,
and the folders created for a new workdir are removed again unless the run
got as far as writing into them (`Claim.start`).

Only process 0 of a multi-process run locks and marks the workdir; the
other processes share it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import pathlib
import socket

from mrt_distill import atomic

log = logging.getLogger("mrt_distill.distill")

MARKER = ".mrt-distill-run"
LOCK_FILE = ".mrt-distill-lock"
MARKER_FORMAT = "mrt_distill.workdir/v1"


class WorkdirError(ValueError):
  """A workdir that is not this program's, or is in use."""


def kind(workdir) -> str:
  """'new' | 'empty' | 'run' | 'legacy-run' (a run from before the marker).

  Raises:
    WorkdirError: a file, or a folder that holds anything else.
  """
  workdir = pathlib.Path(workdir)
  if not workdir.exists():
    if workdir.is_symlink():
      raise WorkdirError(
          f"workdir {str(workdir)!r} is a broken symbolic link; remove it or "
          f"give another --workdir")
    return "new"
  if not workdir.is_dir():
    raise WorkdirError(
        f"workdir {str(workdir)!r} is a file; give a folder (it holds "
        f"checkpoints/, metrics.jsonl and the report)")
  if (workdir / MARKER).is_file():
    return "run"
  if (workdir / "checkpoints").is_dir():
    return "legacy-run"
  entries = sorted(p.name for p in workdir.iterdir() if p.name != LOCK_FILE)
  if not entries:
    return "empty"
  shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
  raise WorkdirError(
      f"workdir {str(workdir)!r} holds files that are not a mrt-distill run "
      f"({shown}; no {MARKER} marker): distill writes config.json, "
      f"metrics.jsonl, student.npz and more there and would overwrite files "
      f"of those names. Give a new or empty folder, e.g. --workdir "
      f"{str(workdir / 'run')!r}")


def _holder(path: pathlib.Path) -> dict | None:
  try:
    text = path.read_text()
  except OSError:
    return None
  try:
    info = json.loads(text)
  except ValueError:
    return {"pid": "?", "host": "?", "raw": text[:80]}
  return info if isinstance(info, dict) else {"pid": "?", "host": "?"}


def _describe(info: dict | None) -> str:
  if not info:
    return "another process (its lock note is not written yet)"
  started = f", started {info['started']}" if info.get("started") else ""
  return f"PID {info.get('pid')} on host {info.get('host')}{started}"


class Claim:
  """A held workdir (see `claim`)."""

  def __init__(self, workdir: pathlib.Path, kind_: str, main: bool):
    self.workdir = workdir
    self.kind = kind_
    self.main = main
    self.created: list[pathlib.Path] = []  # folders made here, outermost first
    self.started = False
    self._fd: int | None = None

  def _mkdirs(self) -> None:
    missing = []
    p = self.workdir
    while not p.exists():
      missing.append(p)
      p = p.parent
    for d in reversed(missing):
      try:
        d.mkdir()
      except FileExistsError:
        continue
      self.created.append(d)

  def _lock(self) -> None:
    fd = os.open(self.workdir, os.O_RDONLY)
    try:
      import fcntl
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no flock (Windows): the note alone
      pass
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirError(
          f"workdir {str(self.workdir)!r} is in use by "
          f"{_describe(_holder(self.workdir / LOCK_FILE))}: two runs in one "
          f"workdir would mix their checkpoints and metrics. Wait for it to "
          f"finish (or stop it), or give another --workdir") from None
    self._fd = fd
    note = self.workdir / LOCK_FILE
    old = _holder(note) if note.exists() else None
    host = socket.gethostname()
    if old is not None:
      if old.get("host") not in (host, "?"):
        # Its process cannot be checked from here, nor is a flock always
        # seen across machines on a shared filesystem.
        self._unlock(remove_note=False)  # the note is that run's
        raise WorkdirError(
            f"workdir {str(self.workdir)!r} is locked by {_describe(old)}, "
            f"another machine, which this one cannot check: if that run is "
            f"over, delete {str(note)!r} and rerun; else give another "
            f"--workdir")
      log.warning(
          "workdir %s: taking over the stale lock of %s (that process is no "
          "longer running; it stopped without releasing the lock)",
          self.workdir, _describe(old))
    atomic.write_text(note, json.dumps({
        "pid": os.getpid(), "host": host,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")}) + "\n")

  def _unlock(self, remove_note: bool = True) -> None:
    if self._fd is None:
      return
    if remove_note:
      with contextlib.suppress(OSError):
        (self.workdir / LOCK_FILE).unlink()
    os.close(self._fd)  # releases the flock
    self._fd = None

  def start(self) -> None:
    """The run is about to write into the workdir: mark it as a run (so a
    rerun recognises it, and a failure from here on keeps it)."""
    self.started = True
    if not self.main:
      self.workdir.mkdir(parents=True, exist_ok=True)
    elif self.kind != "run":
      atomic.write_text(self.workdir / MARKER, json.dumps({
          "format": MARKER_FORMAT,
          "note": "a mrt-distill distill workdir (checkpoints, metrics, "
                  "report, student.npz); rerun distill here to resume"},
          indent=2) + "\n")
      self.kind = "run"

  def release(self, ok: bool) -> None:
    self._unlock()
    if ok or self.started:
      return
    for d in reversed(self.created):  # innermost first; only empty ones
      with contextlib.suppress(OSError):
        d.rmdir()


@contextlib.contextmanager
def claim(workdir, main: bool = True):
  """Checks and locks `workdir` for one run (see the module docstring);
  yields a Claim. Call `Claim.start()` before the first write into it.

  Raises:
    WorkdirError: not new, empty or a run; or in use by another run.
  """
  workdir = pathlib.Path(workdir)
  c = Claim(workdir, kind(workdir), main)
  if not main:  # process 0 checks, locks and marks
    yield c
    return
  c._mkdirs()
  try:
    c._lock()
  except BaseException:
    c.release(ok=False)
    raise
  ok = False
  try:
    yield c
    ok = True
  finally:
    c.release(ok)
