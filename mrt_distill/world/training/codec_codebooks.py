"""RVQ codebook state for the codec trainer (`train_codec`).

Owns how the 12 codebooks are born and kept alive: k-means initialisation
level by level on encoder residuals (`kmeans_rvq`), the EMA state built from
them (`vq_state_from_books`), and the per-step EMA update with dead-code
restarts (`ema_update`). These are the quantiser's own dynamics, separate
from the gradient step that trains encoder and decoder.

Shape letters as in `train_codec`: D latent width, L RVQ levels, V codebook
size, N latent vectors in a batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def kmeans_rvq(latents: np.ndarray, depth: int, size: int, iters: int,
               rng: np.random.Generator,
               dim_masks: np.ndarray | None = None,
               level_sizes: tuple[int, ...] | None = None) -> np.ndarray:
  """Fit RVQ codebooks level by level with k-means: (N, D) -> (L, V, D).

  `dim_masks` (L, D) of 0/1: level l's codewords live in the dimensions its
  mask keeps (zero elsewhere), so its choice depends on those alone
  (`level_dim_masks`). `level_sizes` (L,): codes used per level (<= size);
  the rest are parked on copies of the level's code 0 (`limit_levels`)."""
  full = np.asarray(latents, np.float32).copy()
  n, d = full.shape
  books = np.zeros((depth, size, d), np.float32)
  for level in range(depth):
    mask = (np.ones(d, np.float32) if dim_masks is None
            else np.asarray(dim_masks[level], np.float32))
    k = size if level_sizes is None else int(level_sizes[level])
    residual = full * mask
    book = _kmeans(residual, k, iters, rng) * mask
    books[level, :k] = book
    books[level, k:] = book[0]
    full = full - book[_nearest(residual, book)]
  return books


def _kmeans(x: np.ndarray, k: int, iters: int,
            rng: np.random.Generator) -> np.ndarray:
  """(N, D) -> (k, D) centroids."""
  n = len(x)
  scale = float(np.sqrt(np.mean(x**2))) + 1e-8
  if n >= k:
    book = x[rng.choice(n, k, replace=False)].copy()
  else:
    # Too few vectors (tiny test runs): repeat them with a little jitter.
    book = x[rng.choice(n, k, replace=True)].copy()
    book += 0.01 * scale * rng.standard_normal(book.shape).astype(np.float32)
  for _ in range(iters):
    assign = _nearest(x, book)
    counts = np.bincount(assign, minlength=k)
    sums = np.zeros_like(book)
    np.add.at(sums, assign, x)
    used = counts > 0
    book[used] = sums[used] / counts[used, None]
    # Empty clusters restart at random points so every code is useful.
    n_empty = int((~used).sum())
    if n_empty:
      book[~used] = x[rng.choice(n, n_empty, replace=n_empty > n)]
  return book


def _nearest(x: np.ndarray, book: np.ndarray) -> np.ndarray:
  dist = np.sum(book * book, -1)[None, :] - 2.0 * x @ book.T
  return np.argmin(dist, axis=-1)


def vq_state_from_books(books: np.ndarray, vectors_per_step: int) -> dict:
  """EMA state whose codebooks are `books`, each code at average usage."""
  _, size, _ = books.shape
  usage = np.full(books.shape[:2], vectors_per_step / size, np.float32)
  return {"books": jnp.asarray(books), "usage": jnp.asarray(usage),
          "sums": jnp.asarray(books * usage[..., None]),
          "idle": jnp.zeros(books.shape[:2], jnp.int32)}


def ema_update(vq: dict, codes: jax.Array, inputs: jax.Array, key: jax.Array,
               decay: float, restart_after_steps: int):
  """EMA codebook update with dead-code restarts.

  Args:
    vq: {"books" (L, V, D), "usage" (L, V) EMA counts, "sums" (L, V, D) EMA
      sums of assigned vectors, "idle" (L, V) steps since last use}.
    codes: (L, N) codes chosen at each level.
    inputs: (L, N, D) residual entering each level.
    key: PRNG key for restarts.
    decay: EMA decay.
    restart_after_steps: see train_codec.TrainHParams.

  Returns:
    (new vq, {"perplexity": (L,), "restarted": scalar}).
  """
  depth, size, _ = vq["books"].shape
  n = codes.shape[1]
  onehot = jax.nn.one_hot(codes, size, dtype=jnp.float32)  # (L, N, V)
  counts = onehot.sum(1)
  sums = jnp.einsum("lnv,lnd->lvd", onehot, inputs)
  usage = decay * vq["usage"] + (1.0 - decay) * counts
  ema_sums = decay * vq["sums"] + (1.0 - decay) * sums
  total = usage.sum(-1, keepdims=True)
  # Laplace smoothing keeps rarely used codes from dividing by ~0.
  smoothed = (usage + 1e-5) / (total + size * 1e-5) * total
  books = ema_sums / smoothed[..., None]
  idle = jnp.where(counts > 0, 0, vq["idle"] + 1)
  dead = idle >= restart_after_steps
  pick = jax.random.randint(key, (depth, size), 0, n)
  fresh = jnp.take_along_axis(inputs, pick[..., None], axis=1)  # (L, V, D)
  books = jnp.where(dead[..., None], fresh, books)
  # A restarted code starts at half the mean usage: enough weight that one
  # stray assignment does not fling it away, little enough to move fast.
  restart_usage = 0.5 * n / size
  usage = jnp.where(dead, restart_usage, usage)
  ema_sums = jnp.where(dead[..., None], fresh * restart_usage, ema_sums)
  idle = jnp.where(dead, 0, idle)
  p = counts / n
  perplexity = jnp.exp(-jnp.sum(p * jnp.log(p + 1e-10), axis=-1))
  return ({"books": books, "usage": usage, "sums": ema_sums, "idle": idle},
          {"perplexity": perplexity, "restarted": dead.sum()})


def level_dim_masks(depth: int, dim: int, coarse_levels: int,
                    coarse_dims: int, split: bool = False) -> np.ndarray:
  """(L, D) masks: the first `coarse_levels` levels see only the first
  `coarse_dims` latent dimensions (the part trained to be shift-invariant,
  train_codec.TrainHParams), the others see all. `split`: the coarse
  levels share those dimensions out, each its own slice (a product
  quantiser), so a coarse token depends on its slice alone instead of on
  the residual of the level before. coarse_dims 0: all see all."""
  masks = np.ones((depth, dim), np.float32)
  if coarse_dims:
    masks[:coarse_levels, coarse_dims:] = 0.0
    if split:
      edges = np.linspace(0, coarse_dims, coarse_levels + 1).round().astype(
          int)
      for lv in range(coarse_levels):
        masks[lv, :edges[lv]] = 0.0
        masks[lv, edges[lv + 1]:] = 0.0
  return masks


def limit_levels(vq: dict, dim_masks: jax.Array,
                 code_masks: jax.Array) -> dict:
  """Keeps every level's codewords in its dimensions (`level_dim_masks`)
  and its unused codes (code_masks (L, V) False) parked, after an EMA
  update or a restart moved them.

  A parked code is a copy of the level's code 0: the nearest-codeword
  search breaks the tie to the lower index, so it is never chosen, and a
  model that writes its id anyway decodes to a sound codeword (runtime
  encoders, decoders and the coupling's flow codebooks need no change)."""
  books = vq["books"] * dim_masks[:, None, :]
  books = jnp.where(code_masks[..., None], books, books[:, :1])
  # Parked codes are never chosen: keep them from counting as dead.
  idle = jnp.where(code_masks, vq["idle"], 0)
  return {**vq, "books": books, "idle": idle}
