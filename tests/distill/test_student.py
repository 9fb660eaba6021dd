"""Tests of the one-step student (mrt_distill.distill.student) and of the
LoRA adapters it puts on the teacher's kernels (mrt_distill.teacher.layers).

The tiny teacher (float32 activations) keeps every forward pass cheap, so
parity with the teacher is checked to f32 rounding and the cache/boundary
properties the serving path relies on are checked exactly.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.sharding import PartitionSpec

from mrt_distill import axes
from mrt_distill.codec.base import MinimalCodec
from mrt_distill.distill import student as st
from mrt_distill.distill.student import (HEAD_SCOPES, LORA_LEAVES,
                                         LatentScaler, StudentConfig,
                                         StudentModel)
from mrt_distill.geometry import MASK_ID, TINY
from mrt_distill.teacher.layers import Dense
from mrt_distill.teacher.load import load_teacher_config
from mrt_distill.teacher.model import (TeacherModel, abstract_params,
                                       numpy_init_params)

RANK = 2


# ---- fixtures / helpers ------------------------------------------------------


@pytest.fixture(scope="module")
def tcfg():
  return load_teacher_config("tiny")


def _teacher_params(tcfg, seed):
  """Teacher params as device arrays; numpy draws (no Flax init to compile,
  norm scales jittered away from 1 so a dropped scale would show)."""
  return jax.tree.map(jnp.asarray, numpy_init_params(tcfg, seed))


@pytest.fixture(scope="module")
def teacher(tcfg):
  return _teacher_params(tcfg, 0)


@pytest.fixture(scope="module")
def scfg(tcfg):
  return StudentConfig(tcfg, lora_rank=RANK)


@pytest.fixture(scope="module")
def sparams(scfg, teacher):
  """A fresh student (LoRA B = 0, zero latent_out) from the teacher."""
  return st.from_teacher(scfg, teacher, jax.random.PRNGKey(1))


@pytest.fixture
def fast_init(monkeypatch, sparams):
  """`from_teacher` without a second Flax init (seconds on a small CPU): the
  random student it starts from is `sparams` (any student tree will do)."""
  monkeypatch.setattr(st, "init_student_params", lambda cfg, rng: sparams)


def _apply(scfg, params, *args, method):
  return StudentModel(scfg).apply({"params": params}, *args, method=method)


def _set(params, path, value):
  flat = dict(flatten_dict(params))
  assert path in flat, path
  flat[path] = jnp.asarray(value, jnp.float32)
  return unflatten_dict(flat)


def _live_head(scfg, params, seed=0):
  """The student with a random (nonzero) latent_out kernel."""
  shape = params["latent_out"]["kernel"].shape
  rng = np.random.default_rng(seed)
  k = rng.standard_normal(shape) / np.sqrt(shape[0])
  return _set(params, ("latent_out", "kernel"), k)


def _inputs(scfg, batch=2, seed=0):
  """Random (ctx ids (B, N, L), style ids (B, S), style emb (B, E))."""
  g = scfg.geometry
  rng = np.random.default_rng(seed)
  codes = rng.integers(0, g.codebook_size,
                       (batch, g.context_frames, g.context_levels))
  ctx = st.context_ids(g, codes)
  lv = np.arange(g.style_levels)
  style = (g.style_offset + g.style_codebook_size * lv
           + rng.integers(0, g.style_codebook_size, (batch, g.style_levels)))
  emb = rng.standard_normal((batch, g.style_embed_dim)).astype(np.float32)
  return (jnp.asarray(ctx), jnp.asarray(style, jnp.int32), jnp.asarray(emb))


def _latents(scfg, batch=2, seed=0):
  g = scfg.geometry
  rng = np.random.default_rng(seed + 100)
  return jnp.asarray(rng.standard_normal(
      (batch, g.chunk_frames, g.codec_latent_dim)).astype(np.float32))


def _cross(scfg, params, batch=2, seed=0):
  return _apply(scfg, params, *_inputs(scfg, batch, seed),
                method=StudentModel.context_kv)


# ---- 1. LoRA Dense -----------------------------------------------------------


def _dense_init(lora_rank, x, **kw):
  d = Dense(6, (axes.EMBED, axes.MLP), jnp.float32, lora_rank=lora_rank, **kw)
  return d, d.init(jax.random.PRNGKey(0), x)["params"]


def test_lora_dense_with_zero_b_equals_plain_dense():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 5, 4)),
                  jnp.float32)
  lora, p = _dense_init(RANK, x)
  p = nn.unbox(p)
  # Fresh adapter: B is zeros and A is not (so the test is not vacuous).
  np.testing.assert_array_equal(p["lora_b"], np.zeros((RANK, 6)))
  assert np.abs(np.asarray(p["lora_a"])).max() > 0
  plain = Dense(6, (axes.EMBED, axes.MLP), jnp.float32)
  want = plain.apply({"params": {"kernel": p["kernel"]}}, x)
  np.testing.assert_array_equal(lora.apply({"params": p}, x), want)
  np.testing.assert_allclose(want, np.asarray(x) @ np.asarray(p["kernel"]),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha,scale", [(None, 1.0), (4.0, 2.0)])
def test_lora_dense_formula(alpha, scale):
  rng = np.random.default_rng(1)
  x = rng.standard_normal((3, 5, 4)).astype(np.float32)
  w = rng.standard_normal((4, 6)).astype(np.float32)
  a = rng.standard_normal((4, RANK)).astype(np.float32)
  b = rng.standard_normal((RANK, 6)).astype(np.float32)
  d = Dense(6, (axes.EMBED, axes.MLP), jnp.float32, lora_rank=RANK,
            lora_alpha=alpha)
  got = d.apply({"params": {"kernel": w, "lora_a": a, "lora_b": b}}, x)
  want = x @ w + (x @ a) @ b * scale
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The low-rank part really contributes.
  assert np.abs(want - x @ w).max() > 1e-2


def test_lora_dense_shapes_and_logical_axes():
  x = jnp.zeros((2, 4), jnp.float32)
  _, boxed = _dense_init(RANK, x)
  shapes = jax.tree.map(lambda v: v.shape, nn.unbox(boxed))
  assert shapes == {"kernel": (4, 6), "lora_a": (4, RANK),
                    "lora_b": (RANK, 6)}
  spec = nn.get_partition_spec(boxed)
  assert spec["kernel"] == PartitionSpec(axes.EMBED, axes.MLP)
  assert spec["lora_a"] == PartitionSpec(axes.EMBED, axes.LORA_RANK)
  assert spec["lora_b"] == PartitionSpec(axes.LORA_RANK, axes.MLP)
  # rank 0: no adapter parameters at all.
  _, plain = _dense_init(0, x)
  assert set(plain) == {"kernel"}


def test_student_partition_spec_names_lora_and_heads(scfg):
  spec = flatten_dict(st.student_partition_spec(scfg))
  lora = {k: v for k, v in spec.items() if k[-1] in LORA_LEAVES}
  assert lora
  for path, s in lora.items():
    assert axes.LORA_RANK in tuple(s), path
    assert len(tuple(s)) == 2
  assert spec[("latent_out", "kernel")] == PartitionSpec(axes.EMBED,
                                                         axes.LATENT)
  assert spec[("cross_slot_bias",)] == PartitionSpec(axes.HEADS, axes.RELPOS)


# ---- 2. the teacher without LoRA is unchanged --------------------------------


def test_teacher_lora_rank_zero_tree_unchanged(tcfg, teacher):
  # abstract_params traces the very init of `init_params` (eval_shape), so
  # its path set is init_params' without the seconds of an eager Flax init.
  assert tcfg.lora_rank == 0
  shapes0, spec0 = abstract_params(tcfg)
  paths0 = set(flatten_dict(shapes0))
  assert not [p for p in paths0 if any("lora" in k for k in p)]
  assert set(flatten_dict(teacher)) == paths0
  assert not [s for s in jax.tree.leaves(
      spec0, is_leaf=lambda x: isinstance(x, PartitionSpec))
              if axes.LORA_RANK in tuple(s)]
  # With LoRA: the same tree plus exactly one (A, B) pair next to every
  # encoder / temporal kernel; the depth stack and logits head get none.
  shapes_r, _ = abstract_params(tcfg.replace(lora_rank=RANK))
  paths_r = set(flatten_dict(shapes_r))
  lora = {p for p in paths_r if p[-1] in LORA_LEAVES}
  assert paths_r - lora == paths0
  kernels = {p[:-1] for p in paths0 if p[-1] == "kernel"
             and (p[0] == "encoder" or "temporal_decoder" in p)}
  assert kernels
  assert lora == ({k + ("lora_a",) for k in kernels}
                  | {k + ("lora_b",) for k in kernels})


# ---- 3. from_teacher ---------------------------------------------------------


def test_from_teacher_copies_frozen_and_trains_only_adapters(
    scfg, teacher, sparams):
  t = flatten_dict(teacher)
  s = flatten_dict(sparams)
  trainable = {p for p in s if st.is_trainable(p)}
  assert trainable == {p for p in s
                       if p[0] in HEAD_SCOPES or p[-1] in LORA_LEAVES}
  # noise_in, token_out, the token_feedback head, its frame state and its
  # extra pick blocks (head_layers > 1) exist only in coupled students (this
  # one is not); latent_out only in latent-head ones (this one is).
  coupled_only = {"noise_in", "token_out", "prev_in", "level_in",
                  "prev_hidden", "prev_out", "repeat_logit", "state_decay",
                  "state_out", "pick_blocks"}
  assert {p[0] for p in trainable} >= set(HEAD_SCOPES) - coupled_only
  assert not coupled_only & {p[0] for p in trainable}
  frozen = set(s) - trainable
  assert frozen and not [p for p in frozen if p[-1] in LORA_LEAVES]
  for path in frozen:
    assert s[path].dtype == jnp.float32
    np.testing.assert_array_equal(s[path], t[path], err_msg=str(path))
  # Fresh adapters: every B is zero; the new output head is zero.
  for path in trainable:
    if path[-1] == "lora_b":
      np.testing.assert_array_equal(s[path], 0.0)
  np.testing.assert_array_equal(s[("latent_out", "kernel")], 0.0)
  # The student carries no decoder parts it does not use.
  assert not [p for p in s if "depth_decoder" in p or "logits_dense" in p]


def test_from_teacher_rejects_other_architecture(scfg, tcfg, fast_init):
  other = numpy_init_params(tcfg.replace(d_model=48), 0)
  with pytest.raises(ValueError, match=r"teacher param \S+/kernel has shape "
                     r"\(48, 32\), the student expects \(32, 32\)"):
    st.from_teacher(scfg, other, jax.random.PRNGKey(1))


def test_from_teacher_rejects_missing_leaf(scfg, teacher, fast_init):
  flat = dict(flatten_dict(teacher))
  path = ("decoder", "decoder", "temporal_decoder", "layers_1", "mlp", "wo",
          "kernel")
  del flat[path]
  with pytest.raises(ValueError, match="/".join(path)):
    st.from_teacher(scfg, unflatten_dict(flat), jax.random.PRNGKey(1))


def test_from_teacher_frozen_leaves_are_copies(scfg, tcfg, fast_init):
  teacher = _teacher_params(tcfg, 3)
  path = ("encoder", "layers_0", "attention", "query", "kernel")
  before = np.array(flatten_dict(teacher)[path])
  s = flatten_dict(st.from_teacher(scfg, teacher, jax.random.PRNGKey(1)))
  for p, v in s.items():
    if not st.is_trainable(p):
      v.delete()
  t = flatten_dict(teacher)
  for p in s:
    if not st.is_trainable(p):
      assert not t[p].is_deleted(), p
  np.testing.assert_array_equal(np.asarray(t[path]), before)


# ---- 4. parity with the teacher's encoder ------------------------------------


def test_encode_chunks_equals_teacher_encode_per_chunk(scfg, tcfg, teacher,
                                                       sparams):
  ctx, _, _ = _inputs(scfg, batch=2, seed=3)
  b, n, l = ctx.shape
  assert (n, l) == (2, 8)
  ctx = ctx.at[0, 1, 2:4].set(MASK_ID)  # a missing frame in one chunk
  got = _apply(scfg, sparams, ctx, method=StudentModel.encode_chunks)
  assert got.shape == (b, n, l, tcfg.d_model)
  want = TeacherModel(tcfg).apply({"params": teacher}, ctx.reshape(b * n, l),
                                  method=TeacherModel.encode)
  np.testing.assert_allclose(got, np.asarray(want).reshape(b, n, l, -1),
                             rtol=1e-5, atol=1e-5)
  # Chunk-local: the teacher on the whole window (global positions) differs.
  whole = TeacherModel(tcfg).apply({"params": teacher}, ctx.reshape(b, n * l),
                                   method=TeacherModel.encode)
  assert np.abs(np.asarray(whole).reshape(b, n, l, -1) - got).max() > 1e-3


def test_cross_kv_equals_teacher_cross_kv(scfg, tcfg, teacher, sparams):
  enc = jnp.asarray(np.random.default_rng(0).standard_normal(
      (2, 5, tcfg.d_model)), jnp.float32)
  got = _apply(scfg, sparams, enc, method=StudentModel.cross_kv)
  want = TeacherModel(tcfg).apply({"params": teacher}, enc,
                                  method=TeacherModel.cross_kv)
  assert len(got) == tcfg.num_temporal_layers
  for g_kv, w_kv in zip(got, want):
    np.testing.assert_allclose(g_kv.k, w_kv.k, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_kv.v, w_kv.v, rtol=1e-5, atol=1e-5)


# ---- 5. the cached context ---------------------------------------------------


def test_chunk_kv_depends_on_its_chunk_only(scfg, sparams):
  # LoRA B nonzero: the property must hold for any params.
  flat = flatten_dict(sparams)
  rng = np.random.default_rng(0)
  p = unflatten_dict({k: (jnp.asarray(rng.standard_normal(v.shape) * 0.1,
                                      jnp.float32)
                          if k[-1] == "lora_b" else v)
                      for k, v in flat.items()})
  ctx, style, emb = _inputs(scfg, batch=2, seed=4)
  l = scfg.chunk_tokens
  ctx2 = ctx.at[:, 0].set(jnp.roll(ctx[:, 0], 3, axis=-1))
  ctx2 = ctx2.at[0, 0, :2].set(MASK_ID)
  assert not np.array_equal(ctx, ctx2)
  kv1 = _apply(scfg, p, ctx, style, emb, method=StudentModel.context_kv)
  kv2 = _apply(scfg, p, ctx2, style, emb, method=StudentModel.context_kv)
  assert kv1[0].k.shape == (2, 2 * l + scfg.geometry.style_levels,
                            scfg.teacher.num_heads, scfg.teacher.head_dim)
  for a, b in zip(kv1, kv2):
    for x, y in ((a.k, b.k), (a.v, b.v)):
      np.testing.assert_array_equal(x[:, l:], y[:, l:])  # chunk 1 + style
      assert np.abs(np.asarray(x[:, :l] - y[:, :l])).max() > 1e-4


def test_cross_kv_of_concatenation_is_concatenation(scfg, sparams):
  ctx, style, emb = _inputs(scfg, batch=2, seed=6)
  enc = _apply(scfg, sparams, ctx, method=StudentModel.encode_chunks)
  sty = _apply(scfg, sparams, style, emb, method=StudentModel.encode_style)
  parts = [enc[:, 0], enc[:, 1], sty]
  whole = _apply(scfg, sparams, jnp.concatenate(parts, axis=1),
                 method=StudentModel.cross_kv)
  each = [_apply(scfg, sparams, x, method=StudentModel.cross_kv)
          for x in parts]
  full = _apply(scfg, sparams, ctx, style, emb, method=StudentModel.context_kv)
  for i, kv in enumerate(whole):
    for f in ("k", "v"):
      cat = np.concatenate([getattr(e[i], f) for e in each], axis=1)
      np.testing.assert_allclose(getattr(kv, f), cat, rtol=1e-6, atol=1e-6)
      np.testing.assert_allclose(getattr(full[i], f), cat, rtol=1e-6,
                                 atol=1e-6)


def test_cross_bias_maps_slots(scfg, sparams):
  n, l, s = scfg.context_chunks, scfg.chunk_tokens, scfg.geometry.style_levels
  h = scfg.teacher.num_heads
  table = np.arange(h * (n + 1), dtype=np.float32).reshape(h, n + 1)
  p = _set(sparams, ("cross_slot_bias",), table)
  got = np.asarray(_apply(scfg, p, method=StudentModel.cross_bias))
  slot = np.array([0] * l + [1] * l + [2] * s)
  np.testing.assert_array_equal(got, table[:, slot][None, :, None, :])


def test_style_bias_init_sets_only_the_style_slot(tcfg):
  n_slots = StudentConfig(tcfg, lora_rank=RANK).context_chunks + 1
  fresh = st.init_student_params(StudentConfig(tcfg, lora_rank=RANK),
                                 jax.random.key(0))["cross_slot_bias"]
  np.testing.assert_array_equal(fresh, np.zeros((tcfg.num_heads, n_slots)))
  cfg = StudentConfig(tcfg, lora_rank=RANK, style_bias_init=1.5)
  got = np.asarray(st.init_student_params(cfg, jax.random.key(0))
                   ["cross_slot_bias"])
  want = np.zeros((tcfg.num_heads, n_slots), np.float32)
  want[:, -1] = 1.5
  np.testing.assert_array_equal(got, want)
  # ... and the decoder sees it: the style tokens' columns carry 1.5.
  bias = np.asarray(StudentModel(cfg).apply(
      {"params": st.init_student_params(cfg, jax.random.key(0))},
      method=StudentModel.cross_bias))
  s = cfg.geometry.style_levels
  np.testing.assert_array_equal(bias[..., -s:], 1.5)
  np.testing.assert_array_equal(bias[..., :-s], 0.0)


def test_style_in_zero_init_starts_from_the_teacher_style_tokens(tcfg):
  base = StudentConfig(tcfg, lora_rank=RANK)
  cfg = StudentConfig(tcfg, lora_rank=RANK, style_in_zero_init=True)
  rand = flatten_dict(st.init_student_params(base, jax.random.key(0)))
  zero = flatten_dict(st.init_student_params(cfg, jax.random.key(0)))
  assert np.abs(np.asarray(rand[("style_in", "kernel")])).max() > 0
  np.testing.assert_array_equal(zero[("style_in", "kernel")], 0.0)
  for k in rand:  # only style_in changes
    if k != ("style_in", "kernel"):
      np.testing.assert_array_equal(zero[k], rand[k])
  # The continuous embedding no longer moves a fresh student's style
  # encoding: it is the teacher's encoder on the style tokens alone.
  params = unflatten_dict(zero)
  ids = jnp.asarray(np.arange(cfg.geometry.style_levels)[None] + 3,
                    jnp.int32)
  e = cfg.geometry.style_embed_dim
  a, b = (StudentModel(cfg).apply(
      {"params": params}, ids,
      jnp.asarray(np.random.default_rng(i).normal(size=(1, e)), jnp.float32),
      method=StudentModel.encode_style) for i in (0, 1))
  np.testing.assert_array_equal(a, b)


# ---- 6. the consistency boundary ---------------------------------------------


def test_denoise_is_identity_at_sigma_min(scfg, sparams):
  p = _live_head(scfg, sparams)
  cross = _cross(scfg, p)
  x = _latents(scfg)
  smin = scfg.noise.sigma_min
  out = _apply(scfg, p, x, jnp.full((2,), smin, jnp.float32), cross,
               method=StudentModel.denoise)
  np.testing.assert_array_equal(out, x)
  # ... and not at a higher sigma (the head is live).
  out = _apply(scfg, p, x, jnp.full((2,), 0.5, jnp.float32), cross,
               method=StudentModel.denoise)
  skip = np.asarray(scfg.noise.c_skip(jnp.float32(0.5)))
  assert np.abs(np.asarray(out) - skip * np.asarray(x)).max() > 1e-3


def test_fresh_denoise_is_c_skip_times_x(scfg, sparams):
  cross = _cross(scfg, sparams)
  x = _latents(scfg)
  sig = jnp.asarray([0.01, 3.0], jnp.float32)
  out = _apply(scfg, sparams, x, sig, cross, method=StudentModel.denoise)
  want = np.asarray(scfg.noise.c_skip(sig))[:, None, None] * np.asarray(x)
  np.testing.assert_allclose(out, want, rtol=1e-6, atol=0)


def test_call_rows_see_only_their_own_context_and_style(scfg, sparams):
  """The training forward over a batch == each row run alone: row i's
  output depends on row i's context, style and noise only (no mixing of
  rows in encode_chunks' (B * N, L) reshape or in the cross KVs), and the
  two rows, given the same x and sigma, differ through their context and
  style. (Replaces a check of __call__ against its own two halves.)"""
  p = _live_head(scfg, sparams)
  ctx, sid, emb = _inputs(scfg)
  x = jnp.repeat(_latents(scfg, 1), 2, axis=0)
  sig = jnp.asarray([0.7, 0.7], jnp.float32)
  model = StudentModel(scfg)
  got = np.asarray(model.apply({"params": p}, ctx, sid, emb, x, sig))
  assert np.isfinite(got).all()
  assert np.abs(got[0] - got[1]).max() > 1e-3
  for i in range(2):
    alone = model.apply({"params": p}, ctx[i:i + 1], sid[i:i + 1],
                        emb[i:i + 1], x[i:i + 1], sig[i:i + 1])
    np.testing.assert_allclose(got[i:i + 1], alone, rtol=1e-5, atol=1e-5)


# ---- 7. non-causal over frames -----------------------------------------------


def test_denoiser_is_not_causal(scfg, sparams):
  p = _live_head(scfg, sparams)
  cross = _cross(scfg, p)
  x = _latents(scfg)
  x2 = x.at[:, -1].add(1.0)
  sig = jnp.full((2,), 1.0, jnp.float32)
  a = np.asarray(_apply(scfg, p, x, sig, cross, method=StudentModel.denoise))
  b = np.asarray(_apply(scfg, p, x2, sig, cross, method=StudentModel.denoise))
  assert np.abs(a[:, 0] - b[:, 0]).max() > 1e-5

  # The same stack run causally (as in the teacher) cannot see ahead.
  def stack(m, h, cross, causal):
    return m.decoder.decoder.temporal_decoder(h, cross, causal=causal,
                                              cross_bias=m.cross_bias())

  d = scfg.teacher.d_model
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.standard_normal((2, scfg.geometry.chunk_frames, d)),
                  jnp.float32)
  h2 = h.at[:, -1].add(1.0)
  for causal in (True, False):
    ya = np.asarray(_apply(scfg, p, h, cross, causal, method=stack))
    yb = np.asarray(_apply(scfg, p, h2, cross, causal, method=stack))
    diff = np.abs(ya[:, :-1] - yb[:, :-1]).max()
    if causal:
      assert diff < 1e-6
    else:
      assert diff > 1e-4


# ---- 8. the style embedding --------------------------------------------------


def test_style_embedding_moves_the_output(scfg, sparams):
  p = _live_head(scfg, sparams)
  ctx, style, emb = _inputs(scfg, seed=8)
  emb2 = emb + 1.0
  e1 = _apply(scfg, p, style, emb, method=StudentModel.encode_style)
  e2 = _apply(scfg, p, style, emb2, method=StudentModel.encode_style)
  assert e1.shape == (2, scfg.geometry.style_levels, scfg.teacher.d_model)
  assert np.abs(np.asarray(e1 - e2)).max() > 1e-4
  x = _latents(scfg)
  sig = jnp.full((2,), 2.0, jnp.float32)
  model = StudentModel(scfg)
  a = model.apply({"params": p}, ctx, style, emb, x, sig)
  b = model.apply({"params": p}, ctx, style, emb2, x, sig)
  assert np.abs(np.asarray(a - b)).max() > 1e-5
  # Zero style_in kernel: the embedding no longer matters (only via style_in).
  p0 = _set(p, ("style_in", "kernel"),
            np.zeros_like(p["style_in"]["kernel"]))
  c = model.apply({"params": p0}, ctx, style, emb, x, sig)
  d = model.apply({"params": p0}, ctx, style, emb2, x, sig)
  np.testing.assert_array_equal(c, d)


# ---- 9. context ids ----------------------------------------------------------


def test_context_ids_layout():
  g = TINY
  rng = np.random.default_rng(0)
  codes = rng.integers(0, g.codebook_size, (2, g.context_frames, 3))
  codes[0, 1, 0] = -1  # one level missing: the whole frame is empty
  codes[1, 5, :] = -1
  ids = st.context_ids(g, codes)
  n, c, k = g.context_chunks, g.chunk_frames, g.context_levels
  assert ids.shape == (2, n, c * k) and ids.dtype == np.int32
  for b in range(2):
    for f in range(g.context_frames):
      for lv in range(k):
        got = ids[b, f // c, (f % c) * k + lv]
        if (codes[b, f, :k] < 0).any():
          assert got == MASK_ID, (b, f, lv)
        else:
          assert got == (g.codec_offset + g.codebook_size * lv
                         + codes[b, f, lv]), (b, f, lv)
  # Levels beyond the context levels are ignored (even if -1).
  codes2 = codes.copy()
  codes2[..., k:] = -1
  np.testing.assert_array_equal(st.context_ids(g, codes2), ids)
  assert (ids[0, 0, 2:4] == MASK_ID).all() and ids[0, 0, 0] != MASK_ID


def test_context_ids_rejects_partial_chunks():
  with pytest.raises(ValueError, match="whole number"):
    st.context_ids(TINY, np.zeros((1, TINY.chunk_frames + 1, 2), np.int32))


def test_student_config_validation(tcfg):
  with pytest.raises(ValueError, match="lora_rank"):
    StudentConfig(tcfg, lora_rank=0)
  c = StudentConfig(tcfg, lora_rank=RANK)
  assert c.context_chunks == 2 and c.chunk_tokens == 8
  b = c.backbone
  assert b.lora_rank == RANK and b.dropout_rate == 0.0
  assert b.d_model == tcfg.d_model


# ---- 10. split / merge / count -----------------------------------------------


def test_split_merge_round_trip_and_trainable_fraction(sparams):
  train, frozen = st.split_params(sparams)
  ft, ff = flatten_dict(train), flatten_dict(frozen)
  assert not set(ft) & set(ff)
  assert all(st.is_trainable(p) for p in ft)
  assert not any(st.is_trainable(p) for p in ff)
  merged = st.merge_params(train, frozen)
  assert jax.tree.structure(merged) == jax.tree.structure(sparams)
  fm, fs = flatten_dict(merged), flatten_dict(sparams)
  assert set(fm) == set(fs)
  for p in fs:
    assert fm[p] is fs[p]
  n_train, n_all = st.count(train), st.count(sparams)
  assert n_train + st.count(frozen) == n_all
  assert 0 < n_train / n_all < 0.25


# ---- 11. LatentScaler --------------------------------------------------------


class _StatsCodec:
  def __init__(self, mean, std, d):
    self.latent_stats = {"mean": mean, "std": std}
    self.codebooks = np.zeros((2, 4, d), np.float32)


def test_latent_scaler_round_trip_with_stats():
  rng = np.random.default_rng(0)
  d = 8
  mean = rng.standard_normal(d)
  std = rng.uniform(0.5, 2.0, d)
  std[3] = 0.0  # floored, not a division by zero
  sc = LatentScaler.for_codec(_StatsCodec(mean, std, d), sigma_data=0.5)
  assert sc.std[3] == pytest.approx(1e-3)
  x = rng.standard_normal((3, 4, d)).astype(np.float32)
  np.testing.assert_allclose(sc.to_codec(sc.to_student(x)), x, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(sc.to_student(x)[..., 0],
                             0.5 * (x[..., 0] - mean[0]) / std[0], rtol=1e-5)
  # Standardised: latents with the codec's stats get spread sigma_data.
  lat = mean + std * rng.standard_normal((20000, d))
  s = sc.to_student(lat)
  keep = np.arange(d) != 3
  np.testing.assert_allclose(s.std(axis=0)[keep], 0.5, rtol=0.05)


def test_latent_scaler_falls_back_to_codebook_spread():
  codec = MinimalCodec(TINY)
  assert getattr(codec, "latent_stats", None) is None
  sc = LatentScaler.for_codec(codec, sigma_data=0.5)
  books = np.asarray(codec.codebooks, np.float64)
  want = np.sqrt(np.var(books, axis=1).sum(axis=0))
  assert sc.mean.shape == sc.std.shape == (TINY.codec_latent_dim,)
  np.testing.assert_array_equal(sc.mean, 0.0)
  assert (sc.std > 0).all()
  np.testing.assert_allclose(sc.std, np.maximum(want, 1e-3), rtol=1e-5)
  x = np.random.default_rng(1).standard_normal((2, 4, 8)).astype(np.float32)
  np.testing.assert_allclose(sc.to_codec(sc.to_student(x)), x, rtol=1e-5,
                             atol=1e-6)


# ---- 12. sampling ------------------------------------------------------------


def test_sample_fresh_student_is_c_skip_of_noise(scfg, sparams):
  model = StudentModel(scfg)
  cross = _cross(scfg, sparams)
  noise, g = scfg.noise, scfg.geometry
  shape = (2, g.chunk_frames, g.codec_latent_dim)
  key = jax.random.PRNGKey(7)
  out1 = st.sample(model, sparams, cross, key, 2, steps=1)
  _, sub = jax.random.split(key)
  z = np.asarray(jax.random.normal(sub, shape)) * noise.sigma_max
  c_max = float(noise.c_skip(jnp.float32(noise.sigma_max)))
  assert c_max < 1e-4
  np.testing.assert_allclose(out1, c_max * z, rtol=1e-5, atol=1e-7)
  # Two steps: re-noise to sigma_data, then c_skip(sigma_data) * x.
  out2 = st.sample(model, sparams, cross, key, 2, steps=2)
  k, sub1 = jax.random.split(key)
  _, sub2 = jax.random.split(k)
  x0 = c_max * np.asarray(jax.random.normal(sub1, shape)) * noise.sigma_max
  s = noise.sampling_ladder(2)[0]
  s_noise = np.sqrt(s * s - noise.sigma_min ** 2)
  x = x0 + s_noise * np.asarray(jax.random.normal(sub2, shape))
  want = float(noise.c_skip(jnp.float32(s))) * x
  np.testing.assert_allclose(out2, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 2])
def test_sample_is_finite_deterministic_and_keyed(scfg, sparams, steps):
  p = _live_head(scfg, sparams)
  model = StudentModel(scfg)
  cross = _cross(scfg, p)
  g = scfg.geometry
  a = st.sample(model, p, cross, jax.random.PRNGKey(0), 2, steps)
  b = st.sample(model, p, cross, jax.random.PRNGKey(0), 2, steps)
  c = st.sample(model, p, cross, jax.random.PRNGKey(1), 2, steps)
  assert a.shape == (2, g.chunk_frames, g.codec_latent_dim)
  assert np.isfinite(np.asarray(a)).all()
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a - c)).max() > 1e-4
  # With a live head the output is not just the skip path.
  shape = a.shape
  _, sub = jax.random.split(jax.random.PRNGKey(0))
  c_max = float(scfg.noise.c_skip(jnp.float32(scfg.noise.sigma_max)))
  z = np.asarray(jax.random.normal(sub, shape))
  skip = c_max * z * scfg.noise.sigma_max
  assert np.abs(np.asarray(a) - skip).max() > 1e-3
