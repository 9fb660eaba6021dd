"""The host side of live serving: one stream of music, steered while it plays.

  session = StreamSession(stepper, params, style_model, prompt="techno:1.0")
  chunk = session.next_chunk()              # synchronous (CLI, Colab, tests)
  session.start()                           # or: a producer thread ...
  audio = session.read(n, timeout=1.0)      # ... and a playback consumer
  session.set_prompt("techno:1, flute:0.5") # applies at the next chunk
  session.inject_audio(mic, 16000)          # the model hears it, never plays it
  session.stop()

Why a host loop around the jitted step: `ChunkStepper.chunk_step` is one
compiled call per chunk whose controls are traced arrays, so nothing here
ever recompiles; what makes it *live* is around it. Prompts are mixed into a
style embedding on the host (`style.mixing`) and validated before they touch
the stream, so a bad prompt is an error for the caller and the music keeps
playing the previous one. Controls apply at chunk boundaries: each chunk
snapshots them under a lock. A producer thread keeps `lead_chunks` chunks
ahead of playback in a bounded queue (more lead = fewer underruns but a
longer control delay: a change is heard after the queued audio). The session
measures what a player feels: time per chunk, underruns, and the control
delay (from a control change to the first played sample produced with it).

Audio injection (the user's audio in the model's context, never in what
is played) and its "free" and "looper" modes: `session_injection`. Prompt
mixes, CFG, steps and transitions: `session_controls`.

Determinism: chunk i uses rng = fold_in(PRNGKey(seed), i); two sessions with
the same seed and the same controls at the same chunks produce the same
audio, threaded or not.

Shapes: B streams (`batch`), Sc chunk samples, C channels, E style width,
W context samples, N context chunks. With batch 1 audio is (samples, C);
with batch > 1 every array gets a leading B axis.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Callable

import jax
import numpy as np

from mrt_distill.serve.chunk_step import ChunkStepper, Controls
from mrt_distill.serve.session_controls import ControlsMixin
from mrt_distill.serve.session_controls import _label
from mrt_distill.serve.session_controls import _Transition
from mrt_distill.serve.session_injection import InjectionMixin

log = logging.getLogger(__name__)

_HISTORY = 512  # timings kept for the percentiles in stats()


def _percentile(values, q) -> float | None:
  return float(np.percentile(np.asarray(values), q)) if values else None


@dataclasses.dataclass
class _Chunk:
  audio: np.ndarray  # (B, Sc, C)
  index: int
  changes: list  # perf_counter times of the control changes it first carries


class StreamSession(ControlsMixin, InjectionMixin):
  """One live stream (B parallel streams with the same controls).

  Args:
    stepper: the jitted chunk step of a student (`bundle.stepper()`).
    params: the student params.
    style_model: embeds prompt texts (`embed_text`).
    batch: B streams.
    lead_chunks: chunks the producer thread keeps ready ahead of playback.
    cfg_weight: initial classifier-free guidance weight (>= 0).
    steps: initial student steps (1..stepper.max_steps).
    seed: rng seed; chunk i uses fold_in(PRNGKey(seed), i).
    prompt: initial prompt mix (see `set_prompt`).
  """

  def __init__(self, stepper: ChunkStepper, params, style_model, *,
               batch: int = 1, lead_chunks: int = 2, cfg_weight: float = 0.0,
               steps: int = 1, seed: int = 0, prompt="techno:1.0"):
    if int(batch) < 1:
      raise ValueError(f"batch must be >= 1, got {batch!r}")
    if int(lead_chunks) < 1:
      raise ValueError(f"lead_chunks must be >= 1, got {lead_chunks!r}")
    self.stepper, self.params, self.style_model = stepper, params, style_model
    g = self.geometry = stepper.geometry
    self.batch, self.lead_chunks = int(batch), int(lead_chunks)
    self.seed = int(seed)
    self._key = jax.random.PRNGKey(self.seed)
    self._n_ctx = g.context_chunks

    self._lock = threading.RLock()  # control state
    self._step_lock = threading.Lock()  # device state: one chunk at a time
    self._cv = threading.Condition(threading.Lock())  # the audio queue

    # Controls (under _lock).
    self._mix = self._check_mix(prompt, what="prompt")
    self._emb = self._embed(self._mix, what="prompt")
    self._cfg = 0.0
    self._steps = 1
    self._transition: _Transition | None = None
    self._pending: list[float] = []
    self.set_controls(cfg_weight=cfg_weight, steps=steps)
    self._pending.clear()  # construction is not a control change

    # Injection (under _lock).
    self._inj_mode: str | None = None
    self._blocks: list[tuple[int, np.ndarray]] = []  # free: (start, audio)
    self._inj_end = 0  # free: end of the newest block
    self._loop: np.ndarray | None = None  # looper: (L, C), pre-scaled
    self._loop_origin = 0  # played position of loop sample 0
    self._loop_end = 0  # played position after the newest loop write
    self._inj_version = 0  # bumped by every injection change
    self._checked_version = 0
    # The input each window slot was encoded with (None: the student's own
    # tokens), oldest first; slot k holds chunk index - N + k.
    self._applied = collections.deque([None] * self._n_ctx,
                                      maxlen=self._n_ctx)

    # Device state and production (under _step_lock).
    self._state = stepper.init_state(params, self.batch)
    self._index = 0
    self._silence = np.zeros((self.batch, g.chunk_samples, g.channels),
                             np.float32)

    # Playback (under _cv).
    self._queue: collections.deque[_Chunk] = collections.deque()
    self._cur: _Chunk | None = None
    self._cur_pos = 0
    self._read_pos = 0  # played samples of produced audio handed out
    self._reading = False  # read() has handed out audio
    self._thread: threading.Thread | None = None
    self._stop = threading.Event()
    self._ever_started = False

    # Measurements.
    self._subscribers: list[Callable[[np.ndarray, dict], Any]] = []
    self._chunk_ms = collections.deque(maxlen=_HISTORY)
    self._delay_ms = collections.deque(maxlen=_HISTORY)
    self._underruns = 0
    self._errors = 0
    self._callback_errors = 0
    self._last_error: str | None = None

  # ---- sizes -----------------------------------------------------------------
  @property
  def sample_rate(self) -> int:
    return self.geometry.sample_rate

  @property
  def chunk_samples(self) -> int:
    return self.geometry.chunk_samples

  @property
  def channels(self) -> int:
    return self.geometry.channels

  @property
  def chunk_seconds(self) -> float:
    return self.geometry.chunk_seconds

  @property
  def chunks(self) -> int:
    """Chunks produced so far."""
    return self._index

  @property
  def running(self) -> bool:
    return self._thread is not None and self._thread.is_alive()

  @property
  def style_embedding(self) -> np.ndarray:
    """float32 (E,): the embedding the next chunk is produced with (during a
    transition, the interpolated one)."""
    with self._lock:
      return self._next_embedding(advance=False).copy()

  # ---- production ------------------------------------------------------------
  def _produce(self) -> _Chunk:
    """One chunk: snapshot controls, run the step(s), notify subscribers."""
    with self._step_lock:
      t0 = time.perf_counter()
      i = self._index
      with self._lock:
        tr = self._transition
        alpha = None if tr is None else tr.alpha(self.chunk_seconds)
        emb = self._next_embedding(advance=True)
        cfg, steps, mix = self._cfg, self._steps, self._mix
        changes, self._pending = self._pending, []
        inj, job = self._injection_plan(i)
      b = self.batch
      if job is not None:
        audio_w, mask, cur = job
        self._state = self.stepper.inject_context(
            self.params, self._state,
            np.broadcast_to(audio_w[None], (b,) + audio_w.shape), 1.0, mask)
        self._applied = collections.deque(
            [c if m else a for c, a, m in zip(cur, self._applied, mask)],
            maxlen=self._n_ctx)
      ctl = Controls(
          np.broadcast_to(emb[None], (b, emb.shape[-1])).astype(np.float32),
          np.float32(cfg), np.int32(steps),
          self._silence if inj is None else np.broadcast_to(
              inj[None], self._silence.shape).astype(np.float32),
          np.float32(0.0 if inj is None else 1.0), np.float32(1.0))
      audio, self._state = self.stepper.chunk_step(
          self.params, self._state, ctl, jax.random.fold_in(self._key, i))
      audio = np.asarray(audio, np.float32)
      audio.setflags(write=False)
      self._applied.append(inj)
      self._index = i + 1
      ms = 1000 * (time.perf_counter() - t0)
      self._chunk_ms.append(ms)
    chunk = _Chunk(audio, i, changes)
    info = {"index": i, "start_sample": i * self.chunk_samples,
            "sample_rate": self.sample_rate, "prompt": _label(mix),
            "weights": dict(mix), "cfg_weight": cfg, "steps": steps,
            "transition_alpha": alpha, "injected": inj is not None,
            "chunk_ms": ms}
    for cb in list(self._subscribers):
      try:
        cb(self._out(audio), info)
      except Exception as e:  # noqa: BLE001 -- a listener never stops music
        self._callback_errors += 1
        log.exception("stream subscriber %r failed: %s", cb, e)
    return chunk

  def _out(self, audio_BxSxC: np.ndarray) -> np.ndarray:
    return audio_BxSxC[0] if self.batch == 1 else audio_BxSxC

  def _played(self, chunk: _Chunk) -> None:
    """The chunk's first sample goes out now: record control delays."""
    now = time.perf_counter()
    for t in chunk.changes:
      self._delay_ms.append(1000 * (now - t))

  def next_chunk(self) -> np.ndarray:
    """Produce one chunk now -> float32 (Sc, C) ((B, Sc, C) for batch > 1).

    Synchronous (generate CLI, Colab, tests); not while the producer thread
    runs (use read() then).
    """
    if self.running:
      raise RuntimeError("next_chunk() while the producer thread runs; read() "
                         "the stream or stop() it first")
    chunk = self._produce()
    self._played(chunk)
    return self._out(chunk.audio).copy()  # subscribers share the original

  # ---- the producer thread ---------------------------------------------------
  def start(self, wait: bool = False, timeout: float | None = None) -> None:
    """Start the producer thread (no-op when running); `wait` blocks until
    `lead_chunks` chunks are ready (or `timeout` seconds)."""
    if not self.running:
      self._stop.clear()
      self._ever_started = True
      self._thread = threading.Thread(target=self._run, daemon=True,
                                      name="mrt-stream-producer")
      self._thread.start()
    if wait:
      deadline = None if timeout is None else time.monotonic() + timeout
      with self._cv:
        while len(self._queue) < self.lead_chunks and self.running:
          left = None if deadline is None else deadline - time.monotonic()
          if left is not None and left <= 0:
            break
          self._cv.wait(0.05 if left is None else min(left, 0.05))

  def stop(self, timeout: float | None = None) -> None:
    """Stop the producer thread after its current chunk; queued audio stays
    readable."""
    self._stop.set()
    with self._cv:
      self._cv.notify_all()
    if self._thread is not None:
      self._thread.join(timeout)

  def __enter__(self) -> "StreamSession":
    self.start()
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  def _run(self) -> None:
    while not self._stop.is_set():
      with self._cv:
        while len(self._queue) >= self.lead_chunks and not self._stop.is_set():
          self._cv.wait(0.1)
      if self._stop.is_set():
        return
      try:
        chunk = self._produce()
      except Exception as e:  # noqa: BLE001 -- the stream must outlive it
        self._errors += 1
        self._last_error = f"{type(e).__name__}: {e}"
        log.exception("producing chunk %d failed", self._index)
        self._recover()
        self._stop.wait(0.1)
        continue
      with self._cv:
        self._queue.append(chunk)
        self._cv.notify_all()

  def _recover(self) -> None:
    """After a failed step: a donated-and-lost state restarts cold."""
    with self._step_lock:
      if any(getattr(x, "is_deleted", lambda: False)()
             for x in jax.tree_util.tree_leaves(self._state)):
        log.warning("stream state was lost; restarting from a cold context")
        self._state = self.stepper.init_state(self.params, self.batch)
        self._applied = collections.deque([None] * self._n_ctx,
                                          maxlen=self._n_ctx)

  # ---- the consumer ----------------------------------------------------------
  def read(self, num_samples: int, timeout: float | None = None
           ) -> np.ndarray:
    """Pull the next `num_samples` of played audio -> float32 (n, C).

    Waits up to `timeout` seconds (None: not at all, as an audio callback
    must) for the producer; what is missing then is silence and counts one
    underrun (not after stop()).
    """
    if not self._ever_started:
      raise RuntimeError("read() needs the producer thread: call start() "
                         "first (or use next_chunk() without it)")
    n = int(num_samples)
    if n < 0:
      raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    out = np.zeros((self.batch, n, self.channels), np.float32)
    filled = 0
    deadline = time.monotonic() + (timeout or 0.0)
    with self._cv:
      while filled < n:
        if self._cur is None or self._cur_pos >= self._cur.audio.shape[1]:
          if self._queue:
            self._cur, self._cur_pos = self._queue.popleft(), 0
            self._played(self._cur)
            self._cv.notify_all()  # room for the producer
            continue
          left = deadline - time.monotonic()
          if left > 0 and self.running:
            self._cv.wait(left)
            continue
          break
        take = min(n - filled, self._cur.audio.shape[1] - self._cur_pos)
        out[:, filled:filled + take] = \
            self._cur.audio[:, self._cur_pos:self._cur_pos + take]
        filled += take
        self._cur_pos += take
      self._read_pos += filled
      self._reading = True
      if filled < n and self.running:
        self._underruns += 1
    return self._out(out)

  # ---- listeners and numbers -------------------------------------------------
  def subscribe(self, callback: Callable[[np.ndarray, dict], Any]) -> None:
    """callback(chunk (Sc, C) read-only float32, info dict) for every
    produced chunk, from the producing thread; exceptions are logged and
    counted, never raised into the stream."""
    with self._lock:
      if callback not in self._subscribers:
        self._subscribers = self._subscribers + [callback]

  def unsubscribe(self, callback) -> None:
    with self._lock:
      self._subscribers = [c for c in self._subscribers if c != callback]

  def stats(self) -> dict:
    """Counters and timings (JSON-safe; None where nothing was measured)."""
    with self._cv:
      queued = sum(c.audio.shape[1] for c in self._queue)
      if self._cur is not None:
        queued += self._cur.audio.shape[1] - self._cur_pos
      underruns = self._underruns
    with self._lock:
      tr = self._transition
      out = {
          "chunks": self._index, "underruns": underruns,
          "chunk_ms_p50": _percentile(self._chunk_ms, 50),
          "chunk_ms_p95": _percentile(self._chunk_ms, 95),
          "lead_seconds": queued / self.sample_rate,
          "control_delay_ms_p50": _percentile(self._delay_ms, 50),
          "control_delay_ms_p95": _percentile(self._delay_ms, 95),
          "prompt": _label(self._mix), "weights": dict(self._mix),
          "cfg_weight": self._cfg, "steps": self._steps,
          "transition": None if tr is None else {
              "from": _label(tr.mix_a), "to": _label(tr.mix_b),
              "seconds": tr.seconds,
              "progress": tr.alpha(self.chunk_seconds)},
          "inject_mode": self._inj_mode,
          "running": self.running, "errors": self._errors,
          "callback_errors": self._callback_errors,
          "last_error": self._last_error,
          "sample_rate": self.sample_rate,
          "chunk_seconds": self.chunk_seconds,
          "compiles": self.stepper.compiles,
      }
    return out
