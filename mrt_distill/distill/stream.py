"""Streaming with the student: one network call (or k) per chunk.

The batched counterpart of `TeacherSystem.generate_chunks` for the student:
context tokens in, a chunk of latents out, the latents RVQ-quantised (nearest
codeword per level) to extend the context, and decoded by the codec with the
same lead-frame equal-power crossfade as the teacher, so student and teacher
audio are comparable sample for sample.

(The serving path with per-chunk cached encoder keys/values and donated
device state lives in the serving module; this one re-encodes the window
each chunk, which is what training and offline evaluation need. The chunk
itself is the serving code's pick, `ChunkStepper.sample`, with its
guidance: an on-policy context is what the student would play.)
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill.codec.neural import rvq_encode_jnp
from mrt_distill.distill import student as S
from mrt_distill.serve.chunk_step import ChunkStepper, controls
from mrt_distill.style import mixing
from mrt_distill.teacher.system import equal_power_ramp


class StudentStreamer:
  """B student streams advanced together, chunk by chunk."""

  def __init__(self, model: S.StudentModel, params, codec, style_model,
               scaler: S.LatentScaler, steps: int = 1,
               cfg_weight: float = 0.0):
    """cfg_weight: the guidance the student plays with (its config's
    `student.cfg_weight`); 0 = one unguided pass. `params` may be replaced
    between calls (same shapes: no recompile)."""
    self.model, self.params = model, params
    self.codec, self.style_model, self.scaler = codec, style_model, scaler
    self.steps, self.cfg_weight = steps, float(cfg_weight)
    self._stepper = ChunkStepper(model, codec, style_model, scaler,
                                 max_steps=max(int(steps), 1))
    self.geometry = model.cfg.geometry
    self._books = jnp.asarray(codec.codebooks[:self.geometry.target_levels],
                              jnp.float32)
    self._ramp = equal_power_ramp(self.geometry.crossfade_samples)
    self.chunk_seconds: list[float] = []

  @functools.partial(jax.jit, static_argnums=(0, 6))
  def _chunk(self, params, ctx_ids, style_ids, style_emb, key, steps):
    """-> (codec latents (B, C, D), codes int32 (B, C, K))."""
    # The window is encoded once; the guided pass adds only the
    # unconditioned style's keys/values (as the serving step does).
    x0 = self._stepper.sample_window(
        params, ctx_ids, style_ids, style_emb,
        controls(style_emb, self.cfg_weight, steps), key)
    lat = self.scaler.to_codec(x0)
    b, c, d = lat.shape
    codes, _, _ = rvq_encode_jnp(lat.reshape(b * c, d), self._books)
    return lat, codes.T.reshape(b, c, -1)

  def codes_for(self, ctx_ids, style_ids, style_emb, key) -> np.ndarray:
    """The student's chunk codes for given contexts (on-policy rollouts)."""
    _, codes = self._chunk(self.params, jnp.asarray(ctx_ids),
                           jnp.asarray(style_ids), jnp.asarray(style_emb),
                           key, self.steps)
    return np.asarray(codes, np.int32)

  def stream(self, styles_BxE: np.ndarray, num_chunks: int,
             seed: int) -> np.ndarray:
    """Cold-start streams for B style embeddings -> audio (B, S, channels).

    Records the wall time of each chunk (network + quantise + decode) in
    `chunk_seconds`.
    """
    g = self.geometry
    emb = np.asarray(styles_BxE, np.float32)
    b = emb.shape[0]
    style_ids = mixing.style_tokens(self.style_model, g, emb)
    context = np.full((b, g.context_frames, g.target_levels), -1, np.int32)
    lead = np.zeros((b, g.crossfade_frames, g.codec_latent_dim), np.float32)
    tail = np.zeros((b, g.crossfade_samples, g.channels), np.float32)
    n = g.crossfade_samples
    out = []
    for i in range(num_chunks):
      t0 = time.perf_counter()
      key = jax.random.PRNGKey(seed + i)
      lat, codes = self._chunk(self.params, S.context_ids(g, context),
                               style_ids, emb, key, self.steps)
      lat = np.asarray(lat)
      audio = np.asarray(self.codec.decode_latents(
          jnp.asarray(np.concatenate([lead, lat], axis=1))))
      chunk = audio[:, :g.chunk_samples].copy()
      chunk[:, :n] = (chunk[:, :n] * self._ramp[None, :, None]
                      + tail * self._ramp[None, ::-1, None])
      tail = audio[:, -n:]
      lead = lat[:, -g.crossfade_frames:]
      context = np.concatenate([context, np.asarray(codes)], axis=1)[
          :, -g.context_frames:]
      out.append(chunk)
      self.chunk_seconds.append(time.perf_counter() - t0)
    return np.concatenate(out, axis=1)
