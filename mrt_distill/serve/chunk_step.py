"""The serving chunk step: one jitted call per chunk, cached context, donated
state, no recompiles when controls change.

  state = init_state(...)
  audio, state = chunk_step(params, state, controls, rng)

Cached streaming context: the student encodes every context chunk on its
own (see `distill/student.py`), so each chunk's cross-attention keys/values
are computed once, when the chunk enters the window, and shifted along while
it stays there. Per chunk the encoder runs on the new chunk (C x context
levels tokens) and the style tokens only, never on the whole window.

Controls are traced arrays, so changing them never recompiles:
  style_emb (B, E)  the (already mixed) style embedding; its style tokens are
                    computed inside the step with the style model's RVQ;
  cfg_weight ()     classifier-free guidance w: (1 + w) f(cond) - w f(uncond)
                    (one network pass when w == 0, via lax.cond);
  steps ()          student steps k in 1..max_steps (fixed-size loop, the
                    extra steps masked off).

Shapes: B streams, N context chunks, L tokens per chunk, H heads, Hd head
dim, C chunk frames, D latent width, E style width, X crossfade samples.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill.codec.neural import rvq_encode_jnp
from mrt_distill.distill import student as S
from mrt_distill.geometry import MASK_ID
from mrt_distill.teacher.model import KV
from mrt_distill.teacher.system import equal_power_ramp


class StepState(NamedTuple):
  """Device state of B streams (donated to every step)."""
  cross_k: jax.Array  # (layers, B, N*L, H, Hd), oldest chunk first
  cross_v: jax.Array  # (layers, B, N*L, H, Hd)
  lead: jax.Array  # (B, crossfade_frames, D) codec latents of the last frames
  tail: jax.Array  # (B, X, channels) the previous chunk's crossfade tail
  index: jax.Array  # () int32, chunks produced so far


class Controls(NamedTuple):
  style_emb: jax.Array  # (B, E) float32
  cfg_weight: jax.Array  # () float32
  steps: jax.Array  # () int32, 1..max_steps


def controls(style_emb, cfg_weight: float = 0.0, steps: int = 1) -> Controls:
  emb = jnp.asarray(style_emb, jnp.float32)
  return Controls(emb if emb.ndim == 2 else emb[None],
                  jnp.asarray(cfg_weight, jnp.float32),
                  jnp.asarray(steps, jnp.int32))


class ChunkStepper:
  """Builds `init_state` and the jitted `chunk_step` for one student
  (model, geometry, chunk length); `compiles` counts traces."""

  def __init__(self, model: S.StudentModel, codec, style_model,
               scaler: S.LatentScaler, max_steps: int = 4):
    self.model, self.codec, self.scaler = model, codec, scaler
    self.max_steps = int(max_steps)
    g = self.geometry = model.cfg.geometry
    self._codec_books = jnp.asarray(codec.codebooks[:g.target_levels],
                                    jnp.float32)
    self._style_books = jnp.asarray(style_model.codebooks[:g.style_levels],
                                    jnp.float32)
    ladders = np.zeros((self.max_steps, max(self.max_steps - 1, 1)),
                       np.float32)
    for k in range(2, self.max_steps + 1):
      ladders[k - 1, :k - 1] = model.cfg.noise.sampling_ladder(k)
    self._ladders = jnp.asarray(ladders)
    self._ramp = jnp.asarray(equal_power_ramp(g.crossfade_samples))
    self.compiles = 0
    self.chunk_step = jax.jit(self._chunk_step, donate_argnums=(1,))

  # ---- pieces --------------------------------------------------------------
  def _apply(self, params, *args, method):
    return self.model.apply({"params": params}, *args, method=method)

  def style_ids(self, style_emb_BxE):
    """Style tokens inside the step: the style model's RVQ, in jnp."""
    g = self.geometry
    b = style_emb_BxE.shape[0]
    codes, _, _ = rvq_encode_jnp(style_emb_BxE, self._style_books)  # (Ls, B)
    lv = jnp.arange(g.style_levels, dtype=jnp.int32)[:, None]
    ids = g.style_offset + g.style_codebook_size * lv + codes
    return ids.T.reshape(b, g.style_levels).astype(jnp.int32)

  def chunk_kv(self, params, chunk_ids_BxL):
    """(layers, B, L, H, Hd) keys and values of one context chunk."""
    enc = self._apply(params, chunk_ids_BxL[:, None],
                      method=S.StudentModel.encode_chunks)[:, 0]
    kvs = self._apply(params, enc, method=S.StudentModel.cross_kv)
    return (jnp.stack([kv.k for kv in kvs]), jnp.stack([kv.v for kv in kvs]))

  def _style_kv(self, params, ids, emb):
    enc = self._apply(params, ids, emb, method=S.StudentModel.encode_style)
    return self._apply(params, enc, method=S.StudentModel.cross_kv)

  def init_state(self, params, batch: int = 1) -> StepState:
    """Cold start: every context chunk is an all-MASK chunk."""
    g, c = self.geometry, self.model.cfg
    ids = jnp.full((batch, c.chunk_tokens), MASK_ID, jnp.int32)
    k, v = self.chunk_kv(params, ids)
    n = c.context_chunks
    return StepState(
        jnp.concatenate([k] * n, axis=2), jnp.concatenate([v] * n, axis=2),
        jnp.zeros((batch, g.crossfade_frames, g.codec_latent_dim)),
        jnp.zeros((batch, g.crossfade_samples, g.channels)),
        jnp.zeros((), jnp.int32))

  def denoise_guided(self, params, x, sigma, cross_c, cross_u, w):
    """(1 + w) f(x | style) - w f(x | no style); one pass when w == 0.

    cross_u: the unconditioned cross KVs, or a function returning them (then
    they are only computed when w > 0)."""
    den = lambda cross: self._apply(params, x, sigma, cross,
                                    method=S.StudentModel.denoise)
    cond = den(cross_c)
    uncond = lambda: den(cross_u() if callable(cross_u) else cross_u)
    return jax.lax.cond(w > 0, lambda: (1 + w) * cond - w * uncond(),
                        lambda: cond)

  def sample(self, params, cross_c, cross_u, ctl: Controls, rng):
    """k-step consistency sampling with traced k -> student latents.

    Steps 2..k run in a fori_loop with a traced trip count, so k = 1 costs
    one network pass and changing k never recompiles.
    """
    g, noise = self.geometry, self.model.cfg.noise
    b = ctl.style_emb.shape[0]
    shape = (b, g.chunk_frames, g.codec_latent_dim)
    x = jax.random.normal(jax.random.fold_in(rng, 0), shape) * noise.sigma_max
    x0 = self.denoise_guided(params, x, jnp.full((b,), noise.sigma_max),
                             cross_c, cross_u, ctl.cfg_weight)
    steps = jnp.clip(ctl.steps, 1, self.max_steps)
    ladder = self._ladders[steps - 1]

    def body(i, x0):
      s = ladder[i - 1]
      s_noise = jnp.sqrt(jnp.maximum(s * s - noise.sigma_min ** 2, 0.0))
      xi = x0 + s_noise * jax.random.normal(jax.random.fold_in(rng, i), shape)
      return self.denoise_guided(params, xi, jnp.full((b,), s), cross_c,
                                 cross_u, ctl.cfg_weight)

    return jax.lax.fori_loop(1, steps, body, x0)

  # ---- the step --------------------------------------------------------------
  def _chunk_step(self, params, state: StepState, ctl: Controls, rng):
    self.compiles += 1  # runs at trace time only
    g = self.geometry
    b = ctl.style_emb.shape[0]
    ids = self.style_ids(ctl.style_emb)
    kv_s = self._style_kv(params, ids, ctl.style_emb)
    kv_u = lambda: self._style_kv(params, jnp.full_like(ids, MASK_ID),
                                  jnp.zeros_like(ctl.style_emb))
    layers = state.cross_k.shape[0]
    join = lambda kv_style: [
        KV(jnp.concatenate([state.cross_k[i], kv_style[i].k], axis=1),
           jnp.concatenate([state.cross_v[i], kv_style[i].v], axis=1))
        for i in range(layers)]
    x0 = self.sample(params, join(kv_s), lambda: join(kv_u()), ctl, rng)
    lat = self.scaler.to_codec(x0)  # (B, C, D) codec latents
    # The new chunk enters the context window: quantise, encode it alone,
    # shift the cache by one chunk.
    codes, _, _ = rvq_encode_jnp(lat.reshape(-1, g.codec_latent_dim),
                                 self._codec_books)
    codes = codes.T.reshape(b, g.chunk_frames, g.target_levels)
    lv = jnp.arange(g.context_levels, dtype=jnp.int32)
    ctx = (g.codec_offset + g.codebook_size * lv[None, None, :]
           + codes[..., :g.context_levels]).reshape(b, -1)
    k_new, v_new = self.chunk_kv(params, ctx)
    l_tok = self.model.cfg.chunk_tokens
    cross_k = jnp.concatenate([state.cross_k[:, :, l_tok:], k_new], axis=2)
    cross_v = jnp.concatenate([state.cross_v[:, :, l_tok:], v_new], axis=2)
    # Decode [lead frame(s), chunk] and crossfade onto the previous tail.
    audio = self.codec.decode_latents(jnp.concatenate([state.lead, lat],
                                                      axis=1))
    n = g.crossfade_samples
    ramp = self._ramp.reshape(1, n, 1)
    out = audio[:, :g.chunk_samples]
    out = out.at[:, :n].set(out[:, :n] * ramp + state.tail * ramp[:, ::-1])
    new = StepState(cross_k, cross_v, lat[:, -g.crossfade_frames:],
                    audio[:, -n:], state.index + 1)
    return out, new
