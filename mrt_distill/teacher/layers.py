"""T5.1.1 building blocks with flaxformer semantics (reference §2.3).

Parameter names and 2-D kernel layouts match flaxformer, so a t5x checkpoint
maps onto them without transposes. Every parameter carries logical axis names.

Numerics (v1): parameters f32; RMSNorm statistics in f32, output cast to the
activation dtype; dense layers compute in the activation dtype; attention
logits and softmax in the activation dtype; no 1/sqrt(Hd) logit scaling.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill import axes

NEG_INF = -1e10  # flaxformer's additive mask value


def _param(mod: nn.Module, name: str, init, shape, names):
  return mod.param(name, nn.with_logical_partitioning(init, names), shape,
                   jnp.float32)


class RMSNorm(nn.Module):
  """T5LayerNorm: x / sqrt(mean(x^2) + eps) * scale, stats in f32."""
  dtype: jnp.dtype = jnp.bfloat16
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x_BxLxD):
    x = x_BxLxD.astype(jnp.float32)
    var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    y = (x * jax.lax.rsqrt(var + self.eps)).astype(self.dtype)
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],),
                   (axes.EMBED,))
    # Explicit rank: the project runs with jax_numpy_rank_promotion='raise'.
    return y * scale.astype(self.dtype).reshape((1,) * (y.ndim - 1) + (-1,))


class Dense(nn.Module):
  """Bias-free dense layer with a 2-D (in, out) kernel named `kernel`.

  `lora_rank` r > 0 adds a low-rank update (LoRA, Hu et al. 2021):
  y = x W + (x A) B * (alpha / r), A `lora_a` (in, r) ~ N(0, 1/in), B
  `lora_b` (r, out) zeros, so a fresh adapter leaves the layer unchanged;
  alpha defaults to r (scale 1).
  The student freezes `kernel` and trains only A and B.
  """
  features: int
  names: tuple[str, str]
  dtype: jnp.dtype = jnp.bfloat16
  lora_rank: int = 0
  lora_alpha: float | None = None
  # None: truncated-normal fan-in scaling (the teacher's). New student heads
  # may start elsewhere, e.g. at zero.
  kernel_init: Callable | None = None

  @nn.compact
  def __call__(self, x):
    init = self.kernel_init or nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal")
    kernel = _param(self, "kernel", init, (x.shape[-1], self.features),
                    self.names)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.lora_rank:
      r = self.lora_rank
      a = _param(self, "lora_a", nn.initializers.variance_scaling(
          1.0, "fan_in", "normal"), (x.shape[-1], r),
                 (self.names[0], axes.LORA_RANK))
      b = _param(self, "lora_b", nn.initializers.zeros, (r, self.features),
                 (axes.LORA_RANK, self.names[1]))
      low = jnp.dot(x.astype(self.dtype), a.astype(self.dtype))
      scale = (r if self.lora_alpha is None else self.lora_alpha) / r
      y = y + jnp.dot(low, b.astype(self.dtype)) * scale
    return y


class MlpBlock(nn.Module):
  """Gated GELU MLP: wo(gelu_tanh(x wi_0) * (x wi_1))."""
  hidden: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.bfloat16
  lora_rank: int = 0

  @nn.compact
  def __call__(self, x_BxLxD, deterministic: bool = True):
    d = x_BxLxD.shape[-1]
    dense = functools.partial(Dense, dtype=self.dtype,
                              lora_rank=self.lora_rank)
    h0 = dense(self.hidden, (axes.EMBED, axes.MLP), name="wi_0")(x_BxLxD)
    h1 = dense(self.hidden, (axes.EMBED, axes.MLP), name="wi_1")(x_BxLxD)
    h = nn.gelu(h0, approximate=True) * h1
    h = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
        h, deterministic=deterministic)
    return dense(d, (axes.MLP, axes.EMBED), name="wo")(h)


class Attention(nn.Module):
  """Multi-head dot-product attention, no biases, no logit scaling.

  Q/K/V kernels are (D, H*Hd), O is (H*Hd, D), head-major columns.
  `__call__` is the full (parallel) form; `project_kv` + `attend` let decode
  loops keep KV caches.
  """
  num_heads: int
  head_dim: int
  d_model: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.bfloat16
  lora_rank: int = 0

  def setup(self):
    hd = self.num_heads * self.head_dim
    mk = lambda n: Dense(hd, (axes.EMBED, axes.JOINED_KV), self.dtype,
                         self.lora_rank, name=n)
    self.query, self.key, self.value = mk("query"), mk("key"), mk("value")
    self.out = Dense(self.d_model, (axes.JOINED_KV, axes.EMBED), self.dtype,
                     self.lora_rank, name="out")
    self.drop = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))

  def _split(self, x_BxLxHD):
    b, l, _ = x_BxLxHD.shape
    return x_BxLxHD.reshape(b, l, self.num_heads, self.head_dim)

  def project_q(self, x_BxQxD):
    return self._split(self.query(x_BxQxD))

  def project_kv(self, x_BxKxD):
    """-> (k, v) each (B, L, H, Hd) in the activation dtype."""
    return self._split(self.key(x_BxKxD)), self._split(self.value(x_BxKxD))

  def attend(self, q_BxQxHxHd, k_BxKxHxHd, v_BxKxHxHd, bias=None,
             deterministic: bool = True):
    """bias: additive, broadcastable to (B, H, Q, K)."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q_BxQxHxHd, k_BxKxHxHd)
    if bias is not None:
      logits = logits + bias.astype(logits.dtype)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    # flaxformer broadcasts attention dropout over the query axis.
    probs = self.drop(probs, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v_BxKxHxHd)
    b, q = out.shape[:2]
    return self.out(out.reshape(b, q, self.num_heads * self.head_dim))

  def __call__(self, x_q, x_kv, bias=None, deterministic: bool = True):
    q = self.project_q(x_q)
    k, v = self.project_kv(x_kv)
    return self.attend(q, k, v, bias, deterministic)


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
  """flaxformer FixedEmbed table (length, dim): [sin | cos], not interleaved.

  f_i = exp(-i ln(10000) / (dim/2 - 1)), i = 0..dim/2-1.
  """
  half = dim // 2
  freqs = np.exp(-np.arange(half) * (np.log(10000.0) / max(half - 1, 1)))
  ang = np.arange(length)[:, None] * freqs[None, :]
  return np.concatenate([np.sin(ang), np.cos(ang)], axis=1).astype(np.float32)


