"""Prompt mixing: "techno:1.0, flute:0.5" -> one style embedding -> LM ids.

Shape letters: N prompts, S style embedding width.

Reference: reference/magenta_rt_v1.md §4.3. We follow the Colab demo recipe,
Σ wᵢ eᵢ / Σ wᵢ with zero-weight prompts skipped, not the README recipe
(normalise weights then take the mean), which shrinks the vector by N and so
changes the style tokens.
"""

from __future__ import annotations

import collections
import math
import weakref
from collections.abc import Sequence

import numpy as np

from mrt_distill.geometry import Geometry
from mrt_distill.style.base import StyleModel

# Text embeddings memoised per style model (the demo memoises them too); a
# weak key so a discarded model takes its cache with it.
_CACHE_SIZE = 256
_TEXT_CACHE: "weakref.WeakKeyDictionary[StyleModel, collections.OrderedDict]"
_TEXT_CACHE = weakref.WeakKeyDictionary()


def parse_prompt_mix(text: str) -> list[tuple[str, float]]:
  """Parse "a:1.0, b:0.5" into [("a", 1.0), ("b", 0.5)].

  A fragment without ":" has weight 1.0. The weight is whatever follows the
  last ":", so prompt text may itself contain colons when a weight is given.

  Raises:
    ValueError: empty input, an empty prompt, an unparseable, non-finite or
      negative weight; the message quotes the fragment.
  """
  if not isinstance(text, str) or not text.strip():
    raise ValueError(
        f"prompt mix {text!r} is empty; write e.g. 'techno:1.0, flute:0.5'")
  mix = []
  for i, fragment in enumerate(text.split(",")):
    frag = fragment.strip()
    if not frag:
      raise ValueError(
          f"prompt mix {text!r}: fragment {i} is empty (a stray comma?)")
    prompt, sep, weight_text = frag.rpartition(":")
    if not sep:
      prompt, weight = frag, 1.0
    else:
      weight = _parse_weight(weight_text, frag)
    prompt = prompt.strip()
    if not prompt:
      raise ValueError(
          f"prompt mix fragment {frag!r} has no prompt text before ':'")
    mix.append((prompt, weight))
  return mix


def _parse_weight(weight_text: str, frag: str) -> float:
  try:
    weight = float(weight_text.strip())
  except ValueError:
    raise ValueError(
        f"prompt mix fragment {frag!r}: weight {weight_text.strip()!r} is not "
        "a number; write 'prompt:0.5' (or drop ':' for weight 1.0)") from None
  if not math.isfinite(weight):
    raise ValueError(f"prompt mix fragment {frag!r}: weight must be finite")
  if weight < 0:
    raise ValueError(
        f"prompt mix fragment {frag!r}: weight {weight} is negative; weights "
        "must be >= 0")
  return weight


def _check_weights(weights: np.ndarray) -> np.ndarray:
  """(N,) weights -> float64; errors for empty, negative, non-finite, all 0."""
  w = np.asarray(weights, np.float64)
  if w.ndim != 1:
    raise ValueError(f"weights of shape {w.shape}: expected (N,)")
  if w.size == 0:
    raise ValueError("no prompts to mix: give at least one (prompt, weight)")
  if not np.all(np.isfinite(w)):
    raise ValueError(f"weights must be finite, got {w.tolist()}")
  if np.any(w < 0):
    raise ValueError(f"weights must be >= 0, got negative in {w.tolist()}")
  if not np.any(w > 0):
    raise ValueError(
        f"all prompt weights are zero ({w.tolist()}): nothing to mix; give "
        "at least one prompt a positive weight")
  return w


def mix_embeddings(embeddings: np.ndarray, weights: Sequence[float]
                   ) -> np.ndarray:
  """Weighted mean Σ wᵢ eᵢ / Σ wᵢ of (N, S) embeddings -> float32 (S,).

  Zero-weight rows are skipped entirely, so a not-yet-computed (NaN)
  embedding with weight 0 cannot poison the mix.
  """
  w = _check_weights(weights)
  emb = np.asarray(embeddings)
  if emb.ndim != 2 or emb.shape[0] != w.shape[0]:
    raise ValueError(
        f"embeddings of shape {emb.shape} do not match {w.shape[0]} weights: "
        "expected (N, S) with one row per weight")
  keep = w > 0
  emb = emb[keep].astype(np.float64)
  if not np.all(np.isfinite(emb)):
    raise ValueError("an embedding with non-zero weight contains NaN or inf")
  return (w[keep] @ emb / w[keep].sum()).astype(np.float32)


def embed_prompt_mix(style_model: StyleModel,
                     mix: str | Sequence[tuple[str, float]]) -> np.ndarray:
  """Text prompt mix -> float32 (S,) style embedding (memoised per text).

  Args:
    style_model: supplies `embed_text`.
    mix: "a:1.0, b:0.5" or [("a", 1.0), ("b", 0.5)].
  """
  if isinstance(mix, str):
    mix = parse_prompt_mix(mix)
  mix = list(mix)
  for item in mix:
    if (not isinstance(item, (tuple, list)) or len(item) != 2
        or not isinstance(item[0], str)):
      raise ValueError(
          f"prompt mix item {item!r}: expected a (prompt text, weight) pair")
  w = _check_weights([float(wt) for _, wt in mix])
  # Only prompts that count are embedded (the demo skips zero weights too).
  texts = [t for (t, _), wt in zip(mix, w) if wt > 0]
  emb = np.stack([_cached_text_embedding(style_model, t) for t in texts])
  return mix_embeddings(emb, w[w > 0])


def _cached_text_embedding(style_model: StyleModel, text: str) -> np.ndarray:
  cache = _TEXT_CACHE.setdefault(style_model, collections.OrderedDict())
  if text in cache:
    cache.move_to_end(text)
    return cache[text]
  emb = np.asarray(style_model.embed_text(text)[0], np.float32)
  emb.setflags(write=False)  # Shared between calls: keep it immutable.
  cache[text] = emb
  if len(cache) > _CACHE_SIZE:
    cache.popitem(last=False)
  return emb


def clear_prompt_cache() -> None:
  """Forget every memoised text embedding."""
  _TEXT_CACHE.clear()


def style_tokens(style_model: StyleModel, geometry: Geometry,
                 embedding: np.ndarray) -> np.ndarray:
  """Style embedding (..., S) -> int32 LM ids (..., style_levels).

  Tokenises with the model's RVQ, keeps the first `geometry.style_levels`
  levels (the ones the encoder sees) and maps them into the vocabulary with
  `geometry.style_to_ids`.
  """
  mg = style_model.geometry
  fields = ("style_embed_dim", "style_rvq_depth", "style_codebook_size")
  diff = [f"{f}: model {getattr(mg, f)} vs geometry {getattr(geometry, f)}"
          for f in fields if getattr(mg, f) != getattr(geometry, f)]
  if diff:
    raise ValueError(
        f"style model (geometry {mg.name!r}) does not fit geometry "
        f"{geometry.name!r}: " + "; ".join(diff))
  codes = style_model.tokenize(embedding, geometry.style_levels)
  return geometry.style_to_ids(codes)
