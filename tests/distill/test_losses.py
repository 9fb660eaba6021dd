"""Tests of the distillation objectives (mrt_distill.distill.losses)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrt_distill import audio_losses
from mrt_distill.distill import losses

SR = 16000


def _latents(seed=0, shape=(2, 6, 4)):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal(shape).astype(np.float32),
          rng.standard_normal(shape).astype(np.float32))


def _tone(seconds=1.0, seed=0):
  """(2, S) harmonic tones plus a little noise (no exactly-empty bins)."""
  t = np.arange(int(seconds * SR)) / SR
  rng = np.random.default_rng(seed)
  rows = [np.sin(2 * np.pi * f * t) + 0.3 * np.sin(2 * np.pi * 3 * f * t)
          for f in (220.0, 330.0)]
  x = np.stack(rows) + 0.01 * rng.standard_normal((2, t.size))
  return x.astype(np.float32)


def _clicks(positions, seconds=2.0):
  x = np.zeros((1, int(seconds * SR)), np.float32)
  x[0, list(positions)] = 1.0
  return x


# ---------------------------------------------------------------- schedule


def test_sigmas_are_karras_ascending_with_exact_endpoints():
  s = losses.NoiseSchedule(sigma_min=0.002, sigma_max=4.0, rho=7.0,
                           num_scales=10)
  sig = s.sigmas()
  assert sig.shape == (10,)
  assert np.all(np.diff(sig) > 0)
  assert sig[0] == 0.002 and sig[-1] == 4.0
  inv = 1 / 7.0
  mid = (0.002**inv + 4 / 9 * (4.0**inv - 0.002**inv))**7
  np.testing.assert_allclose(sig[4], mid, rtol=1e-12)
  # rho = 1 is linear spacing.
  lin = losses.NoiseSchedule(sigma_min=1.0, sigma_max=5.0, rho=1.0,
                             num_scales=5).sigmas()
  np.testing.assert_allclose(lin, [1, 2, 3, 4, 5], rtol=1e-12)


def test_boundary_condition_and_closed_forms():
  s = losses.NoiseSchedule(sigma_min=0.002, sigma_max=10.0, sigma_data=0.5)
  smin = jnp.full((3,), 0.002, jnp.float32)
  np.testing.assert_array_equal(s.c_skip(smin), np.ones(3, np.float32))
  np.testing.assert_array_equal(s.c_out(smin), np.zeros(3, np.float32))
  sig = np.array([0.5, 1.0, 10.0])
  np.testing.assert_allclose(
      s.c_skip(sig), 0.25 / ((sig - 0.002)**2 + 0.25), rtol=1e-6)
  np.testing.assert_allclose(
      s.c_out(sig), (sig - 0.002) * 0.5 / np.sqrt(sig**2 + 0.25), rtol=1e-6)
  np.testing.assert_allclose(s.c_in(sig), 1 / np.sqrt(sig**2 + 0.25),
                             rtol=1e-6)
  # Hand values at sigma = 1: c_skip = 0.25 / 1.246004,
  # c_out = 0.499 / 1.1180340.
  np.testing.assert_allclose(s.c_skip(jnp.ones((1,))), [0.2006414], rtol=1e-5)
  np.testing.assert_allclose(s.c_out(jnp.ones((1,))), [0.4463192], rtol=1e-5)
  # Large sigma: skip vanishes, output scale -> sigma_data.
  assert float(s.c_skip(jnp.full((1,), 1e4))[0]) < 1e-8
  np.testing.assert_allclose(s.c_out(jnp.full((1,), 1e4)), [0.5], rtol=1e-5)


@pytest.mark.parametrize("distribution", ["lognormal", "uniform"])
def test_sample_pair_indices(distribution):
  s = losses.NoiseSchedule(sigma_max=5.0, num_scales=8)
  lo, hi = s.sample_pair_indices(jax.random.PRNGKey(0), 20000, distribution)
  lo, hi = np.asarray(lo), np.asarray(hi)
  assert lo.shape == hi.shape == (20000,)
  np.testing.assert_array_equal(hi, lo + 1)
  assert lo.min() >= 0 and hi.max() <= 7
  p = s.pair_probabilities(distribution)
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)
  freq = np.bincount(lo, minlength=7) / lo.size
  np.testing.assert_allclose(freq, p, atol=0.015)
  if distribution == "lognormal":
    # Mass of a lognormal(-1.1, 2.0) on [sigma_0, sigma_1], by hand.
    sig = s.sigmas()
    cdf = [0.5 * (1 + math.erf((math.log(v) + 1.1) / (2.0 * math.sqrt(2))))
           for v in sig]
    np.testing.assert_allclose(p, np.diff(cdf) / (cdf[-1] - cdf[0]),
                               rtol=1e-9)


# ------------------------------------------------------------ latent terms


def test_pseudo_huber_known_offset():
  y, _ = _latents()
  a = 0.1
  dim = 6 * 4
  c = 0.00054 * math.sqrt(dim)
  got = losses.pseudo_huber(y + a, y)
  np.testing.assert_allclose(got, [math.sqrt(dim * a * a + c * c) - c] * 2,
                             rtol=1e-5)
  got = losses.pseudo_huber(y + a, y, c=1.0)
  np.testing.assert_allclose(got, [math.sqrt(dim * a * a + 1.0) - 1.0] * 2,
                             rtol=1e-5)
  # Per-example norm over the whole example, not a per-element mean.
  d = np.zeros_like(y)
  d[1, 2, 3] = 3.0
  got = losses.pseudo_huber(y + d, y, c=4.0)
  np.testing.assert_allclose(got, [0.0, 1.0], atol=1e-5)


def test_latent_loss_weighted_mean():
  y, _ = _latents()
  off = np.zeros_like(y)
  off[1] = 0.2
  # Per example pseudo-Huber / sqrt(dim), dim = 24 elements.
  per = np.array([0.0, math.sqrt(24 * 0.04 + 0.00054**2 * 24)
                  - 0.00054 * math.sqrt(24)]) / math.sqrt(24)
  np.testing.assert_allclose(losses.latent_loss(y + off, y), per.mean(),
                             rtol=1e-5)
  w = jnp.array([3.0, 2.0])
  np.testing.assert_allclose(losses.latent_loss(y + off, y, w),
                             (2.0 * per[1]) / 2, rtol=1e-5)


def test_consistency_loss_value_and_stop_gradient():
  hi, lo = _latents()
  s_hi = jnp.array([1.0, 0.5])
  s_lo = jnp.array([0.5, 0.25])
  got = losses.consistency_loss(hi, lo, s_hi, s_lo)
  ph = np.asarray(losses.pseudo_huber(hi, lo)) / math.sqrt(hi[0].size)
  np.testing.assert_allclose(got, np.mean(ph / np.array([0.5, 0.25])),
                             rtol=1e-5)
  g_hi, g_lo = jax.grad(losses.consistency_loss, argnums=(0, 1))(
      jnp.asarray(hi), jnp.asarray(lo), s_hi, s_lo)
  np.testing.assert_array_equal(g_lo, np.zeros_like(lo))
  assert np.all(np.isfinite(g_hi)) and np.abs(g_hi).max() > 0


def test_temporal_loss_ignores_constant_offset_latent_loss_does_not():
  y, _ = _latents()
  shifted = y + 0.7
  # Zero up to the f32 rounding of y + 0.7.
  assert float(losses.temporal_difference_loss(shifted, y)) < 1e-6
  assert float(losses.latent_loss(shifted, y)) > 0.1
  # A ramp k * frame changes every delta by k: the loss is k.
  ramp = 0.3 * np.arange(6, dtype=np.float32).reshape(1, 6, 1)
  np.testing.assert_allclose(
      losses.temporal_difference_loss(y + ramp, y), 0.3, rtol=1e-5)


def test_temporal_loss_of_one_frame_chunks_is_zero_not_nan():
  """1-frame student chunks have no delta inside the chunk: the term is 0
  with a 0 gradient (it was a NaN total that hid the other terms' values)."""
  y, _ = _latents()
  one = y[:, :1]
  assert float(losses.temporal_difference_loss(one + 1.0, one)) == 0.0
  g = jax.grad(lambda p: losses.temporal_difference_loss(p, one))(one + 1.0)
  assert np.all(np.asarray(g) == 0.0)


# ------------------------------------------------------------- audio terms


def test_identical_inputs_give_zero_and_finite_gradients():
  y, _ = _latents()
  a = _tone()
  sig = jnp.array([1.0, 0.5])
  cases = {
      "latent": (losses.latent_loss, y),
      "consistency": (
          lambda p, t: losses.consistency_loss(p, t, sig, sig / 2), y),
      "temporal": (losses.temporal_difference_loss, y),
      "spectral": (losses.spectral_loss, a),
      "onset": (lambda p, t: losses.onset_loss(p, t, SR), a),
  }
  for name, (fn, x) in cases.items():
    # jit (eager STFT code is slow). The value is compiled on its own: fused
    # with the backward pass the two sides may round differently (~1e-8).
    x = jnp.asarray(x)
    assert float(jax.jit(fn)(x, x)) == 0.0, name
    g = jax.jit(jax.grad(fn))(x, x)
    assert np.all(np.isfinite(g)), name


def test_spectral_loss_matches_mrstft_and_grows_with_noise():
  a = _tone()
  noise = np.random.default_rng(1).standard_normal(a.shape).astype(np.float32)
  # Away from identity it is the project's MR-STFT loss.
  spectral = jax.jit(losses.spectral_loss)
  ref = jax.jit(audio_losses.multi_resolution_stft_loss, static_argnums=2)(
      a + 0.05 * noise, a, (256, 512, 1024))
  np.testing.assert_allclose(spectral(a + 0.05 * noise, a), ref, rtol=1e-5)
  vals = [float(spectral(a + k * noise, a)) for k in (0.0, 0.003, 0.03, 0.3)]
  assert vals[0] == 0.0
  assert all(u < v for u, v in zip(vals, vals[1:])), vals


def test_onset_envelope_peaks_at_clicks():
  hop = 160
  x = _clicks([8000, 16000, 24000])
  env = np.asarray(losses.onset_envelope(x, SR, hop=hop))
  assert env.shape == (1, 1 + x.shape[1] // hop)
  e = env[0]
  peaks = [t for t in range(1, e.size - 1)
           if e[t] > 0.5 * e.max() and e[t] >= e[t - 1] and e[t] >= e[t + 1]]
  assert len(peaks) == 3, peaks
  for t, p in zip(peaks, (8000, 16000, 24000)):
    assert abs(t * hop - p) <= hop, (t, p)


def test_onset_loss_grows_with_shift_and_is_level_robust():
  target = _clicks([8000, 16000, 24000])
  vals = [float(losses.onset_loss(np.roll(target, k, axis=1), target, SR))
          for k in (0, 40, 160, 480)]
  assert vals[0] == 0.0
  assert all(u < v for u, v in zip(vals, vals[1:])), vals
  shifted = np.roll(target, 160, axis=1)
  quiet = float(losses.onset_loss(0.01 * shifted, 0.01 * target, SR))
  np.testing.assert_allclose(quiet, vals[2], rtol=1e-3)


def test_style_embedding_loss_is_cosine_distance():
  a = jnp.asarray([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
  # Identical directions: 0 whatever the norms.
  assert float(losses.style_embedding_loss(a, 5.0 * a)) == pytest.approx(
      0.0, abs=1e-6)
  # Orthogonal: 1; opposite: 2; the mean over the batch.
  b = jnp.asarray([[0.0, 1.0], [0.0, -1.0], [4.0, -3.0]])
  assert float(losses.style_embedding_loss(a, b)) == pytest.approx(
      (1.0 + 2.0 + 1.0) / 3, abs=1e-6)
  g = jax.grad(lambda x: losses.style_embedding_loss(x, b))(a)
  assert np.all(np.isfinite(np.asarray(g)))


def test_energy_score_rewards_spread_not_the_mean():
  """A proper score: draws spread like the target's distribution beat draws
  collapsed onto its mean, which plain regression would prefer."""
  rng = np.random.default_rng(0)
  k, b, c, d = 8, 64, 5, 4
  # Targets y ~ N(0, 1) per element, independent of any condition.
  y = rng.standard_normal((b, c, d)).astype(np.float32)
  spread = rng.standard_normal((k, b, c, d)).astype(np.float32)
  mean = np.zeros((k, b, c, d), np.float32)
  es = lambda x: float(losses.energy_score_loss(jnp.asarray(x),
                                                jnp.asarray(y)))
  reg = lambda x: float(losses.latent_loss(jnp.asarray(x[0]), jnp.asarray(y)))
  assert es(spread) < es(mean)
  assert reg(mean) < reg(spread)  # regression prefers the collapsed mean
  # Too much spread is also worse than the right spread.
  assert es(spread) < es(3.0 * spread)
  # Draws that all equal the target score 0 (up to the smoothing).
  assert es(np.broadcast_to(y, (k, b, c, d))) == pytest.approx(0.0, abs=1e-3)
  with pytest.raises(ValueError, match="imle_samples"):
    losses.energy_score_loss(jnp.asarray(spread[:1]), jnp.asarray(y))
  with pytest.raises(ValueError, match="do not match"):
    losses.energy_score_loss(jnp.asarray(spread), jnp.asarray(y[:, :2]))
  g = jax.grad(lambda x: losses.energy_score_loss(x, jnp.asarray(y)))(
      jnp.asarray(mean))  # identical draws: the gradient stays finite
  assert np.all(np.isfinite(np.asarray(g)))


# ---------------------------------------------------------------- combine


def test_combine_weights_metrics_and_zero_weight():
  terms = {"latent": jnp.float32(2.0), "consistency": jnp.float32(3.0),
           "spectral": jnp.float32(jnp.nan), "onset": jnp.float32(4.0)}
  w = losses.LossWeights(latent=1.0, consistency=0.5, spectral=0.0,
                         onset=0.25)
  total, metrics = losses.combine(terms, w)
  assert float(total) == 2.0 + 1.5 + 1.0
  assert set(metrics) == {"loss/latent", "loss/consistency", "loss/spectral",
                          "loss/onset", "loss/total"}
  assert float(metrics["loss/consistency"]) == 3.0  # unweighted
  assert float(metrics["loss/total"]) == float(total)
  assert "spectral" not in w.active()
  assert losses.LossWeights().active() == (
      "latent", "consistency", "spectral", "temporal", "onset")
  with pytest.raises(KeyError):
    losses.combine({"bogus": jnp.float32(1.0)}, w)


def test_full_objective_jits_and_differentiates():
  y, lo = _latents()
  a = _tone()
  sched = losses.NoiseSchedule(sigma_max=5.0, num_scales=8)
  weights = losses.LossWeights()

  def objective(pred, audio):
    n, n1 = sched.sample_pair_indices(jax.random.PRNGKey(1), 2)
    sig = jnp.asarray(sched.sigmas(), jnp.float32)
    terms = {
        "latent": losses.latent_loss(pred, y),
        "consistency": losses.consistency_loss(pred, lo, sig[n1], sig[n]),
        "temporal": losses.temporal_difference_loss(pred, y),
        "spectral": losses.spectral_loss(audio, a),
        "onset": losses.onset_loss(audio, a, SR),
    }
    return losses.combine(terms, weights)[0]

  pred, audio = jnp.asarray(y) + 0.1, jnp.asarray(a) * 0.9
  val, grads = jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))(
      pred, audio)
  assert np.isfinite(float(val)) and float(val) > 0
  assert all(np.all(np.isfinite(g)) and np.abs(g).max() > 0 for g in grads)


def test_ltas_prefers_the_rhythm_late_to_silence_where_frame_losses_do_not():
  """The pull towards silence, on a sparse click track: against the same
  clicks 44 ms late, faint noise is *nearer* by latent-style L2 and by the
  multi-resolution STFT loss; the long-term spectrum says the opposite."""
  sr = 16000
  rng = np.random.default_rng(0)
  clicks = np.zeros((2, sr), np.float32)
  clicks[:, 2000::4000] = 1.0
  clicks = np.stack([np.convolve(x, np.hanning(101), "same") for x in clicks])
  target = (clicks + 1e-3 * rng.standard_normal(clicks.shape)).astype(
      np.float32)
  late = np.roll(target, 700, axis=1)
  faint = (1e-3 * rng.standard_normal(target.shape)).astype(np.float32)
  l2 = lambda a: float(np.mean((a - target) ** 2))
  assert l2(faint) < l2(late)
  assert float(losses.spectral_loss(faint, target)) < float(
      losses.spectral_loss(late, target))
  assert float(losses.ltas_loss(late, target, sr)) < 0.01
  assert float(losses.ltas_loss(faint, target, sr)) > 0.5
  assert float(losses.ltas_loss(target, target, sr)) == 0.0
  # 20 dB quieter = a level error of ln(100) = 4.6 in every band above the
  # floor; the gradient is finite and asks for more level.
  quiet = 0.1 * target
  g = jax.grad(lambda a: losses.ltas_loss(a, target, sr))(jnp.asarray(quiet))
  assert np.isfinite(np.asarray(g)).all()
  assert float(jnp.sum(g * quiet)) < 0  # growing the signal lowers the loss
  with pytest.raises(ValueError, match="differ in shape"):
    losses.ltas_loss(target[:, :100], target, sr)