def relative_buckets(rel_qk: np.ndarray, num_buckets: int,
                     max_distance: int) -> np.ndarray:
  """T5 unidirectional buckets of n = max(q - k, 0) (decoder stacks).

  Exact for n < num_buckets/2, log-spaced above, clipped at num_buckets-1.
  rel_qk = query_position - key_position.
  """
  n = np.maximum(np.asarray(rel_qk), 0)
  max_exact = num_buckets // 2
  small = n < max_exact
  large = max_exact + (
      np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
      / np.log(max_distance / max_exact) * (num_buckets - max_exact)
  ).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  return np.where(small, n, large).astype(np.int32)


class RelativePositionBias(nn.Module):
  """Shared per-stack relpos table `rel_embedding` (H, buckets)."""
  num_heads: int
  num_buckets: int
  max_distance: int
  dtype: jnp.dtype = jnp.bfloat16

  @nn.compact
  def __call__(self, q_pos, k_pos):
    """q_pos (Q,), k_pos (K,) int arrays -> bias (1, H, Q, K)."""
    table = _param(self, "rel_embedding", nn.initializers.normal(1.0),
                   (self.num_heads, self.num_buckets),
                   (axes.HEADS, axes.RELPOS))
    rel = q_pos[:, None] - k_pos[None, :]
    n = jnp.maximum(rel, 0)
    max_exact = self.num_buckets // 2
    large = max_exact + (
        jnp.log(n.astype(jnp.float32) / max_exact + jnp.finfo(jnp.float32).eps)
        / np.log(self.max_distance / max_exact)
        * (self.num_buckets - max_exact)).astype(jnp.int32)
    bucket = jnp.where(n < max_exact, n,
                       jnp.minimum(large, self.num_buckets - 1))
    return table.astype(self.dtype)[:, bucket][None]


def causal_bias(q_pos, k_pos):
  """Additive causal mask (1, 1, Q, K): 0 where k <= q, NEG_INF after."""
  return jnp.where(k_pos[None, :] <= q_pos[:, None], 0.0, NEG_INF)[None, None]

