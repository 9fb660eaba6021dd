"""The Magenta RT v1 teacher in Flax: T5 encoder + Depthformer decoder.

Follows reference/magenta_rt_v1.md §2 exactly; parameter paths equal the t5x
checkpoint names with '.' -> '/' (e.g. `decoder/decoder/temporal_decoder/
layers_3/mlp/wo/kernel`), so importing real weights is a re-nesting.

Two ways through the decoder, sharing every layer:
  * parallel (teacher forcing): `__call__(enc_ids, targets) -> logits`;
  * incremental (decoding): `temporal_step` once per frame and `depth_step`
    once per RVQ level, each with an explicit KV cache pytree passed in and
    returned (no hidden module state, so the decode loop is a pure function).

Shapes: B batch, Le encoder length, C chunk frames, K target levels,
N = C*K decoder tokens, D d_model, H heads, Hd head dim, V vocab rows.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mrt_distill import axes
from mrt_distill.teacher.config import TeacherConfig
from mrt_distill.teacher.layers import (Attention, Dense, MlpBlock,
                                        RelativePositionBias, RMSNorm,
                                        causal_bias, sinusoidal_positions,
                                        NEG_INF)


class KV(NamedTuple):
  """One attention layer's cache: k, v each (B, L, H, Hd)."""
  k: jax.Array
  v: jax.Array


def encoder_pad_bias(enc_ids_BxLe):
  """Additive cross-attention bias (B, 1, 1, Le): 0, or NEG_INF at PAD (id 0).

  flaxformer's decoder masks encoder PAD keys in cross-attention
  (`make_attention_mask(ones, encoder_input_tokens > 0)` at decode time); the
  boolean mask becomes this additive bias, added to the logits in the
  activation dtype. Without PAD it is all zeros, and adding +0.0 leaves every
  logit bit-identical, so PAD-free inputs (all of v1's: it feeds MASK, not
  PAD) decode exactly as without the mask. Query-side (target PAD) masking,
  which flaxformer applies only in teacher-forced training, is not applied:
  it would change the rows of positions not decoded yet.
  """
  return jnp.where(enc_ids_BxLe > 0, 0.0, NEG_INF)[:, None, None, :]


class Embed(nn.Module):
  """Shared token table `embedding` (V, D); lookup in the activation dtype."""
  num_embeddings: int
  features: int
  dtype: jnp.dtype = jnp.bfloat16

  def setup(self):
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(
            nn.initializers.normal(1.0), (axes.VOCAB, axes.EMBED)),
        (self.num_embeddings, self.features), jnp.float32)

  def __call__(self, ids):
    # Equal to v1's one-hot matmul in bf16 (one non-zero per row).
    return jnp.take(self.embedding.astype(self.dtype), ids, axis=0)


class EncoderLayer(nn.Module):
  cfg: TeacherConfig

  def setup(self):
    c = self.cfg
    self.pre_attention_layer_norm = RMSNorm(c.dtype)
    self.attention = Attention(c.num_heads, c.head_dim, c.d_model,
                               c.dropout_rate, c.dtype, c.lora_rank)
    self.pre_mlp_layer_norm = RMSNorm(c.dtype)
    self.mlp = MlpBlock(c.mlp_dim, c.dropout_rate, c.dtype, c.lora_rank)
    self.drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))

  def __call__(self, x_BxLxD, bias, deterministic=True):
    h = self.pre_attention_layer_norm(x_BxLxD)
    h = self.attention(h, h, bias, deterministic)
    x = x_BxLxD + self.drop(h, deterministic=deterministic)
    h = self.mlp(self.pre_mlp_layer_norm(x), deterministic)
    return x + self.drop(h, deterministic=deterministic)


class Encoder(nn.Module):
  cfg: TeacherConfig

  def setup(self):
    c = self.cfg
    self.layers = [EncoderLayer(c) for _ in range(c.num_encoder_layers)]
    self.encoder_norm = RMSNorm(c.dtype)
    self.drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))

  def __call__(self, x_BxLxD, ids_BxL, deterministic=True):
    """x: embedded ids (activation dtype) -> encoded (B, Le, D)."""
    c = self.cfg
    pos = sinusoidal_positions(ids_BxL.shape[1], c.d_model)
    x = x_BxLxD.astype(jnp.float32) + pos[None]
    x = self.drop(x, deterministic=deterministic).astype(c.dtype)
    # Only PAD (id 0) is masked; MASK tokens are ordinary attended tokens.
    bias = encoder_pad_bias(ids_BxL)
    for layer in self.layers:
      x = layer(x, bias, deterministic)
    x = self.encoder_norm(x)
    return self.drop(x, deterministic=deterministic)


