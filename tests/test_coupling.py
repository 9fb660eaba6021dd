"""Coupled sampling (mrt_distill/coupling.py): the teacher's chunk is a
deterministic function of (inputs, noise), and over noise draws the coupled
sampler still samples the teacher's distribution.

Each test names the mutation it was shown to catch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrt_distill import coupling as C
from mrt_distill.geometry import MASK_ID
from mrt_distill.teacher import decode
from mrt_distill.teacher.decode import SamplingParams, generate_tokens
from mrt_distill.teacher.load import load_teacher_config
from mrt_distill.teacher.model import numpy_init_params

# Rollout settings of configs/reference_cpu.py, and v1's defaults.
ROLLOUT = SamplingParams(guidance_weight=3.0, temperature=0.8, top_k=20)
V1 = SamplingParams(guidance_weight=5.0, temperature=1.1, top_k=40)
# Total variation between the coupled sampler's code frequencies and p.
# Measured on the reference codebooks, 40k draws, top-20 distributions:
# 0.017 mean / 0.024 max (a true categorical draw's sampling floor: 0.007).
# Each broken coupling in the tests' docstrings was run against them and
# fails (tmp script: monkeypatch the function, run the one test).
TV_MAX = 0.04


@pytest.fixture(scope="module")
def books():
  from mrt_distill.world.runtime import load_world
  codec = load_world("reference").codec
  return C.flow_codebooks(codec.codebooks, 4)


def _top_k_log_p(logits, temperature, top_k):
  return decode.level_log_probs(jnp.asarray(logits, jnp.float32)[None],
                                jnp.float32(temperature),
                                jnp.int32(top_k))[0]


@pytest.mark.parametrize("sampling", [ROLLOUT, V1], ids=["rollout", "v1"])
def test_flow_map_samples_the_teachers_distribution(books, sampling):
  """Mutations caught: flow_map returning argmax(log_p), the posterior
  without log_p (codes follow the noise only), and (rollout case) the
  temperature dropped in decode.level_log_probs."""
  n = 20000
  rng = np.random.default_rng(0)
  f = jax.jit(jax.vmap(C.flow_map, in_axes=(None, 0, None)))
  for level in range(books.shape[0]):
    logits = rng.normal(size=books.shape[1]) * 2.0
    log_p = _top_k_log_p(logits, sampling.temperature, sampling.top_k)
    # p computed independently of the code under test (numpy, float64).
    scaled = logits / sampling.temperature
    keep = scaled >= np.sort(scaled)[-sampling.top_k]
    p = np.where(keep, np.exp(scaled - scaled.max()), 0.0)
    p /= p.sum()
    z = jax.random.normal(jax.random.PRNGKey(level), (n, 1, books.shape[2]))
    codes = np.asarray(f(log_p[None], z, jnp.asarray(books[level])))[:, 0]
    freq = np.bincount(codes, minlength=books.shape[1]) / n
    tv = 0.5 * np.abs(freq - p).sum()
    assert tv <= TV_MAX, (level, tv)
    # And only codes the teacher allows: top-k is respected exactly.
    assert set(np.flatnonzero(freq)) <= set(np.flatnonzero(p > 1e-12))


def test_flow_map_is_deterministic_and_uses_the_noise(books):
  """Mutation caught: flow_map drawing its own randomness (different codes
  for the same z) or ignoring z (one code for every z)."""
  log_p = _top_k_log_p(np.linspace(0, 3, books.shape[1]), 1.0, 40)
  z = jax.random.normal(jax.random.PRNGKey(3), (64, books.shape[2]))
  a = np.asarray(C.flow_map(jnp.broadcast_to(log_p, (64, log_p.shape[0])), z,
                            jnp.asarray(books[0])))
  b = np.asarray(C.flow_map(jnp.broadcast_to(log_p, (64, log_p.shape[0])), z,
                            jnp.asarray(books[0])))
  np.testing.assert_array_equal(a, b)
  assert len(set(a.tolist())) >= 10  # 64 draws over 40 allowed codes


def test_greedy_coupled_pick_is_the_argmax(books):
  """temperature 0: every noise gives the argmax code (t5x's greedy)."""
  logits = np.random.default_rng(1).normal(size=books.shape[1])
  log_p = _top_k_log_p(logits, 0.0, 0)
  z = jax.random.normal(jax.random.PRNGKey(0), (32, books.shape[2]))
  codes = np.asarray(C.flow_map(jnp.broadcast_to(log_p, (32, len(logits))), z,
                                jnp.asarray(books[0])))
  assert (codes == np.argmax(logits)).all()


def test_flow_codebooks_are_normalised_per_level():
  books = np.random.default_rng(0).normal(size=(3, 16, 4)) * [[[1.0]],
                                                               [[0.1]],
                                                               [[0.01]]]
  out = C.flow_codebooks(books + 5.0, 2)
  assert out.shape == (2, 16, 4) and out.dtype == np.float32
  np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-6)
  np.testing.assert_allclose((out ** 2).mean(axis=(1, 2)), 1.0, rtol=1e-5)


