"""Tests for KV-cached chunk decoding (`generate_tokens`) against the slow
teacher-forced `reference_decode`, sampling rules, CFG and input checks.

Reference: reference/magenta_rt_v1.md §3. Tiny config, float32 activations.
Every `generate_tokens` call here uses batch 2, so one compile per
(CFG on/off, stop_on_mask) variant is shared by the whole module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrt_distill.geometry import MASK_ID, PAD_ID
from mrt_distill.teacher import decode
from mrt_distill.teacher.decode import (SamplingParams, cfg_combine,
                                        generate_tokens, reference_decode,
                                        sample_logits)
from mrt_distill.teacher.load import load_teacher_config
from mrt_distill.teacher.model import TeacherModel
from mrt_distill.teacher.model import numpy_init_params

GUIDED = SamplingParams(guidance_weight=3.0, temperature=1.0, top_k=5)
_sample = jax.jit(sample_logits)  # one compile per logits shape






@pytest.fixture(scope="module")
def cfg():
  return load_teacher_config("tiny")


@pytest.fixture(scope="module")
def params(cfg):
  return numpy_init_params(cfg, 0)


@pytest.fixture(scope="module")
def enc(cfg):
  """(pos, neg) encoder ids, batch 2: random context, style / MASK style."""
  g = cfg.geometry
  rng = np.random.default_rng(5)
  ctx = rng.integers(0, g.codebook_size, (2, g.context_frames,
                                          g.context_levels))
  style = rng.integers(0, g.style_codebook_size, (2, g.style_levels))
  pos = np.concatenate([g.codec_to_ids(ctx).reshape(2, -1),
                        g.style_to_ids(style)], axis=1)
  neg = pos.copy()
  neg[:, -g.style_levels:] = MASK_ID
  return pos, neg


@pytest.fixture(scope="module")
def fwd(cfg):
  model = TeacherModel(cfg)
  return jax.jit(lambda p, e, t: model.apply({"params": p}, e, t))


def _gen(cfg, params, pos, neg, seed=0, stop_on_mask=True, **kw):
  return np.asarray(generate_tokens(cfg, params, pos, neg,
                                    jax.random.PRNGKey(seed),
                                    GUIDED._replace(**kw), stop_on_mask))


# ---- cached decode == reference decode ------------------------------------------
def test_cached_equals_reference_with_cfg(cfg, params, enc):
  pos, neg = enc
  g = cfg.geometry
  key = jax.random.PRNGKey(11)
  fast = np.asarray(generate_tokens(cfg, params, pos, neg, key, GUIDED))
  slow = reference_decode(cfg, params, pos, neg, key, GUIDED)
  assert fast.shape == (2, g.chunk_frames, g.target_levels)
  assert fast.dtype == np.int32
  np.testing.assert_array_equal(fast, slow)
  # Sampling with top_k=5 and temperature 1 is not degenerate.
  assert len(np.unique(fast)) > 4


def test_cached_equals_reference_without_cfg(cfg, params, enc):
  pos, _ = enc
  key = jax.random.PRNGKey(12)
  fast = np.asarray(generate_tokens(cfg, params, pos, None, key, GUIDED))
  slow = reference_decode(cfg, params, pos, None, key, GUIDED)
  np.testing.assert_array_equal(fast, slow)


def test_cached_equals_reference_with_pad_in_the_encoder(cfg, params, enc):
  """The cached decode masks encoder PAD in cross-attention exactly as the
  teacher-forced forward does (left padding, as a short prompt set gets)."""
  pos, neg = (x.copy() for x in enc)
  pos[:, :9] = PAD_ID
  neg[:, :9] = PAD_ID
  key = jax.random.PRNGKey(13)
  fast = np.asarray(generate_tokens(cfg, params, pos, neg, key, GUIDED))
  slow = reference_decode(cfg, params, pos, neg, key, GUIDED)
  np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("pad", [0, 9])
def test_cached_logits_equal_the_teacher_forced_forward(cfg, params, enc, fwd,
                                                        pad):
  g = cfg.geometry
  pos = enc[0].copy()
  pos[:, :pad] = PAD_ID
  tgt = np.asarray(generate_tokens(cfg, params, pos, None,
                                   jax.random.PRNGKey(4), GUIDED))
  tgt = tgt.reshape(2, -1)
  want = np.asarray(fwd(params, pos, tgt))
  for frames in (2, g.chunk_frames):
    got = np.asarray(decode.cached_logits(cfg, params, pos, tgt, frames))
    assert got.shape == (2, frames * g.target_levels, cfg.vocab_rows)
    np.testing.assert_allclose(got, want[:, :frames * g.target_levels],
                               atol=1e-5, rtol=0)


def test_cfg_changes_the_result(cfg, params, enc):
  pos, neg = enc
  guided = _gen(cfg, params, pos, neg, seed=3)
  plain = _gen(cfg, params, pos, None, seed=3)
  assert not np.array_equal(guided, plain)


def test_cfg_weight_zero_equals_unguided(cfg, params, enc):
  pos, neg = enc
  for seed in (0, 1):
    np.testing.assert_array_equal(
        _gen(cfg, params, pos, neg, seed=seed, guidance_weight=0.0),
        _gen(cfg, params, pos, None, seed=seed))


@pytest.mark.usefixtures("strict_ranks")
def test_cfg_combine_formula():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((4, 9)).astype(np.float32)
  out = np.asarray(cfg_combine(jnp.asarray(logits), 2, 2.5))
  np.testing.assert_allclose(out, 3.5 * logits[:2] - 2.5 * logits[2:],
                             rtol=1e-6, atol=1e-6)


# ---- greedy decoding ----------------------------------------------------------------
def _greedy_by_hand(cfg, params, fwd, pos, neg, weight):
  """Argmax decode from full teacher-forced logits, CFG combined by hand,
  MASK ending a row (later tokens PAD)."""
  g = cfg.geometry
  b = pos.shape[0]
  targets = np.zeros((b, g.decoder_length), np.int32)
  ended = np.zeros(b, bool)
  for s in range(g.decoder_length):
    if neg is None:
      logits = np.asarray(fwd(params, pos, targets))[:, s]
    else:
      both = np.asarray(fwd(params, np.concatenate([pos, neg]),
                            np.concatenate([targets, targets])))[:, s]
      logits = (1 + weight) * both[:b] - weight * both[b:]
    tok = np.where(ended, PAD_ID, logits.argmax(-1))
    ended |= tok == MASK_ID
    targets[:, s] = tok
  return targets.reshape(b, g.chunk_frames, g.target_levels)


def test_top_k_1_equals_argmax_and_greedy_by_hand(cfg, params, enc, fwd):
  pos, neg = enc
  top1 = _gen(cfg, params, pos, neg, seed=0, top_k=1, temperature=1.0)
  top1_other_seed = _gen(cfg, params, pos, neg, seed=9, top_k=1,
                         temperature=1.7)
  cold = _gen(cfg, params, pos, neg, seed=4, top_k=0, temperature=1e-5)
  np.testing.assert_array_equal(top1, top1_other_seed)
  np.testing.assert_array_equal(top1, cold)
  by_hand = _greedy_by_hand(cfg, params, fwd, pos, neg, GUIDED.guidance_weight)
  np.testing.assert_array_equal(top1, by_hand)


def test_greedy_without_cfg_matches_by_hand(cfg, params, enc, fwd):
  pos, _ = enc
  cold = _gen(cfg, params, pos, None, seed=2, temperature=0.0)
  np.testing.assert_array_equal(
      cold, _greedy_by_hand(cfg, params, fwd, pos, None, 0.0))


@pytest.mark.usefixtures("strict_ranks")
def test_temperature_at_or_below_1e4_is_argmax():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.standard_normal((64, 50)), jnp.float32)
  want = np.asarray(jnp.argmax(logits, -1))
  for temperature in (1e-4, 1e-6, 0.0, -1.0):
    for seed in range(3):
      for top_k in (0, 3):
        got = _sample(jax.random.PRNGKey(seed), logits,
                      jnp.float32(temperature), jnp.int32(top_k))
        np.testing.assert_array_equal(np.asarray(got), want,
                                      err_msg=f"T={temperature} k={top_k}")
  # Just above the threshold it samples: the draw is no longer the argmax.
  got = _sample(jax.random.PRNGKey(0), logits, jnp.float32(1.0), jnp.int32(0))
  assert not np.array_equal(np.asarray(got), want)


@pytest.mark.usefixtures("strict_ranks")
def test_temperature_just_above_threshold_samples():
  # Two near-equal logits: at temperature 1 both are drawn.
  logits = jnp.tile(jnp.array([[0.0, 0.01, -50.0]], jnp.float32), (2000, 1))
  got = np.asarray(_sample(jax.random.PRNGKey(0), logits,
                                 jnp.float32(1.0), jnp.int32(0)))
  counts = np.bincount(got, minlength=3)
  assert counts[2] == 0 and counts[0] > 800 and counts[1] > 800


@pytest.mark.usefixtures("strict_ranks")
def test_top_k_restricts_support_and_top_k_0_disables():
  n, v = 4000, 10
  base = np.linspace(1.0, 0.0, v).astype(np.float32)  # descending
  logits = jnp.tile(jnp.asarray(base)[None], (n, 1))
  got = np.asarray(_sample(jax.random.PRNGKey(1), logits,
                                 jnp.float32(1.0), jnp.int32(3)))
  assert set(np.unique(got)) == {0, 1, 2}
  # Within the top-k the draw follows softmax(l / T).
  p = np.exp(base[:3]) / np.exp(base[:3]).sum()
  np.testing.assert_allclose(np.bincount(got, minlength=v)[:3] / n, p,
                             atol=0.03)
  got = np.asarray(_sample(jax.random.PRNGKey(1), logits,
                                 jnp.float32(1.0), jnp.int32(0)))
  assert len(np.unique(got)) == v


@pytest.mark.usefixtures("strict_ranks")
def test_temperature_scales_logits():
  n = 4000
  base = np.array([1.0, 0.0], np.float32)
  logits = jnp.tile(jnp.asarray(base)[None], (n, 1))
  got = np.asarray(_sample(jax.random.PRNGKey(2), logits,
                                 jnp.float32(0.5), jnp.int32(0)))
  p0 = 1.0 / (1.0 + np.exp(-2.0))  # softmax([2, 0])[0]
  assert abs((got == 0).mean() - p0) < 0.03


# ---- lengths, seeds, recompiles --------------------------------------------------------
def test_max_decode_frames(cfg, params, enc):
  pos, neg = enc
  full = _gen(cfg, params, pos, neg, seed=6)
  two = _gen(cfg, params, pos, neg, seed=6, max_decode_frames=2)
  np.testing.assert_array_equal(two[:, :2], full[:, :2])
  assert np.all(two[:, 2:] == PAD_ID)
  assert np.any(full[:, 2:] != PAD_ID)
  one = _gen(cfg, params, pos, neg, seed=6, max_decode_frames=1)
  np.testing.assert_array_equal(one[:, :1], full[:, :1])
  assert np.all(one[:, 1:] == PAD_ID)
  whole = _gen(cfg, params, pos, neg, seed=6,
               max_decode_frames=cfg.geometry.chunk_frames)
  np.testing.assert_array_equal(whole, full)


def test_seeds(cfg, params, enc):
  pos, neg = enc
  a = _gen(cfg, params, pos, neg, seed=100)
  np.testing.assert_array_equal(a, _gen(cfg, params, pos, neg, seed=100))
  assert not np.array_equal(a, _gen(cfg, params, pos, neg, seed=101))


def test_rows_are_independent(cfg, params, enc):
  """Row 1's tokens do not depend on row 0's encoder input (one categorical
  draw covers the batch, so row 0 keeps its key stream too)."""
  pos, neg = enc
  a = _gen(cfg, params, pos, neg, seed=8)
  pos2, neg2 = pos.copy(), neg.copy()
  pos2[0, :5] = MASK_ID
  neg2[0, :5] = MASK_ID
  b = _gen(cfg, params, pos2, neg2, seed=8)
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], b[0])


def _compiled_variants():
  """Number of compiled specialisations of the decode jit.

  Uses the jitted function's `_cache_size()` (a private but long-standing
  method of jax's C++ jit wrapper); the test is skipped if it is missing.
  """
  size = getattr(decode._decode_jit, "_cache_size", None)
  if size is None:
    pytest.skip("jax jit wrapper has no _cache_size(); cannot count compiles")
  return size()


def test_cache_size_counts_compiles():
  """Sanity check of the counting method on a throwaway jit."""
  f = jax.jit(lambda x: x + 1)
  if not hasattr(f, "_cache_size"):
    pytest.skip("jax jit wrapper has no _cache_size()")
  f(jnp.float32(1.0))
  f(jnp.float32(2.0))
  assert f._cache_size() == 1
  f(jnp.ones(3, jnp.float32))
  assert f._cache_size() == 2


def test_sampling_knobs_do_not_recompile(cfg, params, enc):
  pos, neg = enc
  _gen(cfg, params, pos, neg, seed=0)  # make sure this variant exists
  before = _compiled_variants()
  outs = [
      _gen(cfg, params, pos, neg, seed=1, guidance_weight=0.0),
      _gen(cfg, params, pos, neg, seed=1, guidance_weight=7.5),
      _gen(cfg, params, pos, neg, seed=1, temperature=0.3),
      _gen(cfg, params, pos, neg, seed=1, temperature=1e-6),
      _gen(cfg, params, pos, neg, seed=1, top_k=2),
      _gen(cfg, params, pos, neg, seed=1, top_k=0),
      _gen(cfg, params, pos, neg, seed=1, max_decode_frames=3),
  ]
  assert _compiled_variants() == before
  # The knobs really reached the traced program.
  assert len({o.tobytes() for o in outs}) == len(outs)


# ---- stop on MASK ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def mask_params(params):
  """Params whose MASK logit is huge (about +-60 sigma) on about half of the
  positions, so MASK gets sampled somewhere in most rows."""
  p = jax.tree.map(np.copy, params)
  kernel = p["decoder"]["logits_dense"]["kernel"]
  rng = np.random.default_rng(3)
  kernel[:, MASK_ID] = 60.0 * rng.standard_normal(kernel.shape[0]).astype(
      np.float32) / np.sqrt(kernel.shape[0])
  return p


def test_stop_on_mask(cfg, params, mask_params, enc):
  pos, _ = enc
  g = cfg.geometry
  key = jax.random.PRNGKey(21)
  kw = dict(guidance_weight=0.0, temperature=1.0, top_k=5)
  stopped = np.asarray(generate_tokens(cfg, mask_params, pos, None, key,
                                       GUIDED._replace(**kw), True))
  free = np.asarray(generate_tokens(cfg, mask_params, pos, None, key,
                                    GUIDED._replace(**kw), False))
  flat_s = stopped.reshape(2, -1)
  flat_f = free.reshape(2, -1)
  rows_with_mask = 0
  for r in range(2):
    hits = np.flatnonzero(flat_s[r] == MASK_ID)
    if hits.size == 0:
      np.testing.assert_array_equal(flat_s[r], flat_f[r])
      continue
    rows_with_mask += 1
    first = hits[0]
    assert first < g.decoder_length - 1, "MASK must not be the last token"
    assert np.all(flat_s[r, first + 1:] == PAD_ID)
    # Up to and including the first MASK both modes agree (same key stream),
    # and without stopping the row goes on with real tokens.
    np.testing.assert_array_equal(flat_s[r, :first + 1], flat_f[r, :first + 1])
    assert np.any(flat_f[r, first + 1:] != PAD_ID)
  assert rows_with_mask >= 1
  # The slow reference agrees on the stopped rows.
  np.testing.assert_array_equal(
      stopped, reference_decode(cfg, mask_params, pos, None, key,
                                GUIDED._replace(**kw), True))


# ---- bad input ---------------------------------------------------------------------------
def test_wrong_encoder_length_raises(cfg, params, enc):
  pos, neg = enc
  n = cfg.geometry.encoder_length
  with pytest.raises(ValueError, match=rf"\(B, {n}\)"):
    generate_tokens(cfg, params, pos[:, :-1], None, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=rf"\(B, {n}\)"):
    generate_tokens(cfg, params, pos[0], None, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="enc_neg"):
    generate_tokens(cfg, params, pos, neg[:, 1:], jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="negative rows"):
    generate_tokens(cfg, params, pos, neg[:1], jax.random.PRNGKey(0))


def test_float_ids_raise(cfg, params, enc):
  pos, neg = enc
  with pytest.raises(ValueError, match="integer"):
    generate_tokens(cfg, params, pos.astype(np.float32), None,
                    jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="integer"):
    generate_tokens(cfg, params, pos, neg.astype(np.float32),
                    jax.random.PRNGKey(0))


@pytest.mark.parametrize("kw,needle", [
    (dict(top_k=-1), "top_k"),
    (dict(guidance_weight=-0.5), "guidance_weight"),
    (dict(max_decode_frames=0), "max_decode_frames"),
    (dict(max_decode_frames=5), "max_decode_frames"),
])
def test_bad_sampling_params_raise(cfg, params, enc, kw, needle):
  pos, neg = enc
  with pytest.raises(ValueError, match=needle):
    generate_tokens(cfg, params, pos, neg, jax.random.PRNGKey(0),
                    GUIDED._replace(**kw))
  with pytest.raises(ValueError, match=needle):
    reference_decode(cfg, params, pos, neg, jax.random.PRNGKey(0),
                     GUIDED._replace(**kw))


def test_max_decode_frames_error_names_range(cfg):
  with pytest.raises(ValueError, match=r"1\.\.4"):
    SamplingParams(max_decode_frames=9).as_arrays(cfg.geometry.chunk_frames)


def test_negative_max_decode_frames_other_than_minus_one_raises(cfg):
  with pytest.raises(ValueError, match="max_decode_frames"):
    SamplingParams(max_decode_frames=-2).as_arrays(cfg.geometry.chunk_frames)


@pytest.mark.parametrize("bad_id", [256, -1])
def test_out_of_vocab_encoder_ids_raise(cfg, params, enc, bad_id):
  pos, _ = enc
  bad = pos.copy()
  bad[0, 3] = bad_id  # tiny geometry: 256 embedding rows
  with pytest.raises(ValueError, match="range|vocab"):
    generate_tokens(cfg, params, bad, None, jax.random.PRNGKey(0),
                    GUIDED)
