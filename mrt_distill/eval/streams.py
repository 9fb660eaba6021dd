"""Teacher and student streams from the same prompts, seeds and contexts.

Shape letters: R rows (streams), B streams in one batch, T chunks, S style
embedding width, N samples, C channels, F context frames, K RVQ levels,
X crossfade samples.

Every comparison in the report is only fair if both models saw the same
thing, so one `Model` interface drives both:

  Teacher(system)              the KV-cached autoregressive teacher
                               (`TeacherSystem.generate_chunks`),
  Student(bundle, stepper, k)  the serving chunk step (`ChunkStepper`, the
                               path a musician hears), k consistency steps

and the drivers here feed them identical style schedules (one (S,) style
per row and chunk, so prompt transitions are just schedules that change),
identical base seeds per batch, and for the paired comparison the *same
context*: at every chunk of a teacher stream, each student is handed the
teacher's context window (`Student.state_from_context`) and writes the
chunk the teacher is about to write.

Rows are generated `batch` at a time (the last batch padded with copies of
its last row, which are dropped) so each model compiles for one batch
shape only, plus batch 1 for the speed section.
"""

from __future__ import annotations

import abc
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill.distill import student as S
from mrt_distill.serve.chunk_step import controls

# Seed spacing between batches (larger than any chunk count, so the
# teacher's PRNGKey(seed + chunk_index) never repeats across batches) and
# the offset of the teacher's second sample from one context.
BATCH_SEED_STRIDE = 7919
RESAMPLE_SEED_OFFSET = 1_000_003

Progress = Callable[[str, int], None]  # (model kind, stream-chunks done)


class Model(abc.ABC):
  """One streaming model: init(B) -> state; step(...) -> (audio, state)."""

  key: str  # report name, e.g. "teacher", "student@k1"
  kind: str  # "teacher" | "student"

  def __init__(self, geometry):
    self.geometry = geometry

  @property
  @abc.abstractmethod
  def calls_per_chunk(self) -> int:
    """Sequential network calls per chunk."""

  @abc.abstractmethod
  def init(self, batch: int):
    """Cold-start state of `batch` streams."""

  @abc.abstractmethod
  def step(self, state, styles_BxS: np.ndarray, seed: int,
           chunk_index: int):
    """-> (float32 audio (B, chunk_samples, C), new state)."""

  @abc.abstractmethod
  def param_bytes(self) -> int:
    """Bytes of the weights this model reads per chunk."""

  @abc.abstractmethod
  def xla_peak_bytes(self, styles_1xS: np.ndarray) -> int | None:
    """XLA's estimate of one chunk call's peak memory at batch 1
    (arguments + outputs + temporaries - aliased), or None."""


def _tree_bytes(tree) -> int:
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree)))


def _compiled_peak(compiled) -> int | None:
  m = compiled.memory_analysis()
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes
             + m.temp_size_in_bytes - m.alias_size_in_bytes)


class Teacher(Model):
  """The teacher system (sampling from the distillation config)."""

  kind = "teacher"

  def __init__(self, system, key: str = "teacher"):
    super().__init__(system.geometry)
    self.system, self.key = system, key

  @property
  def calls_per_chunk(self) -> int:
    g = self.geometry
    return g.chunk_frames * (1 + g.target_levels)  # temporal + depth steps

  def init(self, batch: int):
    return self.system.init_states(batch)

  def step(self, state, styles_BxS, seed, chunk_index):
    # generate_chunks keys the decode with PRNGKey(seed + state index).
    audio, state = self.system.generate_chunks(
        state, np.asarray(styles_BxS, np.float32), seed=seed)
    return np.asarray(audio, np.float32), state

  def param_bytes(self) -> int:
    return _tree_bytes(self.system.params)

  def xla_peak_bytes(self, styles_1xS):
    """The KV-cached decode of one chunk with CFG (codec decode excluded)."""
    from mrt_distill.style import mixing
    from mrt_distill.teacher import decode
    from mrt_distill.teacher.system import build_encoder_inputs
    # The jitted decode `generate_tokens` calls (private: lowering it with the
    # same arguments reuses the executable the run compiled).
    jitted = getattr(decode, "_decode_jit", None)
    if jitted is None:
      return None
    g, sys_ = self.geometry, self.system
    ctx = np.full((1, g.context_frames, g.target_levels), -1, np.int32)
    ids = mixing.style_tokens(sys_.style_model, g,
                              np.asarray(styles_1xS, np.float32))
    enc = np.concatenate([build_encoder_inputs(g, ctx, ids),
                          build_encoder_inputs(g, ctx, None)])
    use_cfg = sys_.sampling.guidance_weight > 0
    enc = enc if use_cfg else enc[:1]
    lowered = jitted.lower(sys_.cfg, use_cfg, True, False, sys_.params,
                           jnp.asarray(enc), jax.random.PRNGKey(0),
                           *sys_.sampling.as_arrays(g.chunk_frames))
    return _compiled_peak(lowered.compile())


