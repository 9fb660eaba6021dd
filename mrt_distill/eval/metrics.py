"""Evaluation metrics as pure functions of audio and embeddings.

Shape letters: N audio samples, B clips, W windows, E embedding width, T STFT
frames, F frequency bins, M mel bands.

Why these and not others: the harness compares a one-step student with its
teacher on what a listener would notice first. Each function answers one
question on plain arrays (no models inside), so each can be checked on a
synthetic signal whose answer is known (tests/eval/test_metrics.py):

  cosine, frechet                    embeddings: adherence and distribution
  log_mel_distance, mrstft_distance  timbre: spectra near the teacher's
  spectral_flux, onset_rate          transients
  estimate_tempo, tempo_agreement    rhythm against the prompt
  boundary_discontinuity             clicks or jumps where chunks meet
  pairwise_mean_distance             diversity over seeds (collapse -> 0)
  spectral_flatness, rms_db,
  stability_flags                    silence / noise / loss of style

Audio is float in [-1, 1]; metric functions take mono (N,) clips unless a
docstring says otherwise (`mono` averages channels first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# Magnitude floor (about -100 dB) inside logs, as in mrt_distill.audio_losses.
_EPS = 1e-5
# Log compression of magnitudes for spectral flux: log(1 + GAMMA |X|).
_FLUX_GAMMA = 100.0
# Defaults of the stability check (dBFS RMS, spectral flatness in [0, 1]).
# Rendered reference-world music sits at -13 .. -21 dBFS with flatness
# 0.001 .. 0.07; white noise has flatness ~0.56.
SILENCE_DB = -50.0
NOISE_FLATNESS = 0.3


# ---- plumbing ----------------------------------------------------------------
def mono(audio) -> np.ndarray:
  """(N,) -> (N,); (N, C) -> (N,); (B, N, C) -> (B, N): channel mean, f32."""
  a = np.asarray(audio, np.float32)
  if a.ndim == 1:
    return a
  if a.ndim in (2, 3):
    return a.mean(axis=-1)
  raise ValueError(f"audio of shape {a.shape}: expected (N,), (N, C) or "
                   "(B, N, C)")


def windows(x_N: np.ndarray, window: int, hop: int | None = None
            ) -> np.ndarray:
  """Windows of a mono clip: (N,) -> (W, window), every `hop` samples
  (default: non-overlapping); a tail shorter than a window is dropped, so
  W = 0 when N < window."""
  x = np.asarray(x_N, np.float32)
  hop = window if hop is None else int(hop)
  if window <= 0 or hop <= 0:
    raise ValueError(f"window {window} and hop {hop} must be positive")
  if x.shape[0] < window:
    return np.zeros((0, window), np.float32)
  starts = range(0, x.shape[0] - window + 1, hop)
  return np.stack([x[s:s + window] for s in starts])


def trailing_windows(x_N: np.ndarray, chunk: int, window: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """The window that ends at each chunk end, for chunk ends >= window.

  Gives one embedding per output chunk with the length the embedder was
  trained on (a 1 s chunk padded to a 4 s window would embed 3 s of
  silence). Returns windows (W, window) and the chunk index (W,) each one
  ends (chunk i ends at sample (i + 1) * chunk).
  """
  x = np.asarray(x_N, np.float32)
  idx = [i for i in range(x.shape[0] // chunk) if (i + 1) * chunk >= window]
  if not idx:
    return np.zeros((0, window), np.float32), np.zeros((0,), np.int64)
  wins = np.stack([x[(i + 1) * chunk - window:(i + 1) * chunk] for i in idx])
  return wins, np.asarray(idx, np.int64)


def ratio(a: float | None, b: float | None) -> float | None:
  """a / b, or None when either is missing or b is 0 (not a number to
  print as infinity in a report)."""
  if a is None or b is None or b == 0 or not np.isfinite(b):
    return None
  return float(a) / float(b)


def _frames(x_N: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """Uncentred frames (T, n_fft): frame t covers [t * hop, t * hop + n_fft).
  A clip shorter than one frame is zero-padded to one frame."""
  x = np.asarray(x_N, np.float32)
  if x.shape[0] < n_fft:
    x = np.pad(x, (0, n_fft - x.shape[0]))
  return np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]


def _magnitude(x_N: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """|STFT| (T, F) with a Hann window, scaled so a full-scale sinusoid on a
  bin peaks near 1 whatever n_fft is."""
  w = np.hanning(n_fft).astype(np.float32)
  spec = np.abs(np.fft.rfft(_frames(x_N, n_fft, hop) * w, axis=-1))
  return spec * (2.0 / w.sum())


# ---- embeddings --------------------------------------------------------------
def cosine(a, b) -> np.ndarray:
  """Row-wise cosine similarity: a (N, E) with b (N, E) or (E,) -> (N,).

  A zero vector has similarity 0 with everything (not NaN)."""
  a = np.atleast_2d(np.asarray(a, np.float64))
  b = np.asarray(b, np.float64)
  b = np.broadcast_to(b, a.shape) if b.ndim == 1 else np.atleast_2d(b)
  if a.shape != b.shape:
    raise ValueError(f"cosine of {a.shape} and {b.shape}: expected (N, E) "
                     "and (N, E) or (E,)")
  num = np.sum(a * b, axis=-1)
  den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
  return np.where(den > 0, num / np.maximum(den, 1e-30), 0.0)


def frechet(a_NxE: np.ndarray, b_MxE: np.ndarray) -> float | None:
  """Fréchet distance between Gaussians fitted to two embedding sets
  (FID/FAD's formula; `mrt_distill.world.runtime.judges.frechet_distance`), or
  None when a set has <= E rows: its E x E covariance would be singular,
  and a number from it is not comparable to one from a full-rank set."""
  a, b = np.asarray(a_NxE), np.asarray(b_MxE)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"embeddings {a.shape} and {b.shape}: expected (N, E) "
                     "and (M, E)")
  if min(a.shape[0], b.shape[0]) < a.shape[1] + 1:
    return None
  from mrt_distill.world.runtime.judges import frechet_distance  # pulls in flax
  return frechet_distance(a, b)


def pairwise_mean_distance(items: Sequence, dist: Callable[[object, object],
                                                             float]
                           ) -> float | None:
  """Mean of dist(items[i], items[j]) over pairs i < j; None for < 2 items."""
  n = len(items)
  if n < 2:
    return None
  vals = [dist(items[i], items[j]) for i in range(n) for j in range(i + 1, n)]
  return float(np.mean(vals))


def cosine_distance(a_E, b_E) -> float:
  """1 - cos(a, b) of two (E,) vectors: 0 for the same direction, 2 for
  opposite ones."""
  return float(1.0 - cosine(np.asarray(a_E)[None], np.asarray(b_E))[0])


# ---- spectra -----------------------------------------------------------------
def mean_log_mel_db(x_N: np.ndarray, sample_rate: int, n_mels: int = 64,
                    n_fft: int = 1024, hop: int = 256) -> np.ndarray:
  """Mean log-mel spectrum of a clip: (N,) -> (M,) in dB (10 log10 of the
  time-mean mel power; the -100 dB floor keeps silence finite)."""
  import librosa
  x = np.asarray(x_N, np.float32)
  n_fft = min(n_fft, max(16, 1 << int(math.log2(max(len(x), 16)))))
  mel = librosa.feature.melspectrogram(
      y=x, sr=sample_rate, n_fft=n_fft, hop_length=min(hop, n_fft // 4),
      n_mels=n_mels, fmax=sample_rate / 2)
  return 10.0 * np.log10(mel.mean(axis=1) + 1e-10)


def log_mel_distance(x_N: np.ndarray, y_N: np.ndarray, sample_rate: int,
                     n_mels: int = 64) -> float:
  """Timbre distance in dB: the mean over mel bands of |mean log-mel of x -
  mean log-mel of y|. Time order is ignored on purpose: two samples of a
  stochastic model from one context need not line up note for note, but
  should share a spectrum. 0 for identical clips; a clip 6 dB quieter than
  another is ~6 dB away."""
  return float(np.mean(np.abs(mean_log_mel_db(x_N, sample_rate, n_mels)
                              - mean_log_mel_db(y_N, sample_rate, n_mels))))


DEFAULT_MRSTFT_SIZES = (2048, 1024, 512, 256, 128)


def _stft_mag(x_BxN: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """|STFT| (B, T, F) as `audio_losses.stft_magnitude` computes it:
  reflect-padded by n_fft // 2 (centred frames), periodic Hann window."""
  pad = n_fft // 2
  mode = "reflect" if x_BxN.shape[-1] > pad else "constant"
  x = np.pad(x_BxN, [(0, 0), (pad, pad)], mode=mode)
  frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  spec = np.fft.rfft(frames[:, ::hop] * window, axis=-1)
  return np.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-12)