class TemporalLayer(nn.Module):
  """Pre-norm: causal self-attn (relpos) -> cross-attn -> gated MLP."""
  cfg: TeacherConfig

  def setup(self):
    c = self.cfg
    attn = lambda: Attention(c.num_heads, c.head_dim, c.d_model,
                             c.dropout_rate, c.dtype, c.lora_rank)
    self.pre_self_attention_layer_norm = RMSNorm(c.dtype)
    self.self_attention = attn()
    self.pre_cross_attention_layer_norm = RMSNorm(c.dtype)
    self.encoder_decoder_attention = attn()
    self.pre_mlp_layer_norm = RMSNorm(c.dtype)
    self.mlp = MlpBlock(c.mlp_dim, c.dropout_rate, c.dtype, c.lora_rank)
    self.drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))

  def _cross_and_mlp(self, x, cross: KV, deterministic, cross_bias=None):
    h = self.pre_cross_attention_layer_norm(x)
    q = self.encoder_decoder_attention.project_q(h)
    h = self.encoder_decoder_attention.attend(q, cross.k, cross.v, cross_bias,
                                              deterministic)
    x = x + self.drop(h, deterministic=deterministic)
    h = self.mlp(self.pre_mlp_layer_norm(x), deterministic)
    return x + self.drop(h, deterministic=deterministic)

  def cross_kv(self, encoded_BxLexD) -> KV:
    return KV(*self.encoder_decoder_attention.project_kv(encoded_BxLexD))

  def __call__(self, x_BxCxD, cross: KV, bias, deterministic=True,
               cross_bias=None):
    """cross_bias: optional additive (B|1, H, C, Le) cross-attention bias."""
    h = self.pre_self_attention_layer_norm(x_BxCxD)
    h = self.self_attention(h, h, bias, deterministic)
    x = x_BxCxD + self.drop(h, deterministic=deterministic)
    return self._cross_and_mlp(x, cross, deterministic, cross_bias)

  def step(self, x_Bx1xD, index, cache: KV, cross: KV, bias, cross_bias=None):
    """One frame at position `index`; returns (out, updated cache)."""
    h = self.pre_self_attention_layer_norm(x_Bx1xD)
    q = self.self_attention.project_q(h)
    k, v = self.self_attention.project_kv(h)
    cache = KV(jax.lax.dynamic_update_slice_in_dim(cache.k, k, index, axis=1),
               jax.lax.dynamic_update_slice_in_dim(cache.v, v, index, axis=1))
    h = self.self_attention.attend(q, cache.k, cache.v, bias)
    x = x_Bx1xD + h
    return self._cross_and_mlp(x, cross, True, cross_bias), cache


class DepthLayer(nn.Module):
  """Pre-norm: causal self-attn over RVQ levels (relpos) -> gated MLP."""
  cfg: TeacherConfig

  def setup(self):
    c = self.cfg
    self.pre_self_attention_layer_norm = RMSNorm(c.dtype)
    self.self_attention = Attention(c.num_heads, c.head_dim, c.d_model,
                                    c.dropout_rate, c.dtype)
    self.pre_mlp_layer_norm = RMSNorm(c.dtype)
    self.mlp = MlpBlock(c.depth_mlp_dim, c.depth_dropout_rate, c.dtype)
    self.drop = nn.Dropout(c.depth_dropout_rate, broadcast_dims=(-2,))

  def _mlp(self, x, deterministic):
    h = self.mlp(self.pre_mlp_layer_norm(x), deterministic)
    return x + self.drop(h, deterministic=deterministic)

  def __call__(self, x_BxKxD, bias, deterministic=True):
    h = self.pre_self_attention_layer_norm(x_BxKxD)
    h = self.self_attention(h, h, bias, deterministic)
    x = x_BxKxD + self.drop(h, deterministic=deterministic)
    return self._mlp(x, deterministic)

  def step(self, x_Bx1xD, index, cache: KV, bias):
    h = self.pre_self_attention_layer_norm(x_Bx1xD)
    q = self.self_attention.project_q(h)
    k, v = self.self_attention.project_kv(h)
    cache = KV(jax.lax.dynamic_update_slice_in_dim(cache.k, k, index, axis=1),
               jax.lax.dynamic_update_slice_in_dim(cache.v, v, index, axis=1))
    x = x_Bx1xD + self.self_attention.attend(q, cache.k, cache.v, bias)
    return self._mlp(x, True), cache


