"""Audio preparation for the reference style model and the judges: float32
mono at the model's rate, cut into fixed-length windows.

Shape letters: B batch, N audio samples, W analysis windows.
"""

from __future__ import annotations

import logging

import numpy as np

from mrt_distill.style.base import check_style_audio

log = logging.getLogger(__name__)


# ---- audio preparation -------------------------------------------------------
def prepare_mono_audio(audio, sample_rate: int, target_rate: int, *,
                       resample: bool, who: str) -> np.ndarray:
  """(N,), (N, C) or (B, N, C) float audio -> float32 mono (B, N') at
  `target_rate`.

  Channels are averaged (MusicCoCa's default). A different sample rate is
  resampled with librosa (logged at INFO) when `resample`, else refused; both
  messages name the two rates.
  """
  mono_BxN = check_style_audio(audio, sample_rate)
  if sample_rate != target_rate:
    if not resample:
      raise ValueError(
          f"{who}: audio at {sample_rate} Hz, but the model runs at "
          f"{target_rate} Hz; resample it first or pass resample=True")
    import librosa  # Slow to import; only needed here.
    log.info("%s: resampling audio from %d Hz to %d Hz", who, sample_rate,
             target_rate)
    mono_BxN = librosa.resample(mono_BxN, orig_sr=int(sample_rate),
                                target_sr=int(target_rate), axis=-1)
  return np.ascontiguousarray(mono_BxN, np.float32)


def split_windows(mono_BxN: np.ndarray, window: int, *, keep_tail: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Cut each clip into non-overlapping windows.

  Args:
    mono_BxN: float32 mono audio.
    window: samples per window.
    keep_tail: keep a final partial window (zero-padded, weighted by its
      share of real samples) as MusicCoCa's `pad_end=True` does; otherwise
      drop it. A clip shorter than one window always gives one padded window.

  Returns:
    windows (W, window), owner clip index (W,), weight (W,) = fraction of
    real samples.
  """
  wins, owner, weight = [], [], []
  for b, x in enumerate(mono_BxN):
    n = x.shape[0]
    count = -(-n // window) if keep_tail else max(1, n // window)
    for k in range(count):
      seg = x[k * window:(k + 1) * window]
      wins.append(np.pad(seg, (0, window - seg.shape[0])))
      owner.append(b)
      weight.append(seg.shape[0] / window)
  return (np.stack(wins).astype(np.float32), np.asarray(owner),
          np.asarray(weight, np.float32))
