"""Teacher rollouts: B live streaming sessions -> distillation examples.

Data-free: nothing here reads audio. Prompts come from the prompt pipeline;
the teacher streams music for them exactly as it would for a listener
(batched KV-cached decode with CFG), and every call emits, per session, the
context the teacher saw and the chunk it wrote:

  ctx_ids   int32 (B, N, L)  the coarse context as student encoder ids
  style_ids int32 (B, S)     the style tokens the teacher was given
  style_emb f32   (B, E)     the (mixed, interpolated) style embedding
  tokens    int32 (B, C, K)  the teacher's chunk
  latents   f32   (B, C, D)  the chunk as codec latents (sum of codewords)
  session_chunk int32 (B,)   chunk index inside the session (0 = cold start)
  noise     f32   (B, C, K, D) coupled rollouts only: the coupling noise the
                             teacher's chunk is a deterministic function of
                             (mrt_distill/coupling.py)

Sessions start cold (an empty, all-MASK context), run `session_chunks`
chunks, then restart with the next prompt, so training sees cold starts,
steady state and -- for transition records -- prompts morphing A -> B.

On-policy option: with probability `on_policy_prob` per session and chunk,
the session's context advances with the *student's* chunk for that context
instead of the teacher's, so later targets are the teacher's answer to the
student's own history (fights drift in long streams).

The generator's whole state (contexts, counters, records, the numpy RNG) is
a small JSON-able dict (`get_state` / `set_state`), checkpointed with the
student so a resumed run sees the same examples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from mrt_distill import coupling
from mrt_distill.distill.prompts import PromptRecord
from mrt_distill.distill.student import context_ids
from mrt_distill.style import mixing
from mrt_distill.teacher.system import TeacherSystem

log = logging.getLogger(__name__)

# student_fn(ctx_ids (B, N, L), style_ids (B, S), style_emb (B, E)) ->
# codes int32 (B, C, K): the student's chunk for those contexts.
StudentFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class RolloutGenerator:
  """Keeps B teacher sessions alive; `next()` advances all by one chunk."""

  def __init__(self, system: TeacherSystem, prompts: Iterator[dict], *,
               batch: int, session_chunks: int, seed: int,
               on_policy_prob: float = 0.0,
               student_fn: StudentFn | None = None, coupled: bool = False,
               teacher_log_probs: bool = False):
    if batch < 1 or session_chunks < 1:
      raise ValueError(f"batch ({batch}) and session_chunks "
                       f"({session_chunks}) must be >= 1")
    if not 0.0 <= on_policy_prob <= 1.0:
      raise ValueError(f"on_policy_prob must be in [0, 1], got "
                       f"{on_policy_prob}")
    self.system, self.prompts = system, prompts
    self.batch, self.session_chunks = batch, session_chunks
    self.seed, self.on_policy_prob = seed, on_policy_prob
    self.student_fn = student_fn
    self.coupled = bool(coupled)
    if teacher_log_probs and not coupled:
      raise ValueError("teacher_log_probs needs coupled rollouts")
    self.teacher_log_probs = bool(teacher_log_probs)
    g = system.geometry
    self.contexts = np.full((batch, g.context_frames, g.target_levels), -1,
                            np.int32)
    self.session_chunk = np.full(batch, session_chunks, np.int64)  # restart
    self.records: list[PromptRecord | None] = [None] * batch
    self.rng = np.random.default_rng(seed)
    self.calls = 0
    self._emb_cache: dict[str, np.ndarray] = {}

  # ---- state ---------------------------------------------------------------
  def get_state(self) -> dict[str, Any]:
    return {
        "contexts": self.contexts.tolist(),
        "session_chunk": self.session_chunk.tolist(),
        "records": [None if r is None else r.to_dict() for r in self.records],
        "rng": self.rng.bit_generator.state,
        "calls": self.calls,
    }

  def set_state(self, state: dict[str, Any]) -> None:
    contexts = np.asarray(state["contexts"], np.int32)
    if contexts.shape != self.contexts.shape:
      raise ValueError(
          f"rollout state holds contexts of shape {contexts.shape}, this run "
          f"needs {self.contexts.shape}: the checkpoint is from another "
          f"config (rollout batch or geometry)")
    self.contexts = contexts
    self.session_chunk = np.asarray(state["session_chunk"], np.int64)
    self.records = [None if r is None else PromptRecord.from_dict(r)
                    for r in state["records"]]
    self.rng.bit_generator.state = state["rng"]
    self.calls = int(state["calls"])

  # ---- styles --------------------------------------------------------------
  def _embed(self, text: str) -> np.ndarray:
    if text not in self._emb_cache:
      self._emb_cache[text] = mixing.embed_prompt_mix(
          self.system.style_model, text)
    return self._emb_cache[text]

  def _style(self, record: PromptRecord, chunk: int) -> np.ndarray:
    """Magenta RT transitions interpolate the style embeddings."""
    a = self._embed(record.start)
    if record.end is None:
      return a
    w = record.weights_at(chunk)
    return ((1.0 - w) * a + w * self._embed(record.end)).astype(np.float32)

  # ---- the step ------------------------------------------------------------
  def _restart_finished(self) -> None:
    for i in np.flatnonzero(self.session_chunk >= self.session_chunks):
      self.records[i] = PromptRecord.from_dict(next(self.prompts))
      self.contexts[i] = -1
      self.session_chunk[i] = 0

  def next(self) -> dict[str, np.ndarray]:
    """Advances every session by one chunk -> one batch of examples."""
    self._restart_finished()
    g, system = self.system.geometry, self.system
    emb = np.stack([self._style(r, int(c))
                    for r, c in zip(self.records, self.session_chunk)])
    style_ids = mixing.style_tokens(system.style_model, g, emb)
    ctx_ids = context_ids(g, self.contexts)
    # Seeds far apart so generators with nearby seeds never share keys.
    seed = self.seed * 1_000_003
    noise = None
    if self.coupled:
      noise = np.asarray(coupling.draw_noise(
          jax.random.PRNGKey(seed + self.calls), g, self.batch))
    tokens = system.sample_codes(self.contexts, emb, seed=seed,
                                 chunk_index=self.calls, noise=noise,
                                 with_log_probs=self.teacher_log_probs)
    if self.teacher_log_probs:
      tokens, logp = tokens
    latents = system.codec.dequantize(tokens)
    example = {
        "ctx_ids": ctx_ids,
        "style_ids": style_ids.astype(np.int32),
        "style_emb": emb.astype(np.float32),
        "tokens": tokens.astype(np.int32),
        "latents": latents.astype(np.float32),
        "session_chunk": self.session_chunk.astype(np.int32),
    }
    if noise is not None:
      example["noise"] = noise.astype(np.float32)
    if self.teacher_log_probs:
      # float16 halves the replay buffer; below -30 a code has no mass.
      example["teacher_logp"] = np.maximum(logp, -30.0).astype(np.float16)
    advance = tokens
    if self.student_fn is not None and self.on_policy_prob > 0:
      mine = self.rng.random(self.batch) < self.on_policy_prob
      if mine.any():
        student = np.asarray(self.student_fn(ctx_ids, style_ids, emb),
                             np.int32)
        advance = np.where(mine[:, None, None], student, tokens)
    self.contexts = np.concatenate([self.contexts, advance], axis=1)[
        :, -g.context_frames:]
    self.session_chunk += 1
    self.calls += 1
    return example


class ReplayBuffer:
  """A ring buffer of examples; `sample` draws a batch uniformly.

  Teacher rollouts are the expensive part of distillation; reusing each
  example `reuse` times on average trades freshness for speed. Its contents
  are checkpointed (arrays only, no audio: a few MB at reference sizes).
  """

  def __init__(self, capacity: int, seed: int):
    if capacity < 1:
      raise ValueError(f"replay capacity must be >= 1, got {capacity}")
    self.capacity = capacity
    self.rng = np.random.default_rng(seed)
    self.data: dict[str, np.ndarray] = {}
    self.size = 0
    self.cursor = 0

  def add(self, batch: dict[str, np.ndarray]) -> None:
    n = len(next(iter(batch.values())))
    if not self.data:
      self.data = {k: np.zeros((self.capacity,) + v.shape[1:], v.dtype)
                   for k, v in batch.items()}
    idx = (self.cursor + np.arange(n)) % self.capacity
    for k, v in batch.items():
      self.data[k][idx] = v
    self.cursor = int((self.cursor + n) % self.capacity)
    self.size = min(self.capacity, self.size + n)

  def sample(self, batch: int) -> dict[str, np.ndarray]:
    if self.size == 0:
      raise ValueError("the replay buffer is empty: add rollouts first")
    idx = self.rng.integers(0, self.size, batch)
    return {k: v[idx] for k, v in self.data.items()}

  def get_state(self) -> dict[str, Any]:
    return {"size": self.size, "cursor": self.cursor,
            "rng": self.rng.bit_generator.state}

  def arrays(self) -> dict[str, np.ndarray]:
    return self.data

  def set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]):
    self.size, self.cursor = int(state["size"]), int(state["cursor"])
    self.rng.bit_generator.state = state["rng"]
    # A writable copy: restored arrays may be read-only (e.g. views of jax
    # arrays) and must not alias the caller's.
    self.data = {k: np.array(v) for k, v in arrays.items()}