class TemporalStack(nn.Module):
  cfg: TeacherConfig

  def setup(self):
    c = self.cfg
    self.relpos_bias = RelativePositionBias(
        c.num_heads, c.temporal_relpos_buckets, c.temporal_relpos_max_distance,
        c.dtype)
    self.layers = [TemporalLayer(c) for _ in range(c.num_temporal_layers)]

  def bias(self, q_pos, length):
    k_pos = jnp.arange(length)
    return self.relpos_bias(q_pos, k_pos) + causal_bias(q_pos, k_pos).astype(
        self.cfg.dtype)

  def cross_kv(self, encoded) -> list[KV]:
    return [layer.cross_kv(encoded) for layer in self.layers]

  def __call__(self, x_BxCxD, cross: list[KV], deterministic=True, *,
               causal: bool = True, cross_bias=None):
    """causal=False: every frame sees every frame (the one-step student
    writes a whole chunk at once); the relpos table is shared."""
    c_len = x_BxCxD.shape[1]
    pos = jnp.arange(c_len)
    bias = (self.bias(pos, c_len) if causal
            else self.relpos_bias(pos, pos))
    for layer, kv in zip(self.layers, cross):
      x_BxCxD = layer(x_BxCxD, kv, bias, deterministic, cross_bias)
    return x_BxCxD  # no final norm (v1)

  def step(self, x_Bx1xD, index, caches: list[KV], cross: list[KV],
           cross_bias=None):
    bias = self.bias(index[None], caches[0].k.shape[1])
    new = []
    for layer, cache, kv in zip(self.layers, caches, cross):
      x_Bx1xD, cache = layer.step(x_Bx1xD, index, cache, kv, bias, cross_bias)
      new.append(cache)
    return x_Bx1xD, new


class DepthStack(nn.Module):
  cfg: TeacherConfig

  def setup(self):
    c = self.cfg
    self.relpos_bias_depth = RelativePositionBias(
        c.num_heads, c.depth_relpos_buckets, c.depth_relpos_max_distance,
        c.dtype)
    self.depth_layers = [DepthLayer(c) for _ in range(c.num_depth_layers)]

  def bias(self, q_pos, length):
    k_pos = jnp.arange(length)
    return self.relpos_bias_depth(q_pos, k_pos) + causal_bias(
        q_pos, k_pos).astype(self.cfg.dtype)

  def __call__(self, x_BxKxD, deterministic=True):
    k_len = x_BxKxD.shape[1]
    bias = self.bias(jnp.arange(k_len), k_len)
    for layer in self.depth_layers:
      x_BxKxD = layer(x_BxKxD, bias, deterministic)
    return x_BxKxD

  def step(self, x_Bx1xD, index, caches: list[KV]):
    bias = self.bias(index[None], caches[0].k.shape[1])
    new = []
    for layer, cache in zip(self.depth_layers, caches):
      x_Bx1xD, cache = layer.step(x_Bx1xD, index, cache, bias)
      new.append(cache)
    return x_Bx1xD, new


class DepthformerStacks(nn.Module):
  """The inner `decoder` scope: temporal_decoder + depth_decoder."""
  cfg: TeacherConfig

  def setup(self):
    self.temporal_decoder = TemporalStack(self.cfg)
    self.depth_decoder = DepthStack(self.cfg)


class DepthformerDecoder(nn.Module):
  """Outer `decoder` scope: stacks, decoder_norm and the f32 logits head."""
  cfg: TeacherConfig

  def setup(self):
    c = self.cfg
    self.decoder = DepthformerStacks(c)
    self.decoder_norm = RMSNorm(c.dtype)
    self.logits_dense = Dense(c.vocab_rows, (axes.EMBED, axes.VOCAB),
                              jnp.float32)
    self.drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))

  def head(self, h_BxNxD, deterministic=True):
    h = self.drop(self.decoder_norm(h_BxNxD), deterministic=deterministic)
    return self.logits_dense(h)


