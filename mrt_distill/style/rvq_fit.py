"""Fitting style RVQ codebooks: residual k-means over embeddings.

Shape letters: N points, S embedding width.
"""

from __future__ import annotations

import numpy as np

from mrt_distill.codec.base import seeded_rng


# ---- residual k-means quantiser ----------------------------------------------
def _nearest(x_NxS: np.ndarray, c_VxS: np.ndarray) -> np.ndarray:
  d = np.sum(c_VxS * c_VxS, axis=-1)[None, :] - 2.0 * (x_NxS @ c_VxS.T)
  return np.argmin(d, axis=-1)


def kmeans(x_NxS: np.ndarray, k: int, rng: np.random.Generator,
           iters: int = 30) -> np.ndarray:
  """Lloyd's k-means with k-means++ seeding -> float32 (k, S) centroids.

  An emptied cluster is re-seeded at the point farthest from its centroid,
  so all k codes stay in use.
  """
  x = np.asarray(x_NxS, np.float64)
  n = x.shape[0]
  if n < k:
    raise ValueError(f"k-means needs at least k={k} points, got {n}")
  cent = np.empty((k, x.shape[1]))
  cent[0] = x[rng.integers(n)]
  d2 = np.sum((x - cent[0])**2, axis=-1)
  for j in range(1, k):
    p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
    cent[j] = x[rng.choice(n, p=p)]
    d2 = np.minimum(d2, np.sum((x - cent[j])**2, axis=-1))
  for _ in range(iters):
    assign = _nearest(x, cent)
    err = np.sum((x - cent[assign])**2, axis=-1)
    for j in range(k):
      members = assign == j
      if members.any():
        cent[j] = x[members].mean(axis=0)
      else:
        far = int(np.argmax(err))
        cent[j] = x[far]
        err[far] = 0.0
  return cent.astype(np.float32)


def fit_rvq_codebooks(x_NxS: np.ndarray, depth: int, size: int, seed: int,
                      iters: int = 30) -> np.ndarray:
  """Residual k-means: level l fits the residual after levels < l.

  Returns:
    float32 (depth, size, S) codebooks for `rvq_quantize`.
  """
  rng = seeded_rng(seed, "mrt_distill.style.reference.rvq")
  residual = np.asarray(x_NxS, np.float32).copy()
  books = []
  for _ in range(depth):
    c = kmeans(residual, size, rng, iters)
    residual = residual - c[_nearest(residual, c)]
    books.append(c)
  return np.stack(books).astype(np.float32)
