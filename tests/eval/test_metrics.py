"""Every evaluation metric on synthetic signals with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from mrt_distill.eval import metrics as M

SR = 16000


def click_track(bpm: float, seconds: float, sr: int = SR) -> np.ndarray:
  """(N,) short windowed bursts every beat, starting at t = 0."""
  x = np.zeros(int(seconds * sr), np.float32)
  burst = (0.8 * np.hanning(64) * np.sign(np.sin(np.arange(64)))).astype(
      np.float32)
  for t in np.arange(0.0, seconds, 60.0 / bpm):
    i = int(round(t * sr))
    if i + 64 <= len(x):
      x[i:i + 64] += burst
  return x


def tone(freq: float, seconds: float, amp: float = 0.5) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, amp: float = 0.1, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (amp * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def music_like(seconds: float) -> np.ndarray:
  """Harmonic notes changing every half second: tonal, not silent."""
  t = np.arange(int(seconds * SR)) / SR
  f0 = np.array([220.0, 277.2, 329.6, 440.0])[(t * 2).astype(int) % 4]
  phase = 2 * np.pi * np.cumsum(f0) / SR
  x = sum(np.sin(h * phase) / h for h in (1, 2, 3, 4))
  return (0.2 * x * (0.6 + 0.4 * np.exp(-8 * (t % 0.5)))).astype(np.float32)


# ---- plumbing ----------------------------------------------------------------
def test_mono_and_windows():
  a = np.stack([np.ones(10), 3 * np.ones(10)], axis=-1)  # (N, C)
  np.testing.assert_allclose(M.mono(a), 2 * np.ones(10))
  assert M.mono(a[None]).shape == (1, 10)
  w = M.windows(np.arange(10.0), 4)
  assert w.shape == (2, 4) and w[1, 0] == 4  # tail of 2 dropped
  assert M.windows(np.arange(10.0), 4, hop=2).shape == (4, 4)
  assert M.windows(np.arange(3.0), 4).shape == (0, 4)


def test_trailing_windows_end_at_each_chunk():
  x = np.arange(100.0)
  wins, idx = M.trailing_windows(x, chunk=10, window=30)
  np.testing.assert_array_equal(idx, np.arange(2, 10))  # ends 30 .. 100
  np.testing.assert_array_equal(wins[0], np.arange(0, 30))
  np.testing.assert_array_equal(wins[-1], np.arange(70, 100))
  assert M.trailing_windows(x[:20], 10, 30)[0].shape == (0, 30)


def test_ratio():
  assert M.ratio(3.0, 2.0) == 1.5
  assert M.ratio(1.0, 0.0) is None and M.ratio(None, 1.0) is None


# ---- embeddings --------------------------------------------------------------
def test_cosine_known_values():
  a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0]])
  np.testing.assert_allclose(M.cosine(a, np.array([2.0, 0.0])),
                             [1.0, 0.0, np.sqrt(0.5), 0.0])
  np.testing.assert_allclose(M.cosine(a[:3], -a[:3]), [-1, -1, -1])
  assert M.cosine_distance([1.0, 1.0], [2.0, 2.0]) == pytest.approx(0.0)
  assert M.cosine_distance([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(2.0)


def test_frechet_known_answers():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((400, 4))
  assert M.frechet(a, a) == pytest.approx(0.0, abs=1e-8)
  # A pure mean shift d: FD = |d|^2 (covariances identical).
  d = np.array([1.0, -2.0, 0.5, 0.0])
  assert M.frechet(a + d, a) == pytest.approx(np.sum(d ** 2), rel=1e-6)
  # Scaling by 2 about the mean: FD = tr C (1 + 4 - 2 * 2) = tr C.
  c = a - a.mean(axis=0)
  assert M.frechet(2 * c, c) == pytest.approx(
      np.trace(np.cov(c, rowvar=False)), rel=1e-6)
  # Too few rows for a full-rank covariance: no number.
  assert M.frechet(a[:4], a) is None


def test_pairwise_mean_distance():
  assert M.pairwise_mean_distance([0.0, 1.0, 3.0],
                                  lambda x, y: abs(x - y)) == pytest.approx(2)
  assert M.pairwise_mean_distance([5.0], lambda x, y: 1.0) is None
  # A collapsed model (the same clip for every seed) has zero diversity.
  clip = noise(0.5)
  assert M.pairwise_mean_distance([clip] * 3, M.symmetric_mrstft) == \
      pytest.approx(0.0, abs=1e-9)
  assert M.pairwise_mean_distance([noise(0.5, seed=s) for s in range(3)],
                                  M.symmetric_mrstft) > 0.5


# ---- spectra -----------------------------------------------------------------
def test_log_mel_distance_known_gain():
  x = noise(1.0)
  assert M.log_mel_distance(x, x, SR) == pytest.approx(0.0, abs=1e-9)
  # Half the amplitude is a quarter of the power: 10 log10(4) = 6.02 dB.
  assert M.log_mel_distance(x, 0.5 * x, SR) == pytest.approx(6.0206, abs=1e-3)


def test_mrstft_distance_known_answers():
  x = noise(1.0)
  assert M.mrstft_distance(x, x) == pytest.approx(0.0, abs=1e-9)
  # x = 2 y: spectral convergence 1, log-magnitude ln 2 on every bin
  # well above the floor.
  assert M.mrstft_distance(2 * x, x) == pytest.approx(1 + np.log(2),
                                                      abs=0.01)
  # Batched: (B, N) -> (B,); FFT sizes above the clip length are skipped.
  b = np.stack([x[:1280], 2 * x[:1280]])
  np.testing.assert_allclose(M.mrstft_distance(b, b), [0.0, 0.0], atol=1e-9)
  with pytest.raises(ValueError):
    M.mrstft_distance(x[:100], x[:100])


def test_mrstft_matches_the_training_loss():
  import jax
  from mrt_distill import audio_losses
  x, y = noise(0.5, seed=1), noise(0.5, amp=0.3, seed=2)
  want = float(jax.jit(audio_losses.multi_resolution_stft_loss)(x, y))
  assert float(M.mrstft_distance(x, y)) == pytest.approx(want, rel=1e-4)


def test_spectral_flatness_and_level():
  assert M.spectral_flatness(noise(2.0)) == pytest.approx(0.56, abs=0.05)
  assert M.spectral_flatness(tone(441.0, 2.0)) < 0.01
  assert M.rms_db(tone(100.0, 1.0, amp=1.0)) == pytest.approx(-3.0103,
                                                              abs=1e-3)
  assert M.rms_db(np.zeros(100)) < -150


# ---- transients and rhythm ---------------------------------------------------
def test_spectral_flux_peaks_at_clicks_and_is_zero_for_steady_signals():
  assert M.spectral_flux(np.zeros(SR)).max() == 0.0
  assert M.spectral_flux(tone(441.0, 1.0)).mean() < 1e-3
  x = click_track(120, 4.0)
  n_fft, hop = 512, 128
  flux = M.spectral_flux(x, n_fft=n_fft, hop=hop)
  # Entry t - 1 compares frames t - 1 and t; frame t is [t hop, t hop +
  # n_fft). Rising flux means frame t holds a click that frame t - 1 lacks.
  starts = (np.arange(len(flux)) + 1) * hop
  peaks = flux > 0.5 * flux.max()
  clicks = [int(c * SR) for c in np.arange(0.5, 3.6, 0.5)]
  for c in clicks:  # every click makes a peak in a frame that holds it
    holds = (starts <= c + 63) & (starts + n_fft > c)
    assert np.any(peaks & holds), c
  for s in starts[peaks]:  # and every peak holds a click
    assert any(s <= c + 63 and s + n_fft > c for c in [0] + clicks), s
  assert flux.mean() > 100 * M.spectral_flux(tone(441.0, 4.0)).mean()


@pytest.mark.parametrize("bpm", [90, 120, 150])
def test_onset_rate_counts_clicks(bpm):
  seconds = 8.0
  rate = M.onset_rate(click_track(bpm, seconds), SR)
  assert abs(rate * seconds - bpm / 60 * seconds) <= 1.0
  assert M.onset_rate(np.zeros(SR), SR) == 0.0


def test_tempo_of_a_tempo_shifted_click_track():
  x = click_track(120, 10.0)
  assert M.estimate_tempo(x, SR) == pytest.approx(120, rel=0.04)
  # Played 1.25x faster (resampled in time): 150 BPM.
  t = np.arange(0, len(x) - 1, 1.25)
  fast = np.interp(t, np.arange(len(x)), x).astype(np.float32)
  assert M.estimate_tempo(fast, SR) == pytest.approx(150, rel=0.04)
  assert M.estimate_tempo(click_track(100, 10.0), SR) == pytest.approx(
      100, rel=0.04)


def test_tempo_agreement():
  assert M.tempo_agreement(125.0, 122, 134)
  assert M.tempo_agreement(118.0, 122, 134)  # within 4 % of 122
  assert not M.tempo_agreement(116.0, 122, 134)
  # Half the tempo: wrong, unless octave errors are forgiven.
  assert not M.tempo_agreement(63.0, 122, 134)
  assert M.tempo_agreement(63.0, 122, 134, octave=True)
  assert not M.tempo_agreement(200.0, 122, 134, octave=True)
  assert not M.tempo_agreement(float("nan"), 122, 134)


def test_boundary_discontinuity():
  chunk, span = SR, 640
  # Stationary signals: boundaries look like anywhere else.
  for x in (noise(8.0), music_like(8.0)):
    r = M.boundary_discontinuity(x, chunk, span)["ratio"]
    assert 0.7 < r < 1.4, r
  # A phase flip at every chunk start is a click at every boundary.
  flip = tone(441.3, 8.0)
  for k in range(1, 8):
    flip[k * chunk:] *= -1
  out = M.boundary_discontinuity(flip, chunk, 0)
  assert out["ratio"] > 100 and out["boundaries"] == 7
  # Silence: nothing to compare with.
  assert M.boundary_discontinuity(np.zeros(8 * SR), chunk)["ratio"] is None
  assert M.boundary_discontinuity(noise(1.2), chunk)["boundaries"] == 0


# ---- stability ---------------------------------------------------------------
def test_stability_flags():
  silent = M.stability_flags(np.zeros(2 * SR))
  assert silent["silence"] and not silent["noise"]
  hiss = M.stability_flags(noise(2.0))
  assert hiss["noise"] and not hiss["silence"]
  good = M.stability_flags(music_like(2.0), style_score=0.6, style_min=0.1)
  assert not (good["silence"] or good["noise"] or good["style_loss"])
  lost = M.stability_flags(music_like(2.0), style_score=0.05, style_min=0.1)
  assert lost["style_loss"] and not lost["noise"]
  assert not M.stability_flags(music_like(2.0))["style_loss"]  # no score
  quiet = M.stability_flags(1e-4 * music_like(2.0))  # -90 dBFS
  assert quiet["silence"]
