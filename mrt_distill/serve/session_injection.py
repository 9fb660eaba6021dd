"""How a `StreamSession` hears the user's audio: `InjectionMixin`, with
`inject_audio` and the per-chunk injection plan.

Audio injection (Magenta RT paper, section 4.2 and appendix E): the user's
audio is mixed into the model's *context*, never into what is played.
Positions are in played samples (sample p of the stream the consumer
reads). The played stream lags the latent timeline by the crossfade
(`crossfade_samples`, X), so context chunk j covers played samples
[j Sc + X, (j + 1) Sc + X).
  * "free": input is mixed at its logical time, silence where none has
    arrived. A chunk's input that is there when the chunk is produced goes
    into the step (`inject_audio`); input that arrives after its chunk entered
    the window re-encodes those window chunks (`inject_context`) before the
    next step.
  * "looper": the latest `loop_seconds` of input, tiled at the loop phase
    over the whole window, so the model hears the previous loop's input in
    every context chunk, including the newest.

`StreamSession` owns the state these methods use (`_lock`, `_inj_mode`,
`_blocks`, `_loop`, `_applied`, ...).
"""

from __future__ import annotations

import math

import numpy as np

MODES = ("free", "looper")


class InjectionMixin:
  """`inject_audio` and the per-chunk injection plan of a `StreamSession`."""

  # ---- audio injection -----------------------------------------------------
  def _now(self) -> int:
    """Played position the user hears now: the consumer's read position,
    or, without a consumer, the start of the next chunk's context span."""
    if self._reading:
      return self._read_pos
    return self._index * self.chunk_samples + self.geometry.crossfade_samples

  def played_position(self) -> int:
    """The played sample position "now" that `inject_audio` places input
    at by default (live input uses it to keep a fast input clock from
    drifting ahead of the stream)."""
    with self._lock:
      return self._now()

  def inject_audio(self, audio, sample_rate: int, gain: float = 1.0,
                   mode: str = "free", *, loop_seconds: float | None = None,
                   at: int | None = None) -> int:
    """Mix user audio into the model's context (never into the output).

    Args:
      audio: float (S, C) at the codec's rate ((S,) when C is 1).
      sample_rate: its rate; must equal `sample_rate`.
      gain: scales this audio; 0 turns injection off (drops pending input).
      mode: "free" (mix at its played time) or "looper" (keep the latest
        `loop_seconds` and tile it over the whole context window).
      loop_seconds: the loop length, required for "looper".
      at: played sample position of audio[0]; default right after the
        previous injected audio, or now (the consumer's read position; the
        next chunk without a consumer) if that is later.

    Returns:
      The played position where the audio was placed.

    Raises:
      ValueError: wrong sample rate, shape, dtype, non-finite samples,
        unknown mode, bad gain or loop length (nothing changes).
    """
    g = self.geometry
    self.stepper.require_injection()
    if mode not in MODES:
      raise ValueError(f"inject_audio mode {mode!r}: expected one of {MODES}")
    if int(sample_rate) != g.sample_rate:
      raise ValueError(
          f"inject_audio: sample rate {sample_rate} Hz, expected "
          f"{g.sample_rate} Hz (the codec's rate); resample the input first")
    x = np.asarray(audio)
    if not np.issubdtype(x.dtype, np.floating):
      raise ValueError(f"inject_audio: dtype {x.dtype}, expected float "
                       "samples in [-1, 1] (convert PCM: x / 32768)")
    if x.ndim == 1 and g.channels == 1:
      x = x[:, None]
    if x.ndim != 2 or x.shape[1] != g.channels or x.shape[0] == 0:
      hint = ("; it looks like (C, S): transpose it"
              if x.ndim == 2 and x.shape[0] == g.channels else "")
      raise ValueError(f"inject_audio: audio of shape {np.shape(audio)}, "
                       f"expected (samples, {g.channels}) with samples > 0"
                       f"{hint}")
    if not np.all(np.isfinite(x)):
      raise ValueError("inject_audio: audio contains NaN or inf")
    gain = float(gain)
    if not math.isfinite(gain) or gain < 0:
      raise ValueError(f"inject_audio: gain {gain} must be finite and >= 0")
    if at is not None and int(at) < 0:
      raise ValueError(f"inject_audio: at={at} must be >= 0")
    if mode == "looper":
      if loop_seconds is None or not math.isfinite(float(loop_seconds)) \
          or float(loop_seconds) <= 0:
        raise ValueError(f"inject_audio: looper mode needs loop_seconds > 0, "
                         f"got {loop_seconds!r}")
      loop_len = max(1, int(round(float(loop_seconds) * g.sample_rate)))
    x = x.astype(np.float32) * np.float32(gain)
    with self._lock:
      self._inj_version += 1
      if gain == 0:
        self._inj_mode, self._blocks, self._loop = None, [], None
        return int(at) if at is not None else self._now()
      if mode != self._inj_mode:
        self._blocks, self._loop = [], None
        self._inj_mode = mode
      if mode == "free":
        start = int(at) if at is not None else max(self._inj_end, self._now())
        self._blocks.append((start, x))
        self._inj_end = max(self._inj_end, start + len(x))
        return start
      if self._loop is None or len(self._loop) != loop_len:
        start = int(at) if at is not None else self._now()
        self._loop = np.zeros((loop_len, g.channels), np.float32)
        self._loop_origin = start
      else:
        start = (int(at) if at is not None
                 else max(self._loop_end, self._now()))
      keep = x[-loop_len:]
      first = start + len(x) - len(keep)
      idx = (np.arange(first, first + len(keep)) - self._loop_origin) \
          % loop_len
      self._loop[idx] = keep
      self._loop_end = start + len(x)
      return start

  def _input_span(self, start: int, length: int) -> np.ndarray | None:
    """(length, C) injected audio over played [start, start + length), or
    None when no input touches it (call with _lock held)."""
    if self._inj_mode == "looper" and self._loop is not None:
      idx = (np.arange(start, start + length) - self._loop_origin) \
          % len(self._loop)
      return self._loop[idx]
    out = None
    for b0, x in self._blocks:
      lo, hi = max(start, b0), min(start + length, b0 + len(x))
      if lo < hi:
        if out is None:
          out = np.zeros((length, self.channels), np.float32)
        out[lo - start:hi - start] += x[lo - b0:hi - b0]
    return out

  def _chunk_input(self, j: int) -> np.ndarray | None:
    """Input of context chunk j (None for cold slots in free mode)."""
    if j < 0 and self._inj_mode != "looper":
      return None
    sc = self.chunk_samples
    return self._input_span(j * sc + self.geometry.crossfade_samples, sc)

  def _injection_plan(self, i: int):
    """Snapshot for chunk i (call with _lock held) -> (chunk input or None,
    window job (audio (W, C), chunk mask (N,), inputs) or None)."""
    n, sc = self._n_ctx, self.chunk_samples
    # Forget free input that can no longer reach the window.
    oldest = (i - n) * sc + self.geometry.crossfade_samples
    self._blocks = [(b0, x) for b0, x in self._blocks if b0 + len(x) > oldest]
    job = None
    if self._inj_version != self._checked_version:
      self._checked_version = self._inj_version
      cur = [self._chunk_input(j) for j in range(i - n, i)]
      dirty = any(c is not None and (a is None or not np.array_equal(c, a))
                  for c, a in zip(cur, self._applied))
      if dirty:
        mask = np.array([c is not None for c in cur])
        audio = np.concatenate(
            [np.zeros((sc, self.channels), np.float32) if c is None else c
             for c in cur])
        job = (audio, mask, cur)
    return self._chunk_input(i), job
