"""Spectral audio losses as pure jax.numpy functions (jit- and grad-safe).

Shape letters: B batch (any leading axes), S samples, N STFT frames,
F frequency bins (n_fft // 2 + 1).

Used by the codec trainer (`mrt_distill.world.training.train_codec`) and by the
distillation's spectral-structure loss, which differentiates through the
codec decoder, so nothing here may leave jax.numpy or branch on values.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_FFT_SIZES = (2048, 1024, 512, 256, 128)
# Floor under magnitudes before the log: about -100 dB relative to a full
# scale sinusoid, so digital silence compares equal to digital silence instead
# of amplifying float noise.
DEFAULT_LOG_EPS = 1e-5


def hann_window(length: int) -> np.ndarray:
  """Periodic Hann window (length,): constant overlap-add at hop length/4."""
  n = np.arange(length)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)).astype(np.float32)


def frame_signal(x: jax.Array, frame_length: int, hop: int) -> jax.Array:
  """Cut (..., S) into overlapping frames (..., N, frame_length).

  N = 1 + (S - frame_length) // hop; the caller pads first. When hop divides
  the frame length the frames are built from strided slices of a reshape
  (cheap forward and backward); otherwise with a gather.
  """
  s = x.shape[-1]
  if s < frame_length:
    raise ValueError(
        f"signal of {s} samples is shorter than one frame ({frame_length}); "
        "pad it or use smaller FFT sizes")
  n = 1 + (s - frame_length) // hop
  if frame_length % hop == 0:
    r = frame_length // hop
    segs = x[..., :(n + r - 1) * hop]
    segs = segs.reshape(*x.shape[:-1], n + r - 1, hop)
    # Frame i is segments i .. i + r - 1, laid end to end.
    parts = [segs[..., k:k + n, :] for k in range(r)]
    return jnp.concatenate(parts, axis=-1)
  idx = (np.arange(n)[:, None] * hop + np.arange(frame_length)[None, :])
  return x[..., idx]


def stft(x: jax.Array, n_fft: int, hop: int, *,
         center: bool = True) -> jax.Array:
  """Complex STFT with a periodic Hann window: (..., S) -> (..., N, F).

  center=True reflect-pads n_fft // 2 samples each side (librosa's default),
  so frame i is centred on sample i * hop.
  """
  x = jnp.asarray(x, jnp.float32)
  if center:
    pad = n_fft // 2
    if x.shape[-1] <= pad:
      # Reflection needs more samples than the pad; zeros are the fallback.
      widths = [(0, 0)] * (x.ndim - 1) + [(pad, pad)]
      x = jnp.pad(x, widths)
    else:
      widths = [(0, 0)] * (x.ndim - 1) + [(pad, pad)]
      x = jnp.pad(x, widths, mode="reflect")
  frames = frame_signal(x, n_fft, hop)
  # Explicit ranks: the project runs with jax_numpy_rank_promotion='raise'.
  window = hann_window(n_fft).reshape((1,) * (frames.ndim - 1) + (n_fft,))
  return jnp.fft.rfft(frames * window, axis=-1)


def stft_magnitude(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """|STFT| (..., N, F), with a tiny floor inside the sqrt.

  The floor keeps the gradient of the sqrt finite where a bin is exactly 0
  (padding, digital silence); 1e-12 is far below any audible level.
  """
  spec = stft(x, n_fft, hop)
  power = jnp.real(spec)**2 + jnp.imag(spec)**2
  return jnp.sqrt(power + 1e-12)


def spectral_convergence(x_mag: jax.Array, y_mag: jax.Array) -> jax.Array:
  """||Y| - |X||_F / ||Y||_F per leading index: (..., N, F) -> (...).

  Relative error: weights loud bins, complements the log-magnitude term
  which weights all bins alike. Normalised by the target y (not symmetric).
  """
  num = jnp.sqrt(jnp.sum((y_mag - x_mag)**2, axis=(-2, -1)))
  den = jnp.sqrt(jnp.sum(y_mag**2, axis=(-2, -1)) + 1e-12)
  return num / den


def log_magnitude_l1(x_mag: jax.Array, y_mag: jax.Array,
                     eps: float = DEFAULT_LOG_EPS) -> jax.Array:
  """Mean |log(|X| + eps) - log(|Y| + eps)| per leading index -> (...)."""
  d = jnp.abs(jnp.log(x_mag + eps) - jnp.log(y_mag + eps))
  return jnp.mean(d, axis=(-2, -1))


def multi_resolution_stft_loss(
    x: jax.Array,
    y: jax.Array,
    fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES,
    hops: Sequence[int] | None = None,
    *,
    axis: int = -1,
    sc_weight: float = 1.0,
    mag_weight: float = 1.0,
    eps: float = DEFAULT_LOG_EPS,
    reduce: bool = True,
    return_parts: bool = False,
):
  """Multi-resolution STFT loss between signal x (estimate) and y (target).

  For each FFT size: spectral convergence + log-magnitude L1 on Hann-windowed
  STFTs; the result is the mean over resolutions. It is 0 exactly when x == y,
  and it ignores phase, so it judges how audio sounds more than how its
  samples line up.

  Args:
    x: (..., S) estimate (or any layout with time on `axis`, e.g. codec audio
      (B, S, C) with axis=-2).
    y: the target, same shape as x.
    fft_sizes: FFT (= window) lengths, each <= S + 1 for the reflection pad.
    hops: hop per FFT size; default fft_size // 4.
    axis: the time axis of x and y.
    sc_weight: weight of spectral convergence.
    mag_weight: weight of the log-magnitude L1.
    eps: magnitude floor inside the log.
    reduce: True -> mean over the leading axes (scalar); False -> per signal
      values of shape x.shape without the time axis.
    return_parts: also return a dict {"sc": ..., "log_mag": ...} of the two
      terms averaged over resolutions (same reduction).

  Returns:
    The loss (scalar, or per signal), and the parts dict if asked.
  """
  x = jnp.moveaxis(jnp.asarray(x, jnp.float32), axis, -1)
  y = jnp.moveaxis(jnp.asarray(y, jnp.float32), axis, -1)
  if x.shape != y.shape:
    raise ValueError(
        f"x {x.shape} and y {y.shape} must have the same shape (time last)")
  fft_sizes = tuple(int(n) for n in fft_sizes)
  hops = tuple(n // 4 for n in fft_sizes) if hops is None else tuple(hops)
  if len(hops) != len(fft_sizes):
    raise ValueError(f"{len(fft_sizes)} fft_sizes but {len(hops)} hops")
  sc_total = 0.0
  mag_total = 0.0
  for n_fft, hop in zip(fft_sizes, hops):
    xm = stft_magnitude(x, n_fft, hop)
    ym = stft_magnitude(y, n_fft, hop)
    sc_total = sc_total + spectral_convergence(xm, ym)
    mag_total = mag_total + log_magnitude_l1(xm, ym, eps)
  sc = sc_total / len(fft_sizes)
  mag = mag_total / len(fft_sizes)
  loss = sc_weight * sc + mag_weight * mag
  if reduce:
    loss, sc, mag = jnp.mean(loss), jnp.mean(sc), jnp.mean(mag)
  if return_parts:
    return loss, {"sc": sc, "log_mag": mag}
  return loss


def complex_stft_loss(x: jax.Array, y: jax.Array, n_fft: int = 1024,
                      hop: int | None = None, *, max_bin: int | None = None,
                      axis: int = -1, reduce: bool = True) -> jax.Array:
  """Relative complex-STFT error ||X - Y||_F / ||Y||_F (phase-sensitive).

  Unlike the magnitude losses above it rewards matching phase, like a
  waveform loss, but it can be restricted to the lowest `max_bin` bins where
  phase is predictable from a low-rate code (bass, kick drums) and it is
  scale-free like spectral convergence.

  Args:
    x: estimate, time on `axis`.
    y: target, same shape.
    n_fft: window length.
    hop: hop (default n_fft // 4).
    max_bin: keep bins [0, max_bin) (default all).
    axis: the time axis.
    reduce: mean over the leading axes (scalar) or per signal.

  Returns:
    The loss.
  """
  x = jnp.moveaxis(jnp.asarray(x, jnp.float32), axis, -1)
  y = jnp.moveaxis(jnp.asarray(y, jnp.float32), axis, -1)
  if x.shape != y.shape:
    raise ValueError(f"x {x.shape} and y {y.shape} must have the same shape")
  hop = n_fft // 4 if hop is None else hop
  xs = stft(x, n_fft, hop)[..., :max_bin]
  ys = stft(y, n_fft, hop)[..., :max_bin]
  d = xs - ys
  num = jnp.sum(jnp.real(d)**2 + jnp.imag(d)**2, axis=(-2, -1))
  den = jnp.sum(jnp.real(ys)**2 + jnp.imag(ys)**2, axis=(-2, -1)) + 1e-12
  loss = jnp.sqrt(num / den)
  return jnp.mean(loss) if reduce else loss
