"""`BrowserSink`: the notebook player's audio pushed to the page over a
kernel comm, kept `lead_seconds` ahead.

In Colab the kernel runs on a VM and the speakers are in the browser; the
only live link between them is the kernel's comm channel. The page opens a
comm (`google.colab.kernel.comms.open`, the route Colab's own file download
uses) and Python *pushes* base64 PCM chunks over it from a background
thread. Comm messages are routed by comm id, not by cell, so the stream
keeps reaching this output while the user runs other cells; output written
from a thread (`display`, `eval_js`) lands in whichever cell runs now.

Pacing is Python's job and it keeps the browser only `lead_seconds` ahead:
more lead hides network jitter but delays every prompt change by as much.
The worklet reports what it has consumed a few times a second; between
reports Python extrapolates with the clock, so a busy kernel (which queues
incoming comm messages until its cell ends) does not stall the music.
"""

from __future__ import annotations

import threading
import time
import uuid

from mrt_distill.serve.colab_page import player_html
from mrt_distill.serve.colab_pcm import PCM_FORMATS
from mrt_distill.serve.colab_pcm import as_frames
from mrt_distill.serve.colab_pcm import encode_pcm
from mrt_distill.serve.colab_sinks import Sink


class BrowserSink(Sink):
  """Pushes chunks into the page over a kernel comm, `lead_seconds` ahead.

  Args:
    lead_seconds: audio kept queued in the browser (default: one chunk plus
      0.75 s of jitter margin).
    fmt: "s16" or "f32" on the wire.
    ring_seconds: the page's ring size (default lead + 4 chunks, >= 2 s).
    comm_manager: where to register the comm target (default: the running
      IPython kernel's).
    report_seconds: how often the page reports its ring to Python.
  """

  def __init__(self, lead_seconds: float | None = None, fmt: str = "s16",
               ring_seconds: float | None = None, comm_manager=None,
               report_seconds: float = 0.5):
    super().__init__()
    if fmt not in PCM_FORMATS:
      raise ValueError(f"fmt {fmt!r}: expected one of {PCM_FORMATS}")
    if lead_seconds is not None and not lead_seconds > 0:
      raise ValueError(f"lead_seconds must be > 0, got {lead_seconds!r}")
    self.fmt, self.report_seconds = fmt, float(report_seconds)
    self._lead_arg, self._ring_arg = lead_seconds, ring_seconds
    self._comm_manager = comm_manager
    self.target = f"mrt_distill_player_{uuid.uuid4().hex[:12]}"
    self._cv = threading.Condition()
    self._comm = None
    self._report: dict | None = None
    self._report_t = 0.0
    self._sent = 0  # frames sent to the current page
    self._closed = False
    self.lost_chunks = 0  # written while no page was connected
    self.pages = 0  # comm opens seen

  def open(self, sample_rate, channels, chunk_samples=None):
    super().open(sample_rate, channels, chunk_samples)
    chunk_s = (chunk_samples or sample_rate) / sample_rate
    self.lead_seconds = float(self._lead_arg or chunk_s + 0.75)
    self.ring_seconds = float(self._ring_arg or max(
        2.0, self.lead_seconds + 4 * chunk_s))
    if self.ring_seconds <= self.lead_seconds:
      raise ValueError(f"ring_seconds {self.ring_seconds} must exceed "
                       f"lead_seconds {self.lead_seconds}")
    self.prime_seconds = min(0.5 * self.lead_seconds, chunk_s)
    mgr = self._comm_manager
    if mgr is None:
      from IPython import get_ipython
      shell = get_ipython()
      kernel = getattr(shell, "kernel", None)
      if kernel is None:
        raise RuntimeError("BrowserSink needs a notebook kernel (Colab); "
                           "outside one use WavSink or ListSink")
      mgr = kernel.comm_manager
    mgr.register_target(self.target, self._on_open)

  # ---- the page's side of the conversation (kernel thread) -------------------
  def _on_open(self, comm, open_msg) -> None:
    data = (open_msg or {}).get("content", {}).get("data") or {}
    comm.on_msg(self._on_msg)
    comm.on_close(lambda msg, comm=comm: self._on_close(comm))
    with self._cv:
      old, self._comm = self._comm, comm
      self.pages += 1
      # A new page starts with an empty ring.
      self._sent = 0
      self._report = {"consumed": 0, "received": 0, "fill": 0,
                      "playing": False, "underruns": 0,
                      "ctx_state": data.get("ctx_state", "suspended")}
      self._report_t = time.monotonic()
      self._cv.notify_all()
    if old is not None:
      try:
        old.close()
      except Exception:  # noqa: BLE001 -- the old page may be gone
        pass

  def _on_msg(self, msg) -> None:
    data = msg.get("content", {}).get("data") or {}
    if data.get("type") != "report":
      return
    with self._cv:
      self._report = dict(data)
      self._report_t = time.monotonic()
      self._cv.notify_all()

  def _on_close(self, comm) -> None:
    with self._cv:
      if self._comm is comm:
        self._comm = None
        self._cv.notify_all()

  # ---- pacing ----------------------------------------------------------------
  def _consumed_estimate(self, now: float) -> float:
    r = self._report
    consumed = float(r.get("consumed", 0))
    if r.get("ctx_state") == "running" and r.get("playing"):
      consumed += (now - self._report_t) * self.sample_rate
    return min(consumed, float(self._sent))

  def ahead_seconds(self) -> float | None:
    """Audio sent to the page and not played yet (estimate), or None."""
    with self._cv:
      if self._comm is None or self._report is None:
        return None
      return (self._sent - self._consumed_estimate(time.monotonic())) \
          / self.sample_rate

  def wait_room(self, timeout):
    end = time.monotonic() + timeout
    with self._cv:
      while not self._closed:
        now = time.monotonic()
        if self._comm is not None and self._report is not None:
          ahead = self._sent - self._consumed_estimate(now)
          if ahead < self.lead_seconds * self.sample_rate:
            return True
        if now >= end:
          return False
        self._cv.wait(min(end - now, 0.02))
    return False

  def write(self, chunk, info):
    x = as_frames(chunk)
    msg = {"type": "pcm", "fmt": self.fmt, "seq": int(info.get("index", 0)),
           "frames": len(x), "pcm": encode_pcm(x, self.fmt)}
    with self._cv:
      comm = self._comm
      if comm is None:
        self.lost_chunks += 1
        return
      self._sent += len(x)
    comm.send(msg)
    self.chunks += 1
    self.frames += len(x)

  def flush(self):
    with self._cv:
      comm = self._comm
    if comm is not None:
      comm.send({"type": "flush"})

  def close(self):
    with self._cv:
      self._closed = True
      comm, self._comm = self._comm, None
      self._cv.notify_all()
    if comm is not None:
      comm.send({"type": "close"})

  def view(self):
    from IPython.display import HTML
    return HTML(self.html())

  def html(self) -> str:
    if self.sample_rate is None:
      raise RuntimeError("BrowserSink.html before open()")
    return player_html(self.target, sample_rate=self.sample_rate,
                       channels=self.channels, lead_seconds=self.lead_seconds,
                       ring_seconds=self.ring_seconds,
                       prime_seconds=self.prime_seconds,
                       report_seconds=self.report_seconds)

  def stats(self) -> dict:
    with self._cv:
      r = dict(self._report or {})
      connected = self._comm is not None
    out = super().stats()
    out.update({"connected": connected, "pages": self.pages,
                "ahead_seconds": self.ahead_seconds(),
                "lead_seconds": self.lead_seconds,
                "browser_underruns": r.get("underruns"),
                "browser_dropped_frames": r.get("dropped"),
                "audio_state": r.get("ctx_state"),
                "lost_chunks": self.lost_chunks})
    return out
