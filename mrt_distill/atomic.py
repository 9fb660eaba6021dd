"""Atomic file writes: every file `mrt-distill` writes goes through here.

A writer (soundfile, matplotlib, numpy, plain text) writes to a temporary
name in the destination's own folder, the bytes are flushed to disk, and
only then is the temporary renamed over the destination (`os.replace`, one
atomic step on POSIX and Windows). A write that fails half way -- disk full,
an exception in the writer, Ctrl-C -- removes its temporary and leaves any
existing file of that name exactly as it was.

  with atomic.target("out.wav") as tmp:   # tmp: "out.wav"'s folder, same suffix
    soundfile.write(tmp, audio, rate)
  atomic.write_text("config.json", text)
  atomic.append_line("metrics.jsonl", row)  # appends; a failure truncates back

The temporary keeps the destination's suffix, since soundfile, matplotlib
and numpy pick the format (or add an extension) from the name.

Standard library only (imported by every command at start-up).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets

TMP_MARK = ".tmp-"


def _fsync(path: pathlib.Path) -> None:
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:  # some filesystems refuse fsync on read-only fds
    pass
  finally:
    os.close(fd)


def temp_name(path) -> pathlib.Path:
  """A fresh hidden name beside `path` with the same suffix:
  `dir/.NAME.tmp-<random>SUFFIX`."""
  path = pathlib.Path(path)
  return path.with_name(f".{path.stem}{TMP_MARK}{secrets.token_hex(4)}"
                        f"{path.suffix}")


@contextlib.contextmanager
def target(path):
  """Yields a temporary path beside `path` for a writer to fill; on success
  it replaces `path` atomically, on any exception it is removed and `path`
  is left untouched."""
  path = pathlib.Path(path)
  tmp = temp_name(path)
  try:
    yield tmp
    if not tmp.exists():
      raise FileNotFoundError(f"the writer did not create {tmp}")
    _fsync(tmp)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      tmp.unlink()
    raise


def write_bytes(path, data: bytes) -> pathlib.Path:
  path = pathlib.Path(path)
  with target(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
  return path


def write_text(path, text: str) -> pathlib.Path:
  return write_bytes(path, text.encode("utf-8"))


def append_line(path, line: str) -> None:
  """Appends one line (a newline is added) to a log such as metrics.jsonl.
  Appending keeps the log cheap; a failed append truncates the file back to
  its previous length, so the rows before it survive whole and no torn row
  is left for readers to trip on."""
  path = pathlib.Path(path)
  data = (line.rstrip("\n") + "\n").encode("utf-8")
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
  try:
    size = os.lseek(fd, 0, os.SEEK_END)
    try:
      view = memoryview(data)
      while view:
        view = view[os.write(fd, view):]
    except BaseException:
      with contextlib.suppress(OSError):
        os.ftruncate(fd, size)
      raise
  finally:
    os.close(fd)
