"""Coupled sampling: the teacher's chunk as a function of a noise tensor.

Why. The teacher samples tokens; a context and a style have many valid
chunks. A student fed noise that is *independent* of the teacher's sampling
can only regress onto their conditional mean -- a static, quiet, blurred
chunk (measured: docs/benchmarks.md, runs 1-32). Here every token the
teacher samples is a deterministic function of its final distribution for
that token and a noise vector drawn up front for the whole chunk, so the
chunk is a *function* of (context, style, noise) and the student, given the
same noise, can learn that function (Distilled Decoding, DD1, arXiv
2412.17153; the same argument for a diffusion teacher's ODE is what makes
consistency distillation well posed).

How (DD1's flow map, per token). Noise z ~ N(0, I_D) lives in the codec's
codeword space of the token's RVQ level (codewords normalised per level to
zero mean, unit variance per dimension). The flow-matching path
x_t = t c + (1 - t) z that carries N(0, I) to the teacher's categorical
distribution p over the level's codewords c_k has the closed-form velocity

  v(x, t) = (E[c | x_t = x] - x) / (1 - t),
  E[c | x_t = x] = sum_k w_k c_k,  w_k ∝ p_k N(x; t c_k, (1 - t)^2 I).

We integrate it with FLOW_STEPS exponential (DDIM-like) steps, exact while
the posterior mean stays put, on a grid dense where the posterior sharpens;
the token is the posterior's argmax at the last grid point. The map pushes
N(0, I) onto p up to the integration error; `tests/test_coupling.py`
measures that error (total variation) at the rollouts' settings.

What the student gets: the same z, shape (B, C, K, D) per chunk (frames,
generated levels, codeword dims). At serving time it draws z itself with
`draw_noise`; nobody needs the teacher.

Shapes: B batch, C chunk frames, K generated levels, V codes per level,
D codeword (= codec latent) width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill.geometry import Geometry

# Integration steps of the flow map (static: a fixed-size loop in the decode).
FLOW_STEPS = 24
# The grid in signal-to-noise ratio t / (1 - t), log-spaced between these
# (then t = 0 first): the posterior over unit-variance codewords in D ~ 64
# dimensions is flat below ~1e-2 and one-hot above ~10. Measured on the
# reference codebooks (top-20 distributions, 40k draws): total variation
# to p 0.017 mean / 0.024 max at 24 steps and this range, 0.025 / 0.037 at
# 16 steps, 0.024 / 0.036 at 24 steps over (1e-3, 30); a true categorical
# draw's sampling floor is 0.007.
FLOW_SNR_RANGE = (1e-2, 10.0)
# Noise layout version, saved with a coupled student: a student file whose
# layout differs from this code's is refused instead of playing garbage.
NOISE_LAYOUT = "dd1-flow/v1: z (C frames, K levels, D codeword dims) ~ N(0, I)"


def noise_shape(geometry: Geometry, batch: int,
                frames: int | None = None) -> tuple[int, int, int, int]:
  """(B, C, K, D) of one chunk's coupling noise."""
  g = geometry
  return (int(batch), int(g.chunk_frames if frames is None else frames),
          g.target_levels, g.codec_latent_dim)


def draw_noise(key: jax.Array, geometry: Geometry, batch: int,
               frames: int | None = None) -> jax.Array:
  """One chunk's coupling noise (B, C, K, D) ~ N(0, I): the single place
  where teacher rollouts and the serving student draw it."""
  return jax.random.normal(key, noise_shape(geometry, batch, frames),
                           jnp.float32)


def check_noise(noise, geometry: Geometry, batch: int,
                frames: int | None = None, what: str = "coupling noise"):
  """Raises ValueError naming a noise tensor that does not fit the
  geometry (a rollout of another world or chunk length)."""
  want = noise_shape(geometry, batch, frames)
  got = tuple(np.shape(noise))
  if got != want:
    raise ValueError(
        f"{what} has shape {got}, geometry {geometry.name!r} needs {want} "
        f"(batch, chunk frames, generated levels, codeword dims): it was "
        f"drawn for another geometry or chunk length; draw it with "
        f"mrt_distill.coupling.draw_noise")


