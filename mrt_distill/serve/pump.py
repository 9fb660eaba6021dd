"""Session -> clients: `Pump` reads the session at real-time pace on its own
thread and hands each (T, channels) float32 chunk to a sink; `level` gives
its peak and RMS for the meter; `Outbox` is one client's bounded outgoing
queue (its oldest audio dropped when the client falls behind).

No network, no event loop, no JAX.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)


# ---- client outboxes ---------------------------------------------------------

class Outbox:
  """Bounded queue of one client's outgoing messages (no I/O, no loop).

  Audio is droppable: when `max_audio` frames wait, the oldest goes
  (counted) so the client hears the freshest audio. `streak` counts drops
  since the client last emptied its audio queue; `too_slow` says when it
  reached `max_drop_streak` (a client that stalls briefly and catches up
  starts again from zero; one that stays behind is disconnected). JSON
  replies jump the audio queue (the newest `max_control` are kept); a status
  replaces the one still waiting, since only the newest matters.
  """

  def __init__(self, max_audio: int = 16, max_drop_streak: int = 64,
               max_control: int = 64):
    if max_audio < 1 or max_drop_streak < 1:
      raise ValueError("max_audio and max_drop_streak must be >= 1")
    self.max_audio, self.max_drop_streak = max_audio, max_drop_streak
    self._audio: collections.deque = collections.deque()
    self._control: collections.deque = collections.deque(maxlen=max_control)
    self._status: str | None = None
    self.dropped = 0
    self.streak = 0
    self.sent_audio = 0

  def push_audio(self, frame: bytes) -> None:
    if len(self._audio) >= self.max_audio:
      self._audio.popleft()
      self.dropped += 1
      self.streak += 1
    self._audio.append(frame)

  def push_control(self, text: str) -> None:
    self._control.append(text)

  def push_status(self, text: str) -> None:
    self._status = text

  def pop(self) -> str | bytes | None:
    if self._control:
      return self._control.popleft()
    if self._status is not None:
      text, self._status = self._status, None
      return text
    if self._audio:
      frame = self._audio.popleft()
      self.sent_audio += 1
      if not self._audio:
        self.streak = 0
      return frame
    return None

  @property
  def too_slow(self) -> bool:
    return self.streak >= self.max_drop_streak

  def __len__(self) -> int:
    return (len(self._audio) + len(self._control)
            + (self._status is not None))


# ---- the pump: session -> chunks at real-time pace ---------------------------

def level(audio: np.ndarray) -> dict:
  """Peak and RMS (dBFS, floor -120) of one chunk."""
  a = np.asarray(audio, np.float64)
  if a.size == 0:
    return {"peak": 0.0, "rms_db": -120.0}
  rms = float(np.sqrt(np.mean(a * a)))
  return {"peak": float(np.max(np.abs(a))),
          "rms_db": round(20 * math.log10(max(rms, 1e-6)), 1)}


class Pump:
  """Reads the session at real-time pace in a thread while playing.

  On the first play it starts the session's producer thread and waits for
  its lead chunks. Then it reads `prebuffer_chunks` at once (the clients'
  jitter buffer) and one chunk per chunk duration after that. Each read
  waits at most the slack the clients still have buffered,
  (prebuffer_chunks - 1) chunk durations: audio later than that is a gap
  every listener hears, so the session counts it as an underrun and the
  chunk goes out padded with silence. If the pump falls further behind (a
  stalled producer) it restarts its clock instead of bursting a backlog.
  `sink(audio, index)` runs on the pump thread.
  """

  def __init__(self, session, sink: Callable[[np.ndarray, int], None], *,
               prebuffer_chunks: int = 2, start_timeout: float = 120.0):
    self.session, self.sink = session, sink
    self.chunk_seconds = session.chunk_samples / session.sample_rate
    self.prebuffer_chunks = max(1, int(prebuffer_chunks))
    self.read_timeout = max(0.05,
                            (self.prebuffer_chunks - 1) * self.chunk_seconds)
    self.start_timeout = start_timeout
    self.index = 0
    self.errors = 0
    self._play = threading.Event()
    self._quit = threading.Event()
    self._started_session = False
    self._thread = threading.Thread(target=self._run, name="mrt-serve-pump",
                                    daemon=True)
    self._thread.start()

  @property
  def playing(self) -> bool:
    return self._play.is_set()

  def play(self) -> None:
    self._play.set()

  def stop(self) -> None:
    self._play.clear()

  def close(self) -> None:
    self._quit.set()
    self._play.set()  # wake the thread so it sees quit
    self._thread.join(timeout=self.read_timeout + 5)
    if self._started_session:
      self.session.stop(timeout=10)

  def _run(self) -> None:
    while not self._quit.is_set():
      if not self._play.wait(timeout=0.5) or self._quit.is_set():
        continue
      if not self._started_session:
        self.session.start(wait=True, timeout=self.start_timeout)
        self._started_session = True
      # A fresh start: the prebuffer goes out at once.
      t_next = time.monotonic() - self.prebuffer_chunks * self.chunk_seconds
      while self._play.is_set() and not self._quit.is_set():
        now = time.monotonic()
        if t_next > now:
          time.sleep(min(t_next - now, 0.05))
          continue
        if now - t_next > (self.prebuffer_chunks + 1) * self.chunk_seconds:
          t_next = now  # fell behind: restart the clock, no burst
        try:
          audio = self.session.read(self.session.chunk_samples,
                                    timeout=self.read_timeout)
          self.sink(np.asarray(audio, np.float32), self.index)
        except Exception:  # noqa: BLE001 -- the pump outlives one bad chunk
          self.errors += 1
          log.exception("reading the stream failed")
          time.sleep(self.chunk_seconds)
          continue
        self.index += 1
        t_next += self.chunk_seconds
