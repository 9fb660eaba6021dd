"""The musician's own sound in the stream: `LiveInput` takes input audio
frames from a page (its microphone or line input) and feeds them to the
session's audio injection (`session_injection`): the model hears them in
its context, the listeners never hear them directly.

Why it is shaped this way:
- The settings (mode "off" / "free" / "looper", gain, loop length) are one
  shared state, like the prompt: the page's input controls and OSC's
  `/mrt/input` set the same values, and status messages bring them back to
  every page.
- One input at a time. Two pages sending at once would be concatenated in
  time (injection places a block right after the previous one), so the
  first sender owns the input until it has been silent for `idle_seconds`
  or disconnects; frames from another client meanwhile are refused (one
  error reply per client, then counted quietly).
- Clock drift. Injection places each block right after the previous one;
  a sound card whose clock runs a little fast would push the input further
  and further ahead of the stream. A block that would start more than
  `max_ahead_seconds` ahead of the played position goes to that position
  instead (counted as `resyncs`).
- The first "on" compiles the context re-encoder (`inject_context`) on a
  throwaway state, in the caller's thread, so the producer never stalls on
  that compile mid-stream (an underrun the moment a musician plugs in).
- The frame is the server's own audio frame (`protocol.encode_frame`): the
  page sends what it captures at the stream's sample rate; mono input goes
  to every channel, multichannel input to mono is averaged.

No network, no event loop, no JAX.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np

from mrt_distill.serve.protocol import ProtocolError
from mrt_distill.serve.protocol import check_input
from mrt_distill.serve.protocol import decode_frame

MAX_FRAME_SECONDS = 2.0  # one input frame at most (a page sends ~50 ms)


class LiveInput:
  """Input frames and settings -> `session.inject_audio`.

  Args:
    session: a StreamSession (or anything with inject_audio,
      played_position, sample_rate, channels, stepper.can_inject).
    on_change: called after a settings change (any thread).
    idle_seconds: an input owner silent this long lets another client in.
    max_ahead_seconds: how far input may run ahead of the played position.
  """

  def __init__(self, session, on_change: Callable[[], None] | None = None, *,
               idle_seconds: float = 1.0, max_ahead_seconds: float = 0.5):
    self.session = session
    self.on_change = on_change
    self.idle_seconds = idle_seconds
    self.max_ahead = int(max_ahead_seconds * session.sample_rate)
    self.available = bool(getattr(getattr(session, "stepper", None),
                                  "can_inject", True))
    self._lock = threading.Lock()
    self.mode, self.gain, self.loop_seconds = "off", 1.0, 4.0
    self._owner = None
    self._owner_peer: str | None = None
    self._last_t = -math.inf
    self._end = None  # played position after the newest placed block
    self._refused: set = set()
    self._warm = False
    self.frames = self.samples = self.gaps = self.resyncs = 0
    self.refused = self.ignored = 0
    self._last_index: int | None = None
    self.level_db = -120.0

  # ---- settings ------------------------------------------------------------
  def configure(self, mode=None, gain=None, loop_seconds=None) -> None:
    """Change mode ("off", "free", "looper"), gain (0..8) and/or loop length
    (seconds); None keeps a value. Raises ProtocolError (nothing changes)."""
    mode, gain, loop_seconds = check_input(mode, gain, loop_seconds)
    if mode not in (None, "off"):
      if not self.available:
        raise ProtocolError(
            "input: this student cannot hear input (its codec has no "
            "traceable encoder); audio injection is off")
      self.warm_up()
    with self._lock:
      old_mode = self.mode
      if mode is not None:
        self.mode = mode
      if gain is not None:
        self.gain = gain
      if loop_seconds is not None:
        self.loop_seconds = loop_seconds
      if old_mode != "off" and (self.mode != old_mode or self.gain == 0):
        self._silence()  # drop what was injected; a new mode starts anew
    if self.on_change is not None:
      self.on_change()

  def warm_up(self) -> None:
    """Compile the context re-encoder now (once), not inside the stream."""
    s = self.session
    st = getattr(s, "stepper", None)
    if self._warm or st is None or not hasattr(st, "inject_context"):
      return
    g = st.geometry
    state = st.init_state(s.params, s.batch)
    audio = np.zeros((s.batch, g.context_samples, g.channels), np.float32)
    st.inject_context(s.params, state, audio, 1.0,
                      np.zeros(g.context_chunks, bool))
    self._warm = True

  def _silence(self) -> None:
    """Turn the session's injection off (gain 0 drops pending input)."""
    s = self.session
    s.inject_audio(np.zeros((1, s.channels), np.float32), s.sample_rate,
                   gain=0.0)
    self._end = None

  def snapshot(self) -> dict:
    with self._lock:
      return {"mode": self.mode, "gain": self.gain,
              "loop_seconds": self.loop_seconds,
              "available": self.available, "source": self._owner_peer
              if time.monotonic() - self._last_t < self.idle_seconds
              else None,
              "seconds": round(self.samples / self.session.sample_rate, 3),
              "frames": self.frames, "gaps": self.gaps,
              "resyncs": self.resyncs, "refused": self.refused,
              "ignored": self.ignored, "level_db": round(self.level_db, 1)}

  # ---- frames --------------------------------------------------------------
  def feed(self, client, frame: bytes, peer: str = "?") -> int | None:
    """One input frame from `client` -> the played position it went to
    (None when input is off: the frame is counted and dropped).

    Raises ProtocolError: not a frame, wrong sample rate or channels, too
    long, non-finite samples, or another client owns the input (raised once
    per client; later frames from it are dropped quietly)."""
    s = self.session
    try:
      head, audio = decode_frame(bytes(frame))
    except ValueError as e:
      raise ProtocolError(f"binary message is not an input audio frame: {e}"
                          ) from None
    if head["sample_rate"] != s.sample_rate:
      raise ProtocolError(
          f"input frame at {head['sample_rate']} Hz; the stream runs at "
          f"{s.sample_rate} Hz: capture at that rate (an AudioContext "
          f"created with sampleRate {s.sample_rate}) or resample first")
    if len(audio) > MAX_FRAME_SECONDS * s.sample_rate:
      raise ProtocolError(f"input frame of {len(audio)} samples is longer "
                          f"than {MAX_FRAME_SECONDS:g} s; send smaller blocks")
    if not np.all(np.isfinite(audio)):
      raise ProtocolError("input frame contains NaN or inf samples")
    audio = _to_channels(audio, s.channels)
    with self._lock:
      now = time.monotonic()
      if (client is not self._owner
          and now - self._last_t < self.idle_seconds):
        self.refused += 1
        if client in self._refused:
          return None
        self._refused.add(client)
        raise ProtocolError(
            f"input: {self._owner_peer} is sending input now; one input at a "
            f"time (stop it there first)")
      if client is not self._owner:
        self._owner, self._owner_peer, self._end = client, peer, None
        self._last_index = None
      self._last_t = now
      if (self._last_index is not None
          and head["index"] != (self._last_index + 1) & 0xFFFFFFFF):
        self.gaps += 1
      self._last_index = head["index"]
      self.frames += 1
      self.samples += len(audio)
      rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) \
          if audio.size else 0.0
      self.level_db = 20 * math.log10(max(rms, 1e-6))
      if self.mode == "off" or self.gain == 0 or not len(audio):
        self.ignored += 1
        return None
      at = None
      if self.mode == "free":
        played = s.played_position()
        if self._end is None or self._end - played > self.max_ahead \
            or self._end < played:
          if self._end is not None and self._end - played > self.max_ahead:
            self.resyncs += 1
          at = played
      start = s.inject_audio(audio, s.sample_rate, gain=self.gain,
                             mode=self.mode, loop_seconds=self.loop_seconds,
                             at=at)
      self._end = start + len(audio)
      return start

  def release(self, client) -> None:
    """`client` left: its input ownership ends (what it sent stays)."""
    with self._lock:
      self._refused.discard(client)
      if client is self._owner:
        self._owner, self._owner_peer = None, None
        self._last_t = -math.inf


def _to_channels(audio_TxC: np.ndarray, channels: int) -> np.ndarray:
  if audio_TxC.shape[1] == channels:
    return audio_TxC
  if audio_TxC.shape[1] == 1:
    return np.repeat(audio_TxC, channels, axis=1)
  if channels == 1:
    return audio_TxC.mean(axis=1, keepdims=True)
  raise ProtocolError(f"input frame with {audio_TxC.shape[1]} channels; the "
                      f"stream has {channels}: send mono or {channels}")