# ---- the coupled teacher decode -------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
  cfg = load_teacher_config("tiny")
  params = numpy_init_params(cfg, 0)
  g = cfg.geometry
  rng = np.random.default_rng(5)
  ctx = rng.integers(0, g.codebook_size, (2, g.context_frames,
                                          g.context_levels))
  style = rng.integers(0, g.style_codebook_size, (2, g.style_levels))
  pos = np.concatenate([g.codec_to_ids(ctx).reshape(2, -1),
                        g.style_to_ids(style)], axis=1).astype(np.int32)
  neg = pos.copy()
  neg[:, -g.style_levels:] = MASK_ID
  books = C.flow_codebooks(np.random.default_rng(2).normal(
      size=(g.codec_rvq_depth, g.codebook_size, g.codec_latent_dim)),
      g.target_levels)
  return cfg, params, pos, neg, books


def test_same_noise_same_tokens_bit_for_bit(tiny):
  """Mutation caught: the coupled pick using the step key (tokens change
  with the key for the same noise)."""
  cfg, params, pos, neg, books = tiny
  g = cfg.geometry
  z = C.draw_noise(jax.random.PRNGKey(0), g, 2)
  a = np.asarray(generate_tokens(cfg, params, pos, neg, jax.random.PRNGKey(1),
                                 ROLLOUT, noise=z, flow_books=books))
  b = np.asarray(generate_tokens(cfg, params, pos, neg, jax.random.PRNGKey(9),
                                 ROLLOUT, noise=z, flow_books=books))
  np.testing.assert_array_equal(a, b)
  z2 = C.draw_noise(jax.random.PRNGKey(1), g, 2)
  c = np.asarray(generate_tokens(cfg, params, pos, neg, jax.random.PRNGKey(1),
                                 ROLLOUT, noise=z2, flow_books=books))
  assert (a != c).mean() > 0.5
  # Every id inside its level's range: no strays, no MASK/PAD.
  assert g.count_stray_ids(a) == 0


def test_coupled_cached_decode_equals_the_recompute(tiny):
  """The KV-cached coupled decode == the teacher-forced recompute with the
  same noise. Mutation caught: the cached loop reading the next frame's
  noise (noise[:, f + 1, q])."""
  cfg, params, pos, neg, books = tiny
  z = C.draw_noise(jax.random.PRNGKey(4), cfg.geometry, 2)
  key = jax.random.PRNGKey(0)
  cached = np.asarray(generate_tokens(cfg, params, pos, neg, key, ROLLOUT,
                                      noise=z, flow_books=books))
  ref = decode.reference_decode(cfg, params, pos, neg, key, ROLLOUT,
                                noise=z, flow_books=books)
  np.testing.assert_array_equal(cached, ref)


def _first_token_probs(cfg, params, pos, neg, weight=3.0, top_k=8):
  """The teacher's distribution for row 0's first token, in numpy from its
  teacher-forced logits: CFG, temperature 1, top-k, the level's codes."""
  g = cfg.geometry
  logits = decode._forward_logits(
      cfg, params, jnp.asarray(np.concatenate([pos[:1], neg[:1]])),
      jnp.zeros((2, g.decoder_length), jnp.int32))[:, 0]
  lv = np.asarray(logits[:, g.codec_offset:g.codec_offset + g.codebook_size],
                  np.float64)
  guided = (1 + weight) * lv[0] - weight * lv[1]
  keep = guided >= np.sort(guided)[-top_k]
  p = np.where(keep, np.exp(guided - guided.max()), 0.0)
  return p / p.sum()