_STEPPER_PEAK: dict[int, int | None] = {}  # id(stepper) -> bytes


class Student(Model):
  """A student through the serving chunk step, at k steps.

  Args:
    bundle: a `mrt_distill.serve.bundle.StudentBundle`.
    stepper: its `ChunkStepper` (shared between k values: k is traced).
    steps: k, consistency steps per chunk.
    cfg_weight: classifier-free guidance of the student (0: one pass).
    key: report name.
  """

  kind = "student"

  def __init__(self, bundle, stepper, steps: int, cfg_weight: float = 0.0,
               key: str | None = None):
    super().__init__(bundle.geometry)
    self.bundle, self.stepper, self.params = bundle, stepper, bundle.params
    self.steps, self.cfg_weight = int(steps), float(cfg_weight)
    self.key = key or f"student@k{self.steps}"
    if not 1 <= self.steps <= stepper.max_steps:
      raise ValueError(f"student steps {steps}: the chunk step allows "
                       f"1..{stepper.max_steps}")

  @property
  def calls_per_chunk(self) -> int:
    # k denoiser passes in sequence (with CFG the unconditioned branch runs
    # alongside each, not after it); the encoder sees only the new chunk.
    return self.steps

  def init(self, batch: int):
    return self.stepper.init_state(self.params, batch)

  def _controls(self, styles_BxS):
    return controls(np.asarray(styles_BxS, np.float32), self.cfg_weight,
                    self.steps)

  def step(self, state, styles_BxS, seed, chunk_index):
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), chunk_index)
    audio, state = self.stepper.chunk_step(self.params, state,
                                           self._controls(styles_BxS), rng)
    return np.asarray(audio, np.float32), state

  def state_from_context(self, context_BxFxK: np.ndarray,
                         tail_BxXxC: np.ndarray, index: int):
    """The chunk-step state for a given context window (e.g. the teacher's):
    each context chunk's cross keys/values, the codec latents of the last
    frame(s) as the decode lead (as the teacher decodes) and the previous
    crossfade tail. An all-empty (-1) context gives `init`'s cold state.
    State fields this does not know (e.g. audio kept for injection, unused
    here) keep their cold-start values."""
    g = self.geometry
    ctx = np.asarray(context_BxFxK)
    state = self.stepper.window_state(self.params, S.context_ids(g, ctx))
    last = ctx[:, -g.crossfade_frames:]
    cold = (last < 0).any(axis=(1, 2), keepdims=True)
    lead = np.where(cold, 0.0,
                    self.bundle.codec.dequantize(np.maximum(last, 0)))
    return state._replace(
        lead=jnp.asarray(lead, state.lead.dtype),
        tail=jnp.asarray(tail_BxXxC, state.tail.dtype),
        index=jnp.asarray(index, state.index.dtype))

  def param_bytes(self) -> int:
    return _tree_bytes(self.params)

  def xla_peak_bytes(self, styles_1xS):
    """The whole chunk step: cached encoder, k denoiser passes, RVQ, codec
    decode and crossfade. (k is traced: one compiled step serves every k,
    so the estimate is per stepper.)"""
    if id(self.stepper) not in _STEPPER_PEAK:
      _STEPPER_PEAK[id(self.stepper)] = _compiled_peak(
          self._lower_step(styles_1xS).compile())
    return _STEPPER_PEAK[id(self.stepper)]

  def _lower_step(self, styles_1xS):
    """The chunk step lowered for batch 1, preferably the very executable
    the speed run compiled (then `.compile()` is a cache hit): the step
    itself when it is a jitted function, else the stepper's inner jitted
    step with the controls as `chunk_step` prepares them; failing both,
    a fresh jit of `chunk_step` (one more compile, same numbers)."""
    step, ctl = self.stepper.chunk_step, self._controls(styles_1xS)
    args = (self.params, self.init(1), ctl, jax.random.PRNGKey(0))
    if hasattr(step, "lower"):
      return step.lower(*args)
    inner = getattr(self.stepper, "_step_jit", None)
    if inner is not None and hasattr(ctl, "inject_audio"):
      g = self.geometry
      inj = jnp.broadcast_to(ctl.inject_audio, (1, g.chunk_samples,
                                                g.channels))
      return inner.lower(*args[:2], ctl._replace(inject_audio=inj), args[3])
    return jax.jit(step).lower(*args)