def mrstft_distance(x, y, fft_sizes: Sequence[int] = DEFAULT_MRSTFT_SIZES
                    ) -> np.ndarray:
  """Multi-resolution STFT distance: x, y (..., N) -> (...) float64.

  Per FFT size n (hop n / 4): spectral convergence ||Y| - |X||_F / ||Y||_F
  plus the mean |log(|X| + 1e-5) - log(|Y| + 1e-5)|; the mean over sizes.
  This is the training loss of `mrt_distill.audio_losses` (same windows,
  padding and floors, so the numbers read the same) in numpy: the eval
  calls it on host arrays of many shapes, where the eager jax version
  compiles every op for every shape. FFT sizes longer than the clip are
  left out. 0 iff the magnitudes match; phase-blind; normalised by y, so
  not symmetric (see `symmetric_mrstft`).
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.shape != y.shape:
    raise ValueError(f"mrstft_distance of {x.shape} and {y.shape}")
  sizes = tuple(n for n in fft_sizes if n <= x.shape[-1])
  if not sizes:
    raise ValueError(f"clips of {x.shape[-1]} samples are shorter than every "
                     f"FFT size {tuple(fft_sizes)}")
  lead = x.shape[:-1]
  xb, yb = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
  total = np.zeros(xb.shape[0])
  for n in sizes:
    xm, ym = _stft_mag(xb, n, n // 4), _stft_mag(yb, n, n // 4)
    sc = (np.sqrt(np.sum((ym - xm) ** 2, axis=(-2, -1)))
          / np.sqrt(np.sum(ym ** 2, axis=(-2, -1)) + 1e-12))
    mag = np.mean(np.abs(np.log(xm + _EPS) - np.log(ym + _EPS)),
                  axis=(-2, -1))
    total += sc + mag
  return (total / len(sizes)).reshape(lead)


def symmetric_mrstft(x_N, y_N) -> float:
  """(d(x, y) + d(y, x)) / 2 of `mrstft_distance` for two (N,) clips."""
  return float(0.5 * (mrstft_distance(x_N, y_N) + mrstft_distance(y_N, x_N)))


def spectral_flatness(x_N: np.ndarray, n_fft: int = 1024,
                      hop: int = 256) -> float:
  """Mean over frames of geometric / arithmetic mean of the power spectrum:
  ~0 for tones, ~0.56 for white noise, 1 for digital silence (every bin at
  the floor), so check silence first (`stability_flags` does)."""
  p = _magnitude(x_N, n_fft, hop) ** 2 + 1e-10
  flat = np.exp(np.mean(np.log(p), axis=-1)) / np.mean(p, axis=-1)
  return float(np.mean(flat))


def rms_db(x_N: np.ndarray) -> float:
  """RMS level in dBFS (a full-scale sine is -3 dB; silence -200 dB)."""
  x = np.asarray(x_N, np.float64)
  return float(20.0 * np.log10(np.sqrt(np.mean(x * x)) + 1e-10))


# ---- transients and rhythm ---------------------------------------------------
def spectral_flux(x_N: np.ndarray, n_fft: int = 1024,
                  hop: int = 256) -> np.ndarray:
  """Half-wave rectified spectral flux, (N,) -> (T - 1,): entry t - 1 is the
  mean over bins of max(0, L_t - L_{t-1}), L = log(1 + 100 |X|) of
  uncentred Hann frames (frame t covers [t hop, t hop + n_fft)). 0 for a
  stationary tone or silence; peaks at note onsets and clicks."""
  log_mag = np.log1p(_FLUX_GAMMA * _magnitude(x_N, n_fft, hop))
  return np.maximum(np.diff(log_mag, axis=0), 0.0).mean(axis=-1)


def onset_rate(x_N: np.ndarray, sample_rate: int, hop: int = 256) -> float:
  """Detected onsets per second (librosa's spectral-flux peak picking); 0 for
  silence. A 120 BPM click track gives 2."""
  import librosa
  x = np.asarray(x_N, np.float32)
  if not np.any(x):
    return 0.0
  onsets = librosa.onset.onset_detect(y=x, sr=sample_rate, hop_length=hop,
                                      units="frames")
  return float(len(onsets) / (len(x) / sample_rate))


def estimate_tempo(x_N: np.ndarray, sample_rate: int) -> float:
  """Global tempo in BPM (the reference judges' onset-autocorrelation
  estimator, `mrt_distill.world.runtime.judges.estimate_tempo`)."""
  from mrt_distill.world.runtime.judges import estimate_tempo as judge_tempo
  return judge_tempo(np.asarray(x_N, np.float32), sample_rate)


def tempo_agreement(bpm: float, low: float, high: float,
                    tolerance: float = 0.04, octave: bool = False) -> bool:
  """Whether a tempo estimate lies in a prompt's [low, high] BPM range,
  widened by `tolerance` (relative) each side; with octave=True a half,
  double, third or triple of the estimate also counts (MIREX 'Acc2': beat
  trackers often answer at another metrical level)."""
  if not (np.isfinite(bpm) and bpm > 0 and 0 < low <= high):
    return False
  factors = (1.0, 0.5, 2.0, 1 / 3, 3.0) if octave else (1.0,)
  return any(low * (1 - tolerance) <= f * bpm <= high * (1 + tolerance)
             for f in factors)


def boundary_discontinuity(x_N: np.ndarray, chunk: int, span: int = 0,
                           n_fft: int = 512, hop: int = 128) -> dict:
  """Spectral flux where chunks meet vs half-way between them.

  A streaming model writes audio in chunks of `chunk` samples joined by a
  crossfade of `span` samples at the start of each chunk; a bad join shows
  up as extra spectral flux there. For each boundary b = k * chunk
  (k >= 1) the score is the largest flux step whose frame overlaps
  [b, b + span]; the control is the same score at b + chunk / 2, where no
  boundary is. Comparing like with like keeps the answer ~1 for any
  stationary signal (noise, a tone, steady music), whatever its own flux.

  Args:
    x_N: mono (N,) stream whose chunk k starts at sample k * chunk.
    chunk: chunk length in samples.
    span: crossfade length in samples (0: a hard cut).
    n_fft, hop: flux frames.

  Returns:
    {"boundary": mean boundary score, "control": mean control score,
     "ratio": boundary / control (None when the control is 0, e.g.
     silence), "boundaries": number of boundaries scored}. Boundaries
    whose control window would run past the end are left out.
  """
  x = np.asarray(x_N, np.float32)
  flux = spectral_flux(x, n_fft, hop)  # entry t - 1: frames t - 1 -> t
  starts = np.arange(1, len(flux) + 1) * hop  # frame t's first sample

  def score(pos: int) -> float:
    hit = (starts <= pos + span) & (starts + n_fft > pos)
    return float(flux[hit].max()) if hit.any() else 0.0

  bounds = [k * chunk for k in range(1, len(x) // chunk + 1)
            if k * chunk + chunk // 2 + span + n_fft <= len(x)]
  if not bounds:
    return {"boundary": None, "control": None, "ratio": None,
            "boundaries": 0}
  b = float(np.mean([score(p) for p in bounds]))
  c = float(np.mean([score(p + chunk // 2) for p in bounds]))
  return {"boundary": b, "control": c, "ratio": ratio(b, c),
          "boundaries": len(bounds)}


# ---- stability ---------------------------------------------------------------
def stability_flags(x_N: np.ndarray, *, style_score: float | None = None,
                    style_min: float | None = None,
                    silence_db: float = SILENCE_DB,
                    noise_flatness: float = NOISE_FLATNESS) -> dict:
  """What went wrong in one window of a long stream, if anything.

  Args:
    x_N: mono (N,) window (e.g. one minute).
    style_score: how much the window sounds like its prompt (e.g. the
      judge's probability of the prompt's style), or None.
    style_min: the score below which style counts as lost (e.g. chance,
      1 / number of styles).
    silence_db: RMS level (dBFS) below which the window is silent.
    noise_flatness: spectral flatness above which a non-silent window is
      noise-like (music here stays below 0.1, white noise is ~0.56).

  Returns:
    {"silence", "noise", "style_loss": bool, "rms_db", "flatness",
     "style_score"}; style_loss is False when no score is given.
  """
  level = rms_db(x_N)
  flat = spectral_flatness(x_N)
  silent = level < silence_db
  lost = (style_score is not None and style_min is not None
          and style_score < style_min)
  return {"silence": bool(silent),
          "noise": bool(not silent and flat > noise_flatness),
          "style_loss": bool(lost), "rms_db": level, "flatness": flat,
          "style_score": None if style_score is None else float(style_score)}