def flow_codebooks(codebooks_LxVxD, levels: int) -> np.ndarray:
  """The codec's first `levels` codebooks, each normalised to zero mean and
  unit variance per dimension (over its codes) -> float32 (K, V, D).

  Deep RVQ levels have tiny codewords; unnormalised, the noise would swamp
  them and the map would hinge on the last integration step."""
  books = np.asarray(codebooks_LxVxD, np.float64)[:levels]
  mean = books.mean(axis=1, keepdims=True)
  std = np.sqrt(((books - mean) ** 2).mean(axis=(1, 2), keepdims=True))
  return ((books - mean) / np.maximum(std, 1e-12)).astype(np.float32)


def flow_grid(steps: int = FLOW_STEPS) -> np.ndarray:
  """Times 0 = t_0 < t_1 < ... < t_steps < 1 (log-spaced SNR)."""
  lo, hi = FLOW_SNR_RANGE
  snr = np.geomspace(lo, hi, steps)
  return np.concatenate([[0.0], snr / (1.0 + snr)]).astype(np.float32)


def _log_posterior(log_p_BxV, x_BxD, t, books_VxD):
  """log w_k = log p_k - |x - t c_k|^2 / (2 (1 - t)^2), unnormalised."""
  # |x - t c|^2 = |x|^2 - 2 t <x, c> + t^2 |c|^2; |x|^2 is the same for all k.
  xc = x_BxD @ books_VxD.T  # (B, V)
  cc = jnp.sum(books_VxD * books_VxD, axis=-1)[None, :]  # (1, V)
  return log_p_BxV - (t * t * cc - 2.0 * t * xc) / (2.0 * (1.0 - t) ** 2)


def flow_map(log_p_BxV, z_BxD, books_VxD, steps: int = FLOW_STEPS):
  """The DD1 flow map: noise z (B, D) -> code (B,) int32 distributed as p.

  log_p: log-probabilities over the level's V codes (-inf or very negative
  outside top-k). Deterministic: the same (log_p, z) always gives the same
  code. Pure jnp; jit- and vmap-safe; `steps` static.
  """
  grid = jnp.asarray(flow_grid(steps))
  log_p = log_p_BxV.astype(jnp.float32)
  books = books_VxD.astype(jnp.float32)
  x = jax.lax.fori_loop(
      0, steps, lambda i, x: _flow_step(x, grid[i], grid[i + 1], log_p, books),
      z_BxD.astype(jnp.float32), unroll=True)
  final = _log_posterior(log_p, x, grid[steps], books)
  return jnp.argmax(final, axis=-1).astype(jnp.int32)


def _flow_step(x_BxD, t, t_next, log_p_BxV, books_VxD):
  """x_t -> x_t_next, exact while the posterior mean c_hat stays put:
  x_t = t c + (1 - t) z gives z_hat = (x_t - t c_hat) / (1 - t)."""
  w = jax.nn.softmax(_log_posterior(log_p_BxV, x_BxD, t, books_VxD), axis=-1)
  c_hat = w @ books_VxD  # posterior mean (B, D)
  z_hat = (x_BxD - t * c_hat) / (1.0 - t)
  return t_next * c_hat + (1.0 - t_next) * z_hat


def flow_trajectory(log_p_BxV, z_BxD, books_VxD, steps: int = FLOW_STEPS):
  """Every x_t of `flow_map`'s integration -> (steps + 1, B, D) (figures)."""
  grid = flow_grid(steps)
  xs = [jnp.asarray(z_BxD, jnp.float32)]
  for i in range(steps):
    xs.append(_flow_step(xs[-1], grid[i], grid[i + 1], log_p_BxV, books_VxD))
  return jnp.stack(xs)


def student_latent_noise(noise_BxCxKxD):
  """The part of the coupling noise the student reads as its noisy latent
  x (its level-0 slice, already in latent space): (B, C, D). The whole
  tensor reaches the student through its `noise_in` head."""
  return noise_BxCxKxD[:, :, 0, :]