class TeacherModel(nn.Module):
  """Encoder-decoder with a shared token table. See module docstring."""
  cfg: TeacherConfig

  def setup(self):
    c = self.cfg
    self.token_embedder = Embed(c.vocab_rows, c.d_model, c.dtype)
    self.encoder = Encoder(c)
    self.decoder = DepthformerDecoder(c)
    self.drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))

  # ---- pieces ------------------------------------------------------------
  def encode(self, enc_ids_BxLe, deterministic=True):
    return self.encoder(self.token_embedder(enc_ids_BxLe), enc_ids_BxLe,
                        deterministic)

  def embed_decoder(self, ids):
    """Decoder embeddings: bf16 lookup, then the f32 residual stream."""
    return self.token_embedder(ids).astype(jnp.float32)

  def cross_kv(self, encoded_BxLexD) -> list[KV]:
    return self.decoder.decoder.temporal_decoder.cross_kv(encoded_BxLexD)

  # ---- parallel (teacher-forced) decoder ------------------------------------
  def decode(self, encoded_BxLexD, targets_BxN, deterministic=True,
             enc_ids_BxLe=None):
    """Teacher-forced logits (B, N, V) for flattened frame-major targets.

    enc_ids_BxLe: the encoder ids, to mask their PAD positions in
    cross-attention (`encoder_pad_bias`); None attends every position.
    """
    c = self.cfg
    k_lv = c.geometry.target_levels
    b, n = targets_BxN.shape
    c_len = n // k_lv
    emb = self.drop(self.embed_decoder(targets_BxN), deterministic=deterministic)
    frames_BxCxKxD = emb.reshape(b, c_len, k_lv, c.d_model)
    bos = self.drop(self.embed_decoder(jnp.zeros((b, 1), jnp.int32)),
                    deterministic=deterministic)
    # Frame t's temporal input is the mean embedding of frame t-1 (BOS for 0).
    t_in = jnp.concatenate([bos, frames_BxCxKxD[:, :-1].mean(axis=2)], axis=1)
    stacks = self.decoder.decoder
    cross_bias = (None if enc_ids_BxLe is None
                  else encoder_pad_bias(enc_ids_BxLe))
    t_out = stacks.temporal_decoder(t_in, self.cross_kv(encoded_BxLexD),
                                    deterministic, cross_bias=cross_bias)
    # Depth position 0 = temporal output, positions 1.. = levels 0..K-2.
    d_in = jnp.concatenate([t_out[:, :, None, :], frames_BxCxKxD[:, :, :-1]],
                           axis=2)
    d_out = stacks.depth_decoder(d_in.reshape(b * c_len, k_lv, c.d_model),
                                 deterministic)
    return self.decoder.head(d_out.reshape(b, n, c.d_model), deterministic)

  def __call__(self, enc_ids_BxLe, targets_BxN, deterministic=True):
    return self.decode(self.encode(enc_ids_BxLe, deterministic), targets_BxN,
                       deterministic, enc_ids_BxLe=enc_ids_BxLe)

  # ---- incremental decoder --------------------------------------------------
  def temporal_step(self, prev_frame_ids_BxK, frame_index, caches, cross,
                    cross_bias=None):
    """Runs the temporal stack for one frame.

    prev_frame_ids_BxK: ids of frame f-1 (all PAD/BOS for f = 0).
    cross_bias: `encoder_pad_bias(enc_ids)`, computed once per chunk like
      `cross`; None attends every encoder position.
    Returns (temporal output (B, 1, D), new caches).
    """
    x = self.embed_decoder(prev_frame_ids_BxK).mean(axis=1, keepdims=True)
    return self.decoder.decoder.temporal_decoder.step(x, frame_index, caches,
                                                      cross, cross_bias)

  def depth_step(self, x_Bx1xD, level_index, caches):
    """One depth position -> (logits (B, V) f32, new caches)."""
    h, caches = self.decoder.decoder.depth_decoder.step(x_Bx1xD, level_index,
                                                        caches)
    return self.decoder.head(h)[:, 0], caches


def init_params(cfg: TeacherConfig, rng: jax.Array):
  """Random f32 params (unboxed) for `cfg`."""
  g = cfg.geometry
  enc = jnp.ones((1, g.encoder_length), jnp.int32)
  tgt = jnp.full((1, g.decoder_length), g.codec_offset, jnp.int32)
  variables = TeacherModel(cfg).init(rng, enc, tgt)
  return nn.unbox(variables["params"])


def abstract_params(cfg: TeacherConfig):
  """(ShapeDtypeStruct tree, logical PartitionSpec tree) without allocating."""
  g = cfg.geometry
  enc = jax.ShapeDtypeStruct((1, g.encoder_length), jnp.int32)
  tgt = jax.ShapeDtypeStruct((1, g.decoder_length), jnp.int32)
  boxed = jax.eval_shape(TeacherModel(cfg).init, jax.random.key(0), enc, tgt)
  return nn.unbox(boxed["params"]), nn.get_partition_spec(boxed["params"])


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


def numpy_init_params(cfg: TeacherConfig, seed: int = 0):
  """Random f32 params in numpy with T5-like scales, without a Flax init.

  Kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.2^2) (jittered away
  from 1 so a dropped scale shows in tests), tables ~ N(0, 1). Orders of
  magnitude faster than `init_params` for large configs (no compile).
  """
  from flax.traverse_util import flatten_dict, unflatten_dict
  import numpy as np

  shapes, _ = abstract_params(cfg)
  rng = np.random.default_rng(seed)
  out = {}
  for path, s in flatten_dict(shapes).items():
    if path[-1] == "kernel":
      v = rng.standard_normal(s.shape) / np.sqrt(s.shape[0])
    elif path[-1] == "scale":
      v = 1.0 + 0.2 * rng.standard_normal(s.shape)
    else:
      v = rng.standard_normal(s.shape)
    out[path] = v.astype(np.float32)
  return unflatten_dict(out)
