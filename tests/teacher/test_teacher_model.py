"""Tests for the teacher model: parameter tree, building blocks, causality,
and the incremental (KV-cached) path against teacher forcing.

Reference: reference/magenta_rt_v1.md §2. The tiny config (float32
activations) keeps everything fast and makes parity exact up to f32 rounding.
Params are drawn with numpy from the `abstract_params` shapes (no jitted
init, which costs seconds on a small CPU); norm scales are jittered away from
1 so a dropped scale would show.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from jax.sharding import PartitionSpec

from mrt_distill import axes
from mrt_distill.geometry import PAD_ID
from mrt_distill.teacher.decode import _zeros_kv
from mrt_distill.teacher.layers import (RelativePositionBias, relative_buckets,
                                        sinusoidal_positions)
from mrt_distill.teacher.load import load_teacher_config
from mrt_distill.teacher.model import (TeacherModel, abstract_params,
                                       count_params, encoder_pad_bias)
from mrt_distill.teacher.model import numpy_init_params

ATOL = 1e-5


# ---- helpers / fixtures ------------------------------------------------------


@pytest.fixture(scope="module")
def cfg():
  return load_teacher_config("tiny")


@pytest.fixture(scope="module")
def params(cfg):
  return numpy_init_params(cfg, 0)


@pytest.fixture(scope="module")
def fwd(cfg):
  """Jitted teacher-forced logits (params, enc, targets) -> (B, N, V)."""
  model = TeacherModel(cfg)
  return jax.jit(lambda p, e, t: model.apply({"params": p}, e, t))


@pytest.fixture(scope="module")
def encode(cfg):
  model = TeacherModel(cfg)
  return jax.jit(lambda p, e: model.apply({"params": p}, e,
                                          method=TeacherModel.encode))


@pytest.fixture(scope="module")
def batch(cfg):
  g = cfg.geometry
  rng = np.random.default_rng(1)
  enc = rng.integers(2, g.vocab_size, (2, g.encoder_length)).astype(np.int32)
  codes = rng.integers(0, g.codebook_size, (2, g.chunk_frames, g.target_levels))
  tgt = g.codec_to_ids(codes).reshape(2, -1)
  return enc, tgt


@pytest.fixture(scope="module")
def base_abstract():
  return abstract_params(load_teacher_config("base"))


@pytest.fixture(scope="module")
def large_abstract():
  return abstract_params(load_teacher_config("large"))


def _flat(tree):
  return flatten_dict(tree, sep="/")




# ---- parameter counts and names (eval_shape only) ---------------------------
def test_base_param_count(base_abstract):
  shapes, _ = base_abstract
  assert count_params(shapes) == 347_873_472
  assert len(jax.tree.leaves(shapes)) == 430
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))


def test_large_param_count(large_abstract):
  shapes, _ = large_abstract
  assert count_params(shapes) == 761_651_456
  assert len(jax.tree.leaves(shapes)) == 538


def _part_counts(shapes):
  parts = {"encoder": "encoder/",
           "temporal": "decoder/decoder/temporal_decoder/",
           "depth": "decoder/decoder/depth_decoder/",
           "embedding": "token_embedder/",
           "logits": "decoder/logits_dense/"}
  out = {}
  for part, prefix in parts.items():
    leaves = [v for k, v in _flat(shapes).items() if k.startswith(prefix)]
    out[part] = (round(sum(int(np.prod(v.shape)) for v in leaves) / 1e6, 2),
                 len(leaves))
  return out


def test_base_part_counts(base_abstract):
  assert _part_counts(base_abstract[0]) == {
      "encoder": (84.95, 109), "temporal": (188.79, 281),
      "depth": (28.32, 37), "embedding": (22.90, 1), "logits": (22.90, 1)}


def test_large_part_counts(large_abstract):
  assert _part_counts(large_abstract[0]) == {
      "encoder": (308.33, 217), "temporal": (340.85, 281),
      "depth": (51.39, 37), "embedding": (30.54, 1), "logits": (30.54, 1)}


def _spec_tree(d, f, h, n_enc, n_temporal=20, n_depth=4, vocab=29824):
  """The full t5x name -> shape table of reference §2.6 (without `target.`)."""
  hd = h * 64
  t = {"token_embedder.embedding": (vocab, d),
       "encoder.encoder_norm.scale": (d,),
       "decoder.decoder.temporal_decoder.relpos_bias.rel_embedding": (h, 128),
       "decoder.decoder.depth_decoder.relpos_bias_depth.rel_embedding": (h, 16),
       "decoder.decoder_norm.scale": (d,),
       "decoder.logits_dense.kernel": (d, vocab)}

  def attn(prefix):
    for n in ("query", "key", "value"):
      t[f"{prefix}.{n}.kernel"] = (d, hd)
    t[f"{prefix}.out.kernel"] = (hd, d)

  def mlp(prefix):
    t[f"{prefix}.wi_0.kernel"] = (d, f)
    t[f"{prefix}.wi_1.kernel"] = (d, f)
    t[f"{prefix}.wo.kernel"] = (f, d)

  for i in range(n_enc):
    p = f"encoder.layers_{i}"
    t[f"{p}.pre_attention_layer_norm.scale"] = (d,)
    attn(f"{p}.attention")
    t[f"{p}.pre_mlp_layer_norm.scale"] = (d,)
    mlp(f"{p}.mlp")
  for j in range(n_temporal):
    p = f"decoder.decoder.temporal_decoder.layers_{j}"
    t[f"{p}.pre_self_attention_layer_norm.scale"] = (d,)
    attn(f"{p}.self_attention")
    t[f"{p}.pre_cross_attention_layer_norm.scale"] = (d,)
    attn(f"{p}.encoder_decoder_attention")
    t[f"{p}.pre_mlp_layer_norm.scale"] = (d,)
    mlp(f"{p}.mlp")
  for k in range(n_depth):
    p = f"decoder.decoder.depth_decoder.depth_layers_{k}"
    t[f"{p}.pre_self_attention_layer_norm.scale"] = (d,)
    attn(f"{p}.self_attention")
    t[f"{p}.pre_mlp_layer_norm.scale"] = (d,)
    mlp(f"{p}.mlp")
  return t


def test_base_param_tree_equals_t5x_manifest(base_abstract):
  have = {k: tuple(v.shape)
          for k, v in flatten_dict(base_abstract[0], sep=".").items()}
  want = _spec_tree(768, 2048, 12, 12)
  assert len(want) == 430
  assert sorted(set(want) - set(have)) == []
  assert sorted(set(have) - set(want)) == []
  assert have == want


def test_large_param_tree_equals_t5x_manifest(large_abstract):
  have = {k: tuple(v.shape)
          for k, v in flatten_dict(large_abstract[0], sep=".").items()}
  want = _spec_tree(1024, 2816, 16, 24)
  assert len(want) == 538
  assert have == want


def test_named_parameters(base_abstract):
  f = _flat(base_abstract[0])
  assert f["decoder/decoder/temporal_decoder/relpos_bias/rel_embedding"].shape \
      == (12, 128)
  assert f["decoder/decoder/depth_decoder/relpos_bias_depth/rel_embedding"] \
      .shape == (12, 16)
  assert f["decoder/logits_dense/kernel"].shape == (768, 29824)
  assert f["token_embedder/embedding"].shape == (29824, 768)
  assert f["encoder/encoder_norm/scale"].shape == (768,)
  assert f["decoder/decoder_norm/scale"].shape == (768,)
  # No encoder relative position bias, no position-embedding tensor, no
  # cross-attention in the depth stack, no wrapper `_module` level.
  assert not any(k.startswith("encoder/relpos") for k in f)
  assert not any("relpos" in k for k in f if k.startswith("encoder/"))
  assert not any("position" in k for k in f)
  assert not any("depth_decoder" in k and "encoder_decoder_attention" in k
                 for k in f)
  assert not any("_module" in k for k in f)


@pytest.mark.parametrize("which", ["base", "tiny"])
def test_every_param_has_logical_axes(which, base_abstract):
  if which == "base":
    shapes, specs = base_abstract
  else:
    shapes, specs = abstract_params(load_teacher_config("tiny"))
  known = {axes.VOCAB, axes.EMBED, axes.JOINED_KV, axes.MLP, axes.HEADS,
           axes.RELPOS}
  fshapes = _flat(shapes)
  fspecs = flatten_dict(specs, sep="/", is_leaf=lambda _, x: isinstance(
      x, PartitionSpec))
  assert set(fspecs) == set(fshapes)
  for name, spec in fspecs.items():
    assert isinstance(spec, PartitionSpec), name
    assert len(spec) == fshapes[name].ndim, name
    assert all(a in known for a in spec), (name, spec)
  assert fspecs["token_embedder/embedding"] == PartitionSpec("vocab", "embed")
  assert fspecs["decoder/logits_dense/kernel"] == PartitionSpec(
      "embed", "vocab")
  assert fspecs["encoder/layers_0/attention/query/kernel"] == PartitionSpec(
      "embed", "joined_kv")
  assert fspecs["encoder/layers_0/attention/out/kernel"] == PartitionSpec(
      "joined_kv", "embed")
  assert fspecs["encoder/layers_0/mlp/wo/kernel"] == PartitionSpec(
      "mlp", "embed")
  assert fspecs["decoder/decoder/temporal_decoder/relpos_bias/rel_embedding"] \
      == PartitionSpec("heads", "relpos_buckets")


# ---- building blocks -----------------------------------------------------------
def test_sinusoidal_positions_formula():
  length, dim = 7, 8
  table = sinusoidal_positions(length, dim)
  assert table.shape == (length, dim) and table.dtype == np.float32
  half = dim // 2
  for pos in range(length):
    for i in range(half):
      f_i = np.exp(-i * np.log(10000.0) / (half - 1))
      assert table[pos, i] == pytest.approx(np.sin(pos * f_i), abs=1e-6)
      assert table[pos, half + i] == pytest.approx(np.cos(pos * f_i), abs=1e-6)
  # Position 0: sin half is 0, cos half is 1 (not interleaved).
  np.testing.assert_array_equal(table[0], [0, 0, 0, 0, 1, 1, 1, 1])
  # f_0 = 1 and f_{d/2-1} = 1/10000.
  assert table[3, 0] == pytest.approx(np.sin(3.0), abs=1e-6)
  assert table[3, half - 1] == pytest.approx(np.sin(3e-4), abs=1e-7)


def test_relative_buckets_identity_for_v1_sizes():
  base = load_teacher_config("base")
  d = np.arange(50)
  np.testing.assert_array_equal(
      relative_buckets(d, base.temporal_relpos_buckets,
                       base.temporal_relpos_max_distance), d)
  d = np.arange(16)
  np.testing.assert_array_equal(
      relative_buckets(d, base.depth_relpos_buckets,
                       base.depth_relpos_max_distance), d)


def test_relative_buckets_unidirectional_and_clipped():
  # Keys after the query (negative distance) share bucket 0.
  np.testing.assert_array_equal(relative_buckets(np.array([-5, -1, 0]), 16, 16),
                                [0, 0, 0])
  far = relative_buckets(np.array([16, 100, 10_000]), 16, 16)
  np.testing.assert_array_equal(far, [15, 15, 15])
  assert relative_buckets(np.array([10_000]), 128, 128)[0] == 127
  # Log region of a T5 default: 32 buckets, max_distance 128.
  b = relative_buckets(np.arange(200), 32, 128)
  assert np.all(np.diff(b) >= 0) and b[15] == 15 and b[16] == 16
  assert b[-1] == 31 and b[40] < 31


@pytest.mark.parametrize("buckets,max_distance", [(128, 128), (16, 16),
                                                  (32, 128), (8, 8)])
@pytest.mark.usefixtures("strict_ranks")
def test_relpos_module_matches_numpy_buckets(buckets, max_distance):
  heads = 3
  table = np.random.default_rng(0).standard_normal(
      (heads, buckets)).astype(np.float32)
  q = np.arange(300)
  k = np.arange(4)
  mod = RelativePositionBias(heads, buckets, max_distance, jnp.float32)
  bias = np.asarray(mod.apply({"params": {"rel_embedding": table}},
                              jnp.asarray(q), jnp.asarray(k)))
  assert bias.shape == (1, heads, len(q), len(k))
  want = table[:, relative_buckets(q[:, None] - k[None, :], buckets,
                                   max_distance)]
  np.testing.assert_array_equal(bias[0], want)


@pytest.mark.usefixtures("strict_ranks")
def test_embedding_lookup_has_no_scaling(cfg, params):
  ids = jnp.array([[0, 1, 5, 255]], jnp.int32)
  emb = TeacherModel(cfg).apply({"params": params}, ids,
                                method=TeacherModel.embed_decoder)
  assert emb.dtype == jnp.float32
  np.testing.assert_array_equal(
      np.asarray(emb)[0], params["token_embedder"]["embedding"][[0, 1, 5, 255]])


# ---- forward pass -----------------------------------------------------------------
def test_forward_shape_dtype_and_finite(cfg, params, fwd, batch):
  enc, tgt = batch
  logits = fwd(params, enc, tgt)
  g = cfg.geometry
  assert logits.shape == (2, g.decoder_length, g.padded_vocab_size)
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  # Rows are independent: batch row 1 alone gives the same logits.
  alone = fwd(params, enc[1:], tgt[1:])
  np.testing.assert_allclose(alone[0], logits[1], atol=ATOL)
  # Different rows really differ.
  assert float(jnp.abs(logits[0] - logits[1]).max()) > 1e-2


def _pos(cfg, frame, level):
  return frame * cfg.geometry.target_levels + level


@pytest.mark.parametrize("frame", [0, 1, 2])
def test_temporal_causality(cfg, params, fwd, batch, frame):
  """Changing all levels of frame f leaves frames < f and (f, level 0) alone
  and changes frame f+1."""
  g = cfg.geometry
  enc, tgt = batch
  k = g.target_levels
  base = np.asarray(fwd(params, enc, tgt))
  changed = tgt.copy()
  sl = slice(frame * k, (frame + 1) * k)
  changed[:, sl] = g.codec_to_ids(
      (g.ids_to_codec(tgt[:, sl].reshape(2, k)) + 5) % g.codebook_size)
  assert np.all(changed[:, sl] != tgt[:, sl])
  out = np.asarray(fwd(params, enc, changed))
  keep = _pos(cfg, frame, 0) + 1  # frames < f and level 0 of frame f
  np.testing.assert_array_equal(out[:, :keep], base[:, :keep])
  # Levels >= 1 of frame f see the changed levels through the depth stack.
  assert np.abs(out[:, keep:(frame + 1) * k] - base[:, keep:(frame + 1) * k]
                ).max() > 1e-3
  # Frame f+1 (every level) sees frame f through the temporal stack.
  nxt = slice((frame + 1) * k, (frame + 2) * k)
  diff = np.abs(out[:, nxt] - base[:, nxt]).max(axis=-1)
  assert np.all(diff > 1e-4), diff


@pytest.mark.parametrize("frame,level", [(0, 0), (1, 2), (3, 1)])
def test_depth_causality(cfg, params, fwd, batch, frame, level):
  """Changing level q of frame f leaves positions <= (f, q) unchanged."""
  g = cfg.geometry
  enc, tgt = batch
  base = np.asarray(fwd(params, enc, tgt))
  p = _pos(cfg, frame, level)
  changed = tgt.copy()
  lo = g.codec_offset + g.codebook_size * level  # first id of this level
  changed[:, p] = lo + (tgt[:, p] - lo + 1) % g.codebook_size
  assert np.all(changed[:, p] != tgt[:, p])
  out = np.asarray(fwd(params, enc, changed))
  np.testing.assert_array_equal(out[:, :p + 1], base[:, :p + 1])
  if level + 1 < g.target_levels:
    assert np.abs(out[:, p + 1] - base[:, p + 1]).max() > 1e-4


def test_permuting_a_frame_only_changes_that_frame(cfg, params, fwd, batch):
  """The temporal input is the *mean* of the previous frame's embeddings, so
  reordering the tokens of frame f changes only frame f's logits (levels
  >= 1, through the depth stack)."""
  g = cfg.geometry
  enc, tgt = batch
  k = g.target_levels
  f = 1
  base = np.asarray(fwd(params, enc, tgt))
  perm = tgt.copy()
  perm[:, f * k:(f + 1) * k] = perm[:, f * k:(f + 1) * k][:, ::-1]
  out = np.asarray(fwd(params, enc, perm))
  np.testing.assert_allclose(out[:, :f * k + 1], base[:, :f * k + 1], atol=0)
  np.testing.assert_allclose(out[:, (f + 1) * k:], base[:, (f + 1) * k:],
                             atol=ATOL)
  assert np.abs(out[:, f * k + 1:(f + 1) * k]
                - base[:, f * k + 1:(f + 1) * k]).max() > 1e-3


def test_encoder_is_bidirectional(params, encode, batch):
  enc, _ = batch
  base = np.asarray(encode(params, enc))
  changed = enc.copy()
  changed[:, 0] = np.where(enc[:, 0] == 7, 8, 7)
  out = np.asarray(encode(params, changed))
  # The last position (a style token) sees the first context token.
  assert np.all(np.abs(out[:, -1] - base[:, -1]).max(axis=-1) > 1e-4)
  # ... and so does every other position.
  assert np.all(np.abs(out - base).max(axis=-1) > 1e-6)


def test_encoder_masks_only_pad(cfg, params, encode, batch):
  """A PAD (id 0) key is masked: its embedding cannot reach other positions,
  whereas a MASK (id 1) token is attended like any other."""
  enc, _ = batch
  j = 3
  with_pad = enc.copy()
  with_pad[:, j] = PAD_ID
  bumped = jax.tree.map(np.copy, params)
  bumped["token_embedder"]["embedding"][PAD_ID] += 3.0
  a = np.asarray(encode(params, with_pad))
  b = np.asarray(encode(bumped, with_pad))
  others = np.arange(enc.shape[1]) != j
  np.testing.assert_allclose(a[:, others], b[:, others], atol=ATOL)
  assert np.abs(a[:, j] - b[:, j]).max() > 1e-3
  # MASK is not masked: bumping its row changes the other positions.
  with_mask = enc.copy()
  with_mask[:, j] = 1
  bumped = jax.tree.map(np.copy, params)
  bumped["token_embedder"]["embedding"][1] += 3.0
  a = np.asarray(encode(params, with_mask))
  b = np.asarray(encode(bumped, with_mask))
  assert np.abs(a[:, others] - b[:, others]).max() > 1e-3


def test_decoder_reads_encoder(params, fwd, batch):
  enc, tgt = batch
  base = np.asarray(fwd(params, enc, tgt))
  changed = enc.copy()
  changed[:, -1] = np.where(enc[:, -1] == 90, 91, 90)  # a style token
  out = np.asarray(fwd(params, changed, tgt))
  # Frame 0 level 0 depends only on the encoder (and BOS).
  assert np.all(np.abs(out[:, 0] - base[:, 0]).max(axis=-1) > 1e-4)


# ---- the encoder PAD mask in cross-attention ---------------------------------------
def _with_pad(enc, positions):
  out = enc.copy()
  out[:, positions] = PAD_ID
  return out


# Left padding (as a shorter prompt set would be padded) plus one in the middle.
_PAD_POSITIONS = np.r_[0:5, 9]  # of 18 (tiny)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pad_free_inputs_are_bit_identical_to_the_unmasked_decoder(
    cfg, batch, dtype):
  """The mask adds +0.0 where there is no PAD: every logit keeps its bits, so
  the shipped teachers (fed MASK, never PAD) are unchanged by it."""
  c = cfg.replace(activation_dtype=dtype)
  p = numpy_init_params(c, 0)
  enc, tgt = batch
  assert (enc > 0).all()
  model = TeacherModel(c)
  masked = jax.jit(lambda p, e, t: model.apply({"params": p}, e, t))
  unmasked = jax.jit(lambda p, e, t: model.apply(
      {"params": p}, model.apply({"params": p}, e, method=TeacherModel.encode),
      t, method=TeacherModel.decode))  # enc_ids_BxLe=None: no mask at all
  a, b = np.asarray(masked(p, enc, tgt)), np.asarray(unmasked(p, enc, tgt))
  np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_pad_parity_with_deleted_encoder_positions(cfg, params, fwd, batch):
  """Independent form of the mask: attending with PAD keys masked equals
  attending to an encoder output from which the PAD positions were cut out
  (exp(-1e10) is exactly 0 in float32)."""
  enc, tgt = batch
  with_pad = _with_pad(enc, _PAD_POSITIONS)
  keep = np.flatnonzero(with_pad[0] != PAD_ID)
  model = TeacherModel(cfg)
  encoded = np.asarray(model.apply({"params": params}, with_pad,
                                   method=TeacherModel.encode))
  # The cut sequence has no PAD left to mask: decode it unmasked.
  want = np.asarray(model.apply({"params": params}, encoded[:, keep], tgt,
                                method=TeacherModel.decode))
  got = np.asarray(fwd(params, with_pad, tgt))
  np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
  unmasked = np.asarray(model.apply({"params": params}, encoded, tgt,
                                    method=TeacherModel.decode))
  assert np.abs(unmasked - want).max() > 1e-3  # the mask matters here


def test_all_pad_encoder_row_is_finite(cfg, params, fwd, batch):
  """A row of PAD only masks every key: flaxformer's additive -1e10 then
  averages all values uniformly; no NaN."""
  enc, tgt = batch
  out = np.asarray(fwd(params, np.zeros_like(enc), tgt))
  assert np.isfinite(out).all()


# ---- incremental path ------------------------------------------------------------
@pytest.mark.parametrize("pad", [False, True])
def test_incremental_steps_reproduce_teacher_forcing(cfg, params, fwd, batch,
                                                     pad):
  g = cfg.geometry
  enc, tgt = batch
  if pad:
    enc = _with_pad(enc, _PAD_POSITIONS)
  c, k = g.chunk_frames, g.target_levels
  model = TeacherModel(cfg)

  def method(m):
    return jax.jit(functools.partial(
        lambda p, *a, _m: model.apply({"params": p}, *a, method=_m), _m=m))

  encode, cross_kv = method(TeacherModel.encode), method(TeacherModel.cross_kv)
  t_step, d_step = method(TeacherModel.temporal_step), method(
      TeacherModel.depth_step)
  embed = method(TeacherModel.embed_decoder)

  want = np.asarray(fwd(params, enc, tgt))
  cross = cross_kv(params, encode(params, enc))
  cross_bias = encoder_pad_bias(enc)
  t_caches = _zeros_kv(cfg, 2, c, cfg.num_temporal_layers)
  prev = jnp.zeros((2, k), jnp.int32)  # BOS frame
  for f in range(c):
    t_out, t_caches = t_step(params, prev, jnp.int32(f), t_caches, cross,
                             cross_bias)
    assert t_out.shape == (2, 1, cfg.d_model)
    d_caches = _zeros_kv(cfg, 2, k, cfg.num_depth_layers)
    x = t_out
    for q in range(k):
      logits, d_caches = d_step(params, x, jnp.int32(q), d_caches)
      np.testing.assert_allclose(np.asarray(logits), want[:, f * k + q],
                                 atol=ATOL, rtol=0,
                                 err_msg=f"frame {f} level {q}")
      x = embed(params, jnp.asarray(tgt[:, f * k + q:f * k + q + 1]))
    prev = jnp.asarray(tgt[:, f * k:(f + 1) * k])


# ---- known deviations --------------------------------------------------------------
def test_forward_runs_under_rank_promotion_raise(cfg, params, batch):
  """The teacher never relies on implicit rank promotion (STYLE.md §12):
  under 'raise' (the guard is live: an implicit promotion raises in it) the
  forward runs and gives bitwise the logits of 'allow'. Catches e.g.
  RMSNorm's `y * scale` without its explicit reshape."""
  enc, tgt = batch
  model = TeacherModel(cfg)
  with jax.numpy_rank_promotion("allow"):
    want = np.asarray(model.apply({"params": params}, enc, tgt))
  with jax.numpy_rank_promotion("raise"):
    with pytest.raises(ValueError, match="rank_promotion"):
      jnp.ones((2, 3)) + jnp.ones(3)
    got = np.asarray(model.apply({"params": params}, enc, tgt))
  assert got.shape[:2] == tgt.shape and np.isfinite(got).all()
  np.testing.assert_array_equal(got, want)
