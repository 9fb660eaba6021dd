"""Batched, KV-cached autoregressive chunk decoding with in-batch CFG.

Order and cadence follow v1 (reference §3): tokens are generated frame-major,
level-minor. The temporal stack runs once per frame on the mean embedding of
the previous frame; the depth stack runs once per level with a KV cache of
length K that is reset every frame. Here that is two nested loops (frames,
then levels) instead of v1's single 800-step loop with a `cond`: the same
arithmetic, without evaluating a predicate 800 times.

CFG: rows [0, B) are conditional (style given), rows [B, 2B) unconditional
(style masked). Logits are combined as (1 + w) * l_cond - w * l_uncond and one
categorical draw per conditional row is taken; both rows continue from that
sample (v1 copies the even row into the odd row).

Sampling knobs (guidance weight, temperature, top-k, max_decode_frames) are
traced: changing them never recompiles. The step key is split once per token:
`key, sub = split(key)`, starting from PRNGKey(seed + chunk_index).

Coupled sampling (`noise` given, see mrt_distill/coupling.py): each token is
instead the DD1 flow map of its final distribution -- after CFG,
temperature and top-k, restricted to its level's codes -- and the noise
vector drawn up front for its (frame, level), so the chunk is a
deterministic function of (encoder input, noise). The key is then unused.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill import coupling
from mrt_distill.geometry import MASK_ID, PAD_ID
from mrt_distill.teacher.config import TeacherConfig
from mrt_distill.teacher.model import KV, TeacherModel, encoder_pad_bias

_MIN_TEMPERATURE = 1e-4  # t5x: at or below this, take the argmax
_TOPK_FILL = -1e7  # t5x's value for logits outside the top-k


class SamplingParams(NamedTuple):
  """Traced decode controls (scalars); v1 system defaults."""
  guidance_weight: float = 5.0
  temperature: float = 1.1
  top_k: int = 40
  max_decode_frames: int = -1  # -1: the whole chunk

  def check(self) -> "SamplingParams":
    """Raises ValueError naming a knob out of range (callers run it before
    loading a model); returns self."""
    if not self.temperature >= 0:  # NaN too
      raise ValueError(f"temperature must be >= 0 (0 = greedy), got "
                       f"{self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
    if not self.guidance_weight >= 0:
      raise ValueError(f"guidance_weight must be >= 0, got "
                       f"{self.guidance_weight}")
    return self

  def as_arrays(self, chunk_frames: int):
    n = chunk_frames if self.max_decode_frames == -1 else self.max_decode_frames
    if not 0 < n <= chunk_frames:
      raise ValueError(
          f"max_decode_frames={self.max_decode_frames} must be in "
          f"1..{chunk_frames} (or -1 for the whole chunk)")
    self.check()
    return (jnp.float32(self.guidance_weight), jnp.float32(self.temperature),
            jnp.int32(self.top_k), jnp.int32(n))


def cfg_combine(logits_RxV, batch: int, weight):
  """(1 + w) l_cond - w l_uncond for rows [0,B) and [B,2B)."""
  return (1.0 + weight) * logits_RxV[:batch] - weight * logits_RxV[batch:]


def _ordered_bits(x):
  """float32 -> uint32 with the same order (negatives flipped)."""
  x = jnp.where(x == 0, 0.0, x.astype(jnp.float32))  # -0.0 ties with +0.0
  u = jax.lax.bitcast_convert_type(x, jnp.uint32)
  return jnp.where(u >> 31 == 1, ~u, u | jnp.uint32(1 << 31))


def kth_largest_mask(x_BxV, k):
  """Boolean mask of x >= (k-th largest of each row), ties kept, k traced.

  Exact, like a sort, but 32 compare-and-count passes instead of sorting the
  vocabulary on every one of the C*K decode steps (on CPU a sort of 30k
  logits costs ~6 ms, the bisection well under 1 ms). It builds the k-th
  largest order-preserving bit pattern one bit at a time, from the top.
  """
  keys = _ordered_bits(x_BxV)

  def body(i, t):
    cand = t | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
    enough = (keys >= cand[:, None]).sum(axis=-1) >= k
    return jnp.where(enough, cand, t)

  t = jax.lax.fori_loop(0, 32, body, jnp.zeros(x_BxV.shape[:1], jnp.uint32))
  return keys >= t[:, None]


def tempered_top_k(logits_BxV, temperature, top_k):
  """t5x's sampling logits: divided by the temperature, and outside the
  top-k (top_k = 0 disables it) set to -1e7. Shared by the ordinary and the
  coupled sampler, so both draw from the same distribution."""
  scaled = logits_BxV / jnp.maximum(temperature, _MIN_TEMPERATURE)
  keep = kth_largest_mask(scaled, jnp.clip(top_k, 1, scaled.shape[-1]))
  return jnp.where((top_k > 0) & ~keep, _TOPK_FILL, scaled)


def sample_logits(key, logits_BxV, temperature, top_k):
  """t5x temperature sampling with top-k (top_k = 0 disables it)."""
  drawn = jax.random.categorical(
      key, tempered_top_k(logits_BxV, temperature, top_k), axis=-1)
  greedy = jnp.argmax(logits_BxV, axis=-1)
  return jnp.where(temperature <= _MIN_TEMPERATURE, greedy, drawn).astype(
      jnp.int32)


def level_log_probs(logits_BxV, temperature, top_k):
  """log p over one level's codes as `sample_logits` would draw them;
  greedy (temperature <= 1e-4) puts all mass on the argmax."""
  greedy = jax.nn.one_hot(jnp.argmax(logits_BxV, axis=-1),
                          logits_BxV.shape[-1]) > 0
  scaled = jnp.where(temperature <= _MIN_TEMPERATURE,
                     jnp.where(greedy, 0.0, _TOPK_FILL),
                     tempered_top_k(logits_BxV, temperature, top_k))
  return jax.nn.log_softmax(scaled, axis=-1)


def coupled_pick(g, logits_BxV, level, noise_BxD, books_KxVxD, temperature,
                 top_k, with_log_probs: bool = False):
  """One coupled token per row: the flow map of the level's distribution
  and its noise -> LM ids (B,) int32 (always inside the level's range);
  with_log_probs: also that distribution, log p (B, V) over the level's
  codes (what a student can match per position, `losses.token_kl`)."""
  offset = g.codec_offset + g.codebook_size * level
  lv = jax.lax.dynamic_slice_in_dim(logits_BxV, offset, g.codebook_size,
                                    axis=-1)
  logp = level_log_probs(lv, temperature, top_k)
  code = coupling.flow_map(logp, noise_BxD, books_KxVxD[level])
  ids = (offset + code).astype(jnp.int32)
  return (ids, logp) if with_log_probs else ids


_coupled_pick_jit = jax.jit(coupled_pick, static_argnums=(0, 7))


def cast_for_decode(params, cfg: TeacherConfig):
  """Casts weights to the activation dtype once, outside the decode loop.

  Every layer casts its weights to the activation dtype before use, so this
  is bit-identical; it saves re-reading f32 weights on each of the C*K
  steps. The logits head computes in f32 and keeps its f32 kernel.
  """
  if cfg.dtype == jnp.float32:
    return params
  head = params["decoder"]["logits_dense"]
  cast = jax.tree.map(lambda x: x.astype(cfg.dtype), params)
  cast["decoder"] = {**cast["decoder"], "logits_dense": head}
  return cast


def _zeros_kv(cfg: TeacherConfig, rows: int, length: int, n: int) -> list[KV]:
  shape = (rows, length, cfg.num_heads, cfg.head_dim)
  return [KV(jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype))
          for _ in range(n)]


def _decode(cfg: TeacherConfig, use_cfg: bool, stop_on_mask: bool,
            with_log_probs: bool, params, enc_ids_RxLe, key, weight,
            temperature, top_k, n_frames, noise_BxCxKxD=None,
            books_KxVxD=None):
  """Traced body of `generate_tokens`. R = 2B with CFG, else B. With
  `noise_BxCxKxD` (and the flow codebooks) tokens are coupled picks;
  with_log_probs also collects their distributions (B, C, K, V)."""
  g = cfg.geometry
  model = TeacherModel(cfg)
  call = functools.partial(model.apply, {"params": cast_for_decode(params,
                                                                   cfg)})
  rows = enc_ids_RxLe.shape[0]
  batch = rows // 2 if use_cfg else rows
  c_len, k_lv = g.chunk_frames, g.target_levels

  encoded = call(enc_ids_RxLe, method=TeacherModel.encode)
  cross = call(encoded, method=TeacherModel.cross_kv)
  cross_bias = encoder_pad_bias(enc_ids_RxLe)  # PAD keys masked, as in v1

  def tile(ids_B):
    return jnp.concatenate([ids_B, ids_B], axis=0) if use_cfg else ids_B

  v = g.codebook_size
  # The distributions' buffer: (B, C, K, V) when collected, else empty.
  lp_shape = ((batch, c_len, k_lv, v) if with_log_probs else (batch, 0, 0, 0))

  def level_body(f, q, carry):
    key, d_caches, x_Rx1xD, frame_BxK, ended_B, out_lp = carry
    logits, d_caches = call(x_Rx1xD, q, d_caches, method=TeacherModel.depth_step)
    if use_cfg:
      logits = cfg_combine(logits, batch, weight)
    key, sub = jax.random.split(key)
    if noise_BxCxKxD is None:
      tok = sample_logits(sub, logits, temperature, top_k)
    elif with_log_probs:
      tok, logp = coupled_pick(g, logits, q, noise_BxCxKxD[:, f, q],
                               books_KxVxD, temperature, top_k, True)
      out_lp = out_lp.at[:, f, q].set(logp)
    else:
      tok = coupled_pick(g, logits, q, noise_BxCxKxD[:, f, q], books_KxVxD,
                         temperature, top_k)
    if stop_on_mask:
      # t5x: MASK (1) is the implicit EOS; after it a row writes PAD.
      tok = jnp.where(ended_B, PAD_ID, tok)
      ended_B = ended_B | (tok == MASK_ID)
    frame_BxK = frame_BxK.at[:, q].set(tok)
    x_next = call(tile(tok)[:, None], method=TeacherModel.embed_decoder)
    return key, d_caches, x_next, frame_BxK, ended_B, out_lp

  def frame_body(f, carry):
    key, t_caches, prev_BxK, out_BxCxK, ended_B, out_lp = carry
    t_out, t_caches = call(tile(prev_BxK), f, t_caches, cross, cross_bias,
                           method=TeacherModel.temporal_step)
    d_caches = _zeros_kv(cfg, rows, k_lv, cfg.num_depth_layers)
    frame0 = jnp.zeros((batch, k_lv), jnp.int32)
    key, _, _, frame_BxK, ended_B, out_lp = jax.lax.fori_loop(
        0, k_lv, functools.partial(level_body, f),
        (key, d_caches, t_out, frame0, ended_B, out_lp))
    out_BxCxK = jax.lax.dynamic_update_slice_in_dim(
        out_BxCxK, frame_BxK[:, None], f, axis=1)
    return key, t_caches, frame_BxK, out_BxCxK, ended_B, out_lp

  init = (key, _zeros_kv(cfg, rows, c_len, cfg.num_temporal_layers),
          jnp.zeros((batch, k_lv), jnp.int32),  # BOS frame
          jnp.zeros((batch, c_len, k_lv), jnp.int32),
          jnp.zeros((batch,), bool), jnp.zeros(lp_shape, jnp.float32))
  _, _, _, out, _, out_lp = jax.lax.fori_loop(0, n_frames, frame_body, init)
  return (out, out_lp) if with_log_probs else out


_decode_jit = jax.jit(_decode, static_argnums=(0, 1, 2, 3))


def generate_tokens(cfg: TeacherConfig, params, enc_pos_BxLe, enc_neg_BxLe,
                    key, sampling: SamplingParams = SamplingParams(),
                    stop_on_mask: bool = True, noise=None,
                    flow_books=None, with_log_probs: bool = False):
  """Samples one chunk of LM ids (B, C, K) for a batch of encoder inputs.

  enc_neg_BxLe: the CFG negative rows (same context, style masked), or None
  for unguided decoding. Compiled once per (config, shapes, cfg on/off,
  coupled or not); the sampling knobs are traced. Frames past
  `max_decode_frames` are PAD.

  noise: coupling noise (B, C, K, D) (`coupling.draw_noise`) with
  flow_books (K, V, D) (`coupling.flow_codebooks` of the codec): coupled
  sampling, a deterministic function of (inputs, noise); `key` unused.
  with_log_probs (coupled only): return (ids, log p) where log p
  (B, C, K, V) f32 is each token's distribution over its level's codes, the
  one its pick was made from (a separate compile).
  """
  g = cfg.geometry
  if with_log_probs and noise is None:
    raise ValueError("with_log_probs needs coupled decoding (noise=...)")
  if noise is not None:
    coupling.check_noise(noise, g, np.shape(enc_pos_BxLe)[0])
    if flow_books is None:
      raise ValueError("coupled decoding needs flow_books: "
                       "coupling.flow_codebooks(codec.codebooks, levels)")
    noise = jnp.asarray(noise, jnp.float32)
    flow_books = jnp.asarray(flow_books, jnp.float32)
  _check_enc(enc_pos_BxLe, g.encoder_length, cfg.vocab_rows, "enc_pos")
  enc = enc_pos_BxLe
  if enc_neg_BxLe is not None:
    _check_enc(enc_neg_BxLe, g.encoder_length, cfg.vocab_rows, "enc_neg")
    if enc_neg_BxLe.shape != enc_pos_BxLe.shape:
      raise ValueError(f"CFG negative rows {enc_neg_BxLe.shape} must match "
                       f"the positive rows {enc_pos_BxLe.shape}")
    enc = jnp.concatenate([enc_pos_BxLe, enc_neg_BxLe], axis=0)
  return _decode_jit(cfg, enc_neg_BxLe is not None, stop_on_mask,
                     with_log_probs, params, enc, key,
                     *sampling.as_arrays(g.chunk_frames), noise, flow_books)


def _check_enc(x, length, rows, what):
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[1] != length:
    raise ValueError(f"{what} must be int32 (B, {length}) encoder ids for this "
                     f"geometry, got shape {tuple(x.shape)}")
  if not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"{what} must hold integer ids, got dtype {x.dtype}")
  if x.size and (x.min() < 0 or x.max() >= rows):
    # An id past the table would read garbage (NaN on CPU) and -1 would wrap.
    raise ValueError(
        f"{what} holds ids out of range [0, {rows}) (min {x.min()}, max "
        f"{x.max()}); build encoder inputs with build_encoder_inputs()")


@functools.partial(jax.jit, static_argnums=0)
def _forward_logits(cfg, params, enc_RxLe, targets_RxN):
  return TeacherModel(cfg).apply({"params": params}, enc_RxLe, targets_RxN)


def reference_decode(cfg: TeacherConfig, params, enc_pos_BxLe, enc_neg_BxLe,
                     key, sampling: SamplingParams = SamplingParams(),
                     stop_on_mask: bool = True, noise=None,
                     flow_books=None) -> np.ndarray:
  """Slow decoding that recomputes the full teacher-forced forward per token.

  No caches: it is the ground truth the cached decoder is tested against.
  Uses the same key schedule and sampling as `generate_tokens`.
  """
  g = cfg.geometry
  weight, temperature, top_k, n_frames = sampling.as_arrays(g.chunk_frames)
  use_cfg = enc_neg_BxLe is not None
  enc = (jnp.concatenate([enc_pos_BxLe, enc_neg_BxLe]) if use_cfg
         else jnp.asarray(enc_pos_BxLe))
  batch = enc_pos_BxLe.shape[0]
  targets = np.zeros((batch, g.decoder_length), np.int32)
  ended = np.zeros((batch,), bool)
  for s in range(int(n_frames) * g.target_levels):
    rows = np.concatenate([targets, targets]) if use_cfg else targets
    logits = _forward_logits(cfg, params, enc, jnp.asarray(rows))[:, s]
    if use_cfg:
      logits = cfg_combine(logits, batch, weight)
    key, sub = jax.random.split(key)
    if noise is None:
      tok = np.asarray(sample_logits(sub, logits, temperature, top_k))
    else:
      f, q = divmod(s, g.target_levels)
      tok = np.asarray(_coupled_pick_jit(
          g, logits, q, jnp.asarray(noise, jnp.float32)[:, f, q],
          jnp.asarray(flow_books, jnp.float32), temperature, top_k))
    if stop_on_mask:
      tok = np.where(ended, PAD_ID, tok)
      ended |= tok == MASK_ID
    targets[:, s] = tok
  return targets.reshape(batch, g.chunk_frames, g.target_levels)


@functools.partial(jax.jit, static_argnums=(0, 4))
def cached_logits(cfg: TeacherConfig, params, enc_ids_BxLe, targets_BxN,
                  n_frames: int):
  """Teacher-forced logits (B, n_frames * K, V) computed through the decode
  path: `temporal_step` / `depth_step` with their KV caches and the encoder
  PAD mask, exactly as `generate_tokens` runs them, but fed the given
  targets instead of samples. Compared with the full forward
  (`TeacherModel.__call__`) it checks the cached decode logit by logit
  (tools/check_real_teacher.py).
  """
  g = cfg.geometry
  model = TeacherModel(cfg)
  call = functools.partial(model.apply, {"params": cast_for_decode(params,
                                                                   cfg)})
  b = enc_ids_BxLe.shape[0]
  k_lv = g.target_levels
  frames_BxCxK = targets_BxN.reshape(b, g.chunk_frames, k_lv)
  cross = call(call(enc_ids_BxLe, method=TeacherModel.encode),
               method=TeacherModel.cross_kv)
  cross_bias = encoder_pad_bias(enc_ids_BxLe)

  def frame_body(f, carry):
    t_caches, out = carry
    prev = jax.lax.dynamic_index_in_dim(frames_BxCxK, jnp.maximum(f - 1, 0),
                                        axis=1, keepdims=False)
    prev = jnp.where(f > 0, prev, 0)  # BOS frame before frame 0
    t_out, t_caches = call(prev, f, t_caches, cross, cross_bias,
                           method=TeacherModel.temporal_step)
    frame_BxK = jax.lax.dynamic_index_in_dim(frames_BxCxK, f, axis=1,
                                             keepdims=False)

    def level_body(q, c):
      d_caches, x_Bx1xD, out = c
      logits, d_caches = call(x_Bx1xD, q, d_caches,
                              method=TeacherModel.depth_step)
      out = jax.lax.dynamic_update_slice(out, logits[:, None],
                                         (0, f * k_lv + q, 0))
      tok = jax.lax.dynamic_index_in_dim(frame_BxK, q, axis=1)
      return d_caches, call(tok, method=TeacherModel.embed_decoder), out

    _, _, out = jax.lax.fori_loop(
        0, k_lv, level_body,
        (_zeros_kv(cfg, b, k_lv, cfg.num_depth_layers), t_out, out))
    return t_caches, out

  out = jnp.zeros((b, n_frames * k_lv, cfg.vocab_rows), jnp.float32)
  _, out = jax.lax.fori_loop(
      0, n_frames, frame_body,
      (_zeros_kv(cfg, b, g.chunk_frames, cfg.num_temporal_layers), out))
  return out
