"""Held-out evaluation of a trained neural codec, per number of RVQ levels.

Owns the codec's quality numbers (SNR and multi-resolution STFT distance on
held-out pieces, plus code usage per level). It scores a saved `NeuralCodec`
through its public API, so it is what `train_codec` reports after training
and can be rerun on any weights file.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill.audio_losses import DEFAULT_FFT_SIZES
from mrt_distill.audio_losses import multi_resolution_stft_loss
from mrt_distill.codec.neural import NeuralCodec
from mrt_distill.world.training.codec_data import eval_pieces

EVAL_LEVELS = (1, 2, 4, 8, 12)


def evaluate_codec(codec: NeuralCodec, *, seconds: float = 4.0,
                   pieces_per_style: int = 1,
                   styles: Sequence[str] | None = None,
                   levels: Sequence[int] = EVAL_LEVELS,
                   fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES) -> dict:
  """SNR and MR-STFT distance on held-out pieces, per number of RVQ levels.

  Goes through the public Codec API (encode_latents -> numpy greedy RVQ ->
  decode), i.e. exactly what token users get.

  Returns:
    {"snr_db": {K: mean dB}, "mr_stft": {K: mean}, "continuous": {...},
     "per_style_mr_stft_k8": {...}, "code_usage": [...], "pieces": n,
     "seconds": s} with K as str keys ("1", "2", ...) for json.
  """
  g = codec.geometry
  items = eval_pieces(g, seconds, pieces_per_style, styles)
  audio = np.stack([a for _, _, a in items])  # (P, S, C)
  s = audio.shape[1]
  latents = codec.encode_latents(audio)
  max_k = max(levels)
  codes = codec.quantize(latents, max_k)
  mr_fn = jax.jit(functools.partial(
      multi_resolution_stft_loss, fft_sizes=tuple(fft_sizes), axis=-2,
      reduce=False))

  def score(rec):
    rec = np.asarray(rec)[:, :s]
    err = np.sum((audio - rec)**2, axis=(1, 2))
    ref = np.sum(audio**2, axis=(1, 2))
    snr = 10.0 * np.log10(ref / np.maximum(err, 1e-20))
    mr = np.asarray(mr_fn(jnp.asarray(rec), jnp.asarray(audio)))[:, 0]
    return snr, mr

  out = {"snr_db": {}, "mr_stft": {}, "pieces": len(items),
         "seconds": float(seconds)}
  per_style = {}
  for k in levels:
    snr, mr = score(codec.decode(codes[..., :k]))
    out["snr_db"][str(k)] = float(np.mean(snr))
    out["mr_stft"][str(k)] = float(np.mean(mr))
    if k == 8:
      for (style, _, _), m in zip(items, mr):
        per_style.setdefault(style, []).append(float(m))
  snr, mr = score(codec.decode_latents(jnp.asarray(latents)))
  out["continuous"] = {"snr_db": float(np.mean(snr)),
                       "mr_stft": float(np.mean(mr))}
  if per_style:
    out["per_style_mr_stft_k8"] = {k: float(np.mean(v))
                                   for k, v in per_style.items()}
  usage = []
  flat = codes.reshape(-1, max_k)
  for level in range(max_k):
    counts = np.bincount(flat[:, level], minlength=g.codebook_size)
    p = counts / counts.sum()
    usage.append({
        "used_fraction": float((counts > 0).mean()),
        "perplexity": float(np.exp(-np.sum(p * np.log(p + 1e-12)))),
    })
  out["code_usage"] = usage
  return out