# ---- drivers -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Batch:
  """One batch of rows: rows[i] is the report row of batch row i (padding
  rows are dropped from `real`)."""
  index: int
  rows: np.ndarray  # (B,) row ids, padding repeats the last
  real: int  # the first `real` batch rows are real

  def seed(self, seed: int) -> int:
    return seed + BATCH_SEED_STRIDE * self.index


def batches(num_rows: int, batch: int) -> list[Batch]:
  """Rows 0..R-1 in batches of exactly `batch` (the last one padded)."""
  if num_rows < 1 or batch < 1:
    raise ValueError(f"{num_rows} rows in batches of {batch}")
  out = []
  for i, start in enumerate(range(0, num_rows, batch)):
    rows = np.arange(start, min(start + batch, num_rows))
    real = len(rows)
    rows = np.concatenate([rows, np.full(batch - real, rows[-1])])
    out.append(Batch(i, rows, real))
  return out


def _schedule_at(styles, rows, t) -> np.ndarray:
  """styles (R, S) constant or (R, T, S) per chunk -> (B, S) at chunk t."""
  s = np.asarray(styles, np.float32)
  return s[rows] if s.ndim == 2 else s[rows, min(t, s.shape[1] - 1)]


def streams(model: Model, styles, chunks: int, batch: int, seed: int,
            progress: Progress | None = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Cold-start streams, batch by batch.

  Args:
    model: the model to stream.
    styles: (R, S) one style per row, or (R, T, S) one per row and chunk.
    chunks: T, chunks per stream.
    batch: streams generated together.
    seed: base seed (batch i uses seed + BATCH_SEED_STRIDE * i).
    progress: called with (model.kind, real rows) after every chunk.

  Yields:
    (row ids (b,), float32 audio (b, T * chunk_samples, C)) per batch,
    padding rows removed.
  """
  for bt in batches(len(styles), batch):
    state = model.init(batch)
    out = []
    for t in range(chunks):
      audio, state = model.step(state, _schedule_at(styles, bt.rows, t),
                                bt.seed(seed), t)
      out.append(audio[:bt.real])
      if progress:
        progress(model.kind, bt.real)
    yield bt.rows[:bt.real], np.concatenate(out, axis=1)


def collect(model: Model, styles, chunks: int, batch: int, seed: int,
            progress: Progress | None = None) -> np.ndarray:
  """All rows of `streams` in row order: float32 (R, T * chunk, C)."""
  parts = sorted(streams(model, styles, chunks, batch, seed, progress),
                 key=lambda p: p[0][0])
  return np.concatenate([a for _, a in parts], axis=0)


@dataclasses.dataclass
class PairedChunk:
  """One chunk position of the paired comparison (all from one context)."""
  rows: np.ndarray  # (b,)
  chunk: int
  teacher: np.ndarray  # (b, chunk_samples, C) the teacher's chunk
  teacher_again: np.ndarray  # (b, ...) a second teacher sample
  students: dict[str, np.ndarray]  # key -> (b, ...)


def paired(teacher: Teacher, students: list[Student], styles_RxS, chunks: int,
           batch: int, seed: int, progress: Progress | None = None
           ) -> Iterator[PairedChunk]:
  """The teacher streams; at every chunk each student (and the teacher
  again, with another seed: the floor) writes a chunk from the teacher's
  current context."""
  for bt in batches(len(styles_RxS), batch):
    state = teacher.init(batch)
    s = bt.seed(seed)
    for t in range(chunks):
      styles = _schedule_at(styles_RxS, bt.rows, t)
      outs = {}
      for st in students:
        st_state = st.state_from_context(state.context_tokens,
                                         state.crossfade_samples,
                                         state.chunk_index)
        outs[st.key] = st.step(st_state, styles, s, t)[0][:bt.real]
        if progress:
          progress(st.kind, bt.real)
      again, _ = teacher.step(state, styles, s + RESAMPLE_SEED_OFFSET, t)
      audio, state = teacher.step(state, styles, s, t)
      if progress:
        progress(teacher.kind, 2 * bt.real)
      yield PairedChunk(bt.rows[:bt.real], t, audio[:bt.real],
                        again[:bt.real], outs)


# ---- speed -------------------------------------------------------------------
def measure_speed(models: list[Model], styles_1xS: np.ndarray,
                  reps: dict[str, int], seed: int = 0) -> dict[str, dict]:
  """Batch-1 streaming speed of several models, measured together.

  Each model streams from a cold start (so its context fills as in a
  session). After one untimed-for-the-rate first chunk each (the compile),
  the timed chunks go round-robin over the models, so a machine whose load
  changes during the run slows every model alike.

  Control delay is for a just-in-time streamer, which starts each chunk
  `compute` seconds before the audio it follows runs out: a control change
  at a uniformly random moment waits for the next chunk start (on average
  half a chunk, at worst a whole one) and then for the chunk's compute.
  A model slower than real time cannot stream, and has no delay to report.

  Args:
    models: the models.
    styles_1xS: one style embedding (1, S).
    reps: timed chunks per model key.
    seed: sampling seed.

  Returns:
    key -> {"first_call_s" (compile + one chunk), "ms_per_chunk" (median),
    "ms_per_chunk_min", "reps", "rtf", "calls_per_chunk", "realtime",
    "control_delay_ms_mean", "control_delay_ms_worst"}.
  """
  states, first, times = {}, {}, {m.key: [] for m in models}
  for m in models:
    t0 = time.perf_counter()
    _, states[m.key] = m.step(m.init(1), styles_1xS, seed, 0)
    first[m.key] = time.perf_counter() - t0
  for r in range(max(reps.values())):
    for m in models:
      if r < reps[m.key]:
        t0 = time.perf_counter()
        _, states[m.key] = m.step(states[m.key], styles_1xS, seed, r + 1)
        times[m.key].append(time.perf_counter() - t0)
  out = {}
  for m in models:
    ms = 1000 * statistics.median(times[m.key])
    chunk_ms = 1000 * m.geometry.chunk_seconds
    realtime = ms < chunk_ms
    out[m.key] = {
        "first_call_s": first[m.key], "ms_per_chunk": ms,
        "ms_per_chunk_min": 1000 * min(times[m.key]),
        "reps": len(times[m.key]), "rtf": chunk_ms / ms,
        "calls_per_chunk": m.calls_per_chunk, "realtime": bool(realtime),
        "control_delay_ms_mean": chunk_ms / 2 + ms if realtime else None,
        "control_delay_ms_worst": chunk_ms + ms if realtime else None}
  return out


def measure_memory(model: Model, styles_1xS: np.ndarray) -> dict:
  """{"param_mib", "xla_peak_mib" (None when the backend does not say)}."""
  try:
    peak = model.xla_peak_bytes(styles_1xS)
  except Exception as e:  # pylint: disable=broad-except
    # A backend without memory analysis must not sink the report.
    peak, err = None, f"{type(e).__name__}: {e}"
  else:
    err = None
  out = {"param_mib": model.param_bytes() / 2**20,
         "xla_peak_mib": None if peak is None else peak / 2**20}
  if err:
    out["xla_peak_error"] = err[:200]
  return out