def test_coupled_first_token_follows_the_teachers_probabilities(tiny):
  """End to end through the decode: over 4096 noise draws for one encoder
  input, the first token's frequencies match the teacher's CFG'd,
  tempered, top-k distribution for it (computed independently from the
  teacher-forced logits). Mutation caught: CFG skipped on the coupled path
  (TV 0.3+)."""
  cfg, params, pos, neg, books = tiny
  g = cfg.geometry
  n = 4096
  sampling = SamplingParams(guidance_weight=3.0, temperature=1.0, top_k=8,
                            max_decode_frames=1)
  z = C.draw_noise(jax.random.PRNGKey(7), g, n)
  p_rows = np.repeat(pos[:1], n, axis=0)
  n_rows = np.repeat(neg[:1], n, axis=0)
  ids = np.asarray(generate_tokens(cfg, params, p_rows, n_rows,
                                   jax.random.PRNGKey(0), sampling, noise=z,
                                   flow_books=books))
  first = ids[:, 0, 0] - g.codec_offset
  # The teacher's distribution for the first token, independently.
  p = _first_token_probs(cfg, params, pos, neg)
  freq = np.bincount(first, minlength=g.codebook_size) / n
  tv = 0.5 * np.abs(freq - p).sum()
  # Floor for n = 4096 over 8 codes: ~0.02; coupling error ~0.02.
  assert tv <= 0.06, tv


def test_coupled_decode_returns_the_distributions_it_picked_from(tiny):
  """with_log_probs: the same tokens, and for each (frame, level) the
  distribution its pick came from: the flow map of it and the noise gives
  the token, and the first one equals the teacher's CFG'd top-k
  distribution computed independently. Mutations caught: storing the
  distribution at frame f + 1 (the flow-map check fails); skipping CFG for
  the stored copy (the first-token check fails)."""
  cfg, params, pos, neg, books = tiny
  g = cfg.geometry
  sampling = SamplingParams(guidance_weight=3.0, temperature=1.0, top_k=8)
  z = C.draw_noise(jax.random.PRNGKey(3), g, 2)
  key = jax.random.PRNGKey(0)
  plain = np.asarray(generate_tokens(cfg, params, pos, neg, key, sampling,
                                     noise=z, flow_books=books))
  ids, logp = generate_tokens(cfg, params, pos, neg, key, sampling, noise=z,
                              flow_books=books, with_log_probs=True)
  ids, logp = np.asarray(ids), np.asarray(logp)
  np.testing.assert_array_equal(ids, plain)
  assert logp.shape == (2, g.chunk_frames, g.target_levels, g.codebook_size)
  np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, rtol=1e-5)
  assert ((np.exp(logp) > 1e-6).sum(-1) <= 8).all()  # top-k 8
  codes = ids - g.codec_offset - g.codebook_size * np.arange(
      g.target_levels)
  for q in range(g.target_levels):
    again = C.flow_map(jnp.asarray(logp[:, :, q].reshape(-1, g.codebook_size)),
                       jnp.asarray(z[:, :, q].reshape(-1, g.codec_latent_dim)),
                       jnp.asarray(books[q]))
    np.testing.assert_array_equal(np.asarray(again).reshape(2, -1),
                                  codes[:, :, q])
  np.testing.assert_allclose(np.exp(logp[0, 0, 0]),
                             _first_token_probs(cfg, params, pos, neg),
                             atol=1e-4)
  with pytest.raises(ValueError, match="with_log_probs needs coupled"):
    generate_tokens(cfg, params, pos, neg, key, sampling,
                    with_log_probs=True)


def test_noise_of_the_wrong_shape_is_refused(tiny):
  cfg, params, pos, neg, books = tiny
  g = cfg.geometry
  bad = np.zeros((2, g.chunk_frames, g.target_levels, g.codec_latent_dim + 1))
  with pytest.raises(ValueError, match=r"coupling noise has shape .* needs "
                     r".* draw it with mrt_distill.coupling.draw_noise"):
    generate_tokens(cfg, params, pos, neg, jax.random.PRNGKey(0), ROLLOUT,
                    noise=bad, flow_books=books)
  with pytest.raises(ValueError, match="flow_books"):
    generate_tokens(cfg, params, pos, neg, jax.random.PRNGKey(0), ROLLOUT,
                    noise=C.draw_noise(jax.random.PRNGKey(0), g, 2))
