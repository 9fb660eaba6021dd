"""`PushLoop`: the notebook player's thread that moves finished chunks from
a started session to a `Sink`.

The producer that keeps chunks ready is the session's own thread
(`StreamSession.start`, `lead_chunks`); `PushLoop` only moves finished
chunks from `session.read` to a `Sink`. A sink is where audio goes: the
browser, a list or a wav file in tests and headless runs, so the same
loop, widgets and controls run without a browser.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from mrt_distill.serve.colab_sinks import Sink

log = logging.getLogger(__name__)


# ---- the push loop -----------------------------------------------------------
class PushLoop:
  """A thread that moves finished chunks from a started session to a sink.

  The session's producer thread keeps `lead_chunks` chunks ready; this loop
  takes one whenever the sink has room and writes it. It ends on `stop()`,
  when a finite sink is done, or when the session's producer has stopped and
  no whole chunk is left. `on_status(loop)` is called about every
  `status_seconds` from the loop's thread.
  """

  def __init__(self, session, sink: Sink, *, read_timeout: float = 300.0,
               status_seconds: float = 1.0,
               on_status: Callable[["PushLoop"], Any] | None = None):
    if getattr(session, "batch", 1) != 1:
      raise ValueError(f"PushLoop plays one stream; the session has batch "
                       f"{session.batch}")
    self.session, self.sink = session, sink
    self.read_timeout, self.status_seconds = read_timeout, status_seconds
    self.on_status = on_status
    self.chunks = 0
    self.error: BaseException | None = None
    self._stop = threading.Event()
    self._done = threading.Event()
    self._thread: threading.Thread | None = None
    self._last_status = 0.0

  @property
  def running(self) -> bool:
    return self._thread is not None and self._thread.is_alive()

  def start(self) -> "PushLoop":
    if self._thread is not None:
      raise RuntimeError("a PushLoop runs once; make a new one")
    self._thread = threading.Thread(target=self._run, daemon=True,
                                    name="mrt-colab-push")
    self._thread.start()
    return self

  def request_stop(self) -> None:
    """Ask the loop to end; a chunk it is waiting for will not be written."""
    self._stop.set()

  def stop(self, timeout: float | None = 10.0) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout)

  def wait(self, timeout: float | None = None) -> bool:
    """Block until the loop ends; False on timeout."""
    return self._done.wait(timeout)

  def _status(self, force: bool = False) -> None:
    now = time.monotonic()
    if self.on_status is None or (not force and now - self._last_status
                                  < self.status_seconds):
      return
    self._last_status = now
    try:
      self.on_status(self)
    except Exception:  # noqa: BLE001 -- a display glitch never stops music
      log.exception("push loop status callback failed")

  def _whole_chunk_left(self) -> bool:
    s = self.session
    return s.stats()["lead_seconds"] * s.sample_rate >= s.chunk_samples - 0.5

  def _run(self) -> None:
    s, n = self.session, self.session.chunk_samples
    try:
      while not self._stop.is_set() and not self.sink.done:
        if not self.sink.wait_room(0.05):
          self._status()
          continue
        if not s.running and not self._whole_chunk_left():
          break
        chunk = s.read(n, timeout=self.read_timeout)
        if self._stop.is_set():
          break  # stopped while waiting: this chunk is not played
        self.sink.write(chunk, {"index": self.chunks,
                                "sample_rate": s.sample_rate})
        self.chunks += 1
        self._status()
    except Exception as e:  # noqa: BLE001 -- kept for stats() and status
      self.error = e
      log.exception("push loop failed")
    finally:
      self._done.set()
      self._status(force=True)
