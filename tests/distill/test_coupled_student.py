"""The coupled student's plumbing: rollouts carry the noise that made each
teacher chunk, the student reads it, short chunks slice it, and runs /
files of the other kind are refused. (The sampler itself:
tests/test_coupling.py.)"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mrt_distill import coupling
from mrt_distill.codec.base import MinimalCodec
from mrt_distill.distill import checkpoints, config_io
from mrt_distill.distill import student as S
from mrt_distill.distill import train_step as T
from mrt_distill.distill.prompts import PromptRecord
from mrt_distill.distill.rollout import RolloutGenerator
from mrt_distill.distill.subchunks import split_examples
from mrt_distill.style.base import MinimalStyleModel
from mrt_distill.teacher.decode import SamplingParams
from mrt_distill.teacher.load import load_teacher_config
from mrt_distill.teacher.model import init_params
from mrt_distill.teacher.system import TeacherSystem

B = 2


@pytest.fixture(scope="module")
def system():
  cfg = load_teacher_config("tiny")
  g = cfg.geometry
  return TeacherSystem(cfg, init_params(cfg, jax.random.PRNGKey(0)),
                       MinimalCodec(g), MinimalStyleModel(g),
                       SamplingParams(guidance_weight=3.0, temperature=0.8,
                                      top_k=20))


def _prompts():
  return itertools.cycle([PromptRecord(p).to_dict()
                          for p in ("techno", "jazz", "funk")])


def test_rollout_examples_carry_the_noise_their_chunk_is_a_function_of(
    system):
  """Replaying the teacher on an example's context, style and noise gives
  its tokens bit for bit. Mutation caught: the rollout storing a fresh
  draw instead of the noise it decoded with."""
  g = system.geometry
  gen = RolloutGenerator(system, _prompts(), batch=B, session_chunks=3,
                         seed=0, coupled=True)
  gen.next()
  ctx = gen.contexts.copy()  # the context of the next chunk
  ex = gen.next()
  assert ex["noise"].shape == coupling.noise_shape(g, B)
  assert ex["noise"].dtype == np.float32
  again = system.sample_codes(ctx, ex["style_emb"], noise=ex["noise"])
  np.testing.assert_array_equal(again, ex["tokens"])
  # Each chunk has its own noise; uncoupled rollouts carry none.
  assert not np.array_equal(gen.next()["noise"], ex["noise"])
  plain = RolloutGenerator(system, _prompts(), batch=B, session_chunks=3,
                           seed=0)
  assert "noise" not in plain.next()


def test_subchunks_take_the_noise_of_their_own_frames(system):
  g = system.geometry
  gen = RolloutGenerator(system, _prompts(), batch=B, session_chunks=3,
                         seed=1, coupled=True)
  ex = gen.next()
  f = g.crossfade_frames if g.chunk_frames % 2 else g.chunk_frames // 2
  student_g = g.replace(name="short", chunk_frames=f)
  out = split_examples(ex, g, student_g)
  j = g.chunk_frames // f
  assert out["noise"].shape == (B * j, f, g.target_levels,
                                g.codec_latent_dim)
  for s in range(j):  # slice-major: all B examples of slice s together
    np.testing.assert_array_equal(out["noise"][s * B:(s + 1) * B],
                                  ex["noise"][:, s * f:(s + 1) * f])


@pytest.fixture(scope="module")
def coupled_model():
  cfg = S.StudentConfig(teacher=load_teacher_config("tiny"), lora_rank=2,
                        head_init_scale=0.05, coupled=True)
  model = S.StudentModel(cfg)
  return model, S.init_student_params(cfg, jax.random.PRNGKey(0))


def _inputs(cfg, key):
  g = cfg.geometry
  ctx = jnp.full((B, cfg.context_chunks, cfg.chunk_tokens), 1, jnp.int32)
  style = jnp.full((B, g.style_levels), 1, jnp.int32)
  emb = jnp.zeros((B, g.style_embed_dim), jnp.float32)
  z = coupling.draw_noise(key, g, B)
  return ctx, style, emb, z


def test_the_coupled_student_reads_every_level_of_its_noise(coupled_model):
  """Changing only level 1's noise (which x never sees) moves the output:
  it reaches the network through noise_in. Mutation caught: noise_in
  skipped in denoise."""
  model, params = coupled_model
  cfg = model.cfg
  ctx, style, emb, z = _inputs(cfg, jax.random.PRNGKey(0))
  cross = model.apply({"params": params}, ctx, style, emb,
                      method=S.StudentModel.context_kv)
  a = S.sample(model, params, cross, jax.random.PRNGKey(1), B, 1,
               z_BxCxKxD=z)
  b = S.sample(model, params, cross, jax.random.PRNGKey(2), B, 1,
               z_BxCxKxD=z)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # z decides
  z1 = z.at[:, :, 1].set(-z[:, :, 1])
  c = S.sample(model, params, cross, jax.random.PRNGKey(1), B, 1,
               z_BxCxKxD=z1)
  assert float(jnp.abs(a - c).max()) > 1e-4
  # Without z the student draws its own from the key (the serving path).
  d = S.sample(model, params, cross, jax.random.PRNGKey(1), B, 1)
  assert d.shape == a.shape and np.isfinite(np.asarray(d)).all()


def test_noise_given_to_the_wrong_kind_of_student_is_refused(coupled_model):
  model, params = coupled_model
  cfg = model.cfg
  ctx, style, emb, z = _inputs(cfg, jax.random.PRNGKey(0))
  x = jnp.zeros(z.shape[:2] + z.shape[3:])
  with pytest.raises(ValueError, match="needs its coupling noise"):
    model.apply({"params": params}, ctx, style, emb, x, jnp.ones((B,)))
  plain_cfg = S.StudentConfig(teacher=cfg.teacher, lora_rank=2)
  plain = S.StudentModel(plain_cfg)
  pp = S.init_student_params(plain_cfg, jax.random.PRNGKey(0))
  assert "noise_in" not in pp
  with pytest.raises(ValueError, match="uncoupled student"):
    plain.apply({"params": pp}, ctx, style, emb, x, jnp.ones((B,)), z)


def test_coupled_train_step_takes_one_draw_and_its_noise(coupled_model):
  model, _ = coupled_model
  with pytest.raises(ValueError, match=r"student.coupled=True takes the "
                     r"teacher's own noise .*imle_samples is 4: set "
                     r"--config.student.imle_samples=1"):
    T.make_train_step(model, T.make_optimizer(_optim()), codec=None,
                      scaler=None, weights=None, imle_samples=4)
  assert T.batch_keys(True) == T.BATCH_KEYS + ("noise", "tokens")


def _optim():
  return ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, warmup_steps=1, decay_steps=2,
      final_lr_fraction=0.1, b1=0.9, b2=0.99, weight_decay=0.0,
      grad_clip=1.0))


def test_a_run_trained_uncoupled_is_not_resumed_coupled(tmp_path):
  """The fingerprint refuses it by name; a checkpoint written before the
  switch existed reads as uncoupled."""
  cfg = config_io.load_config("reference_cpu:tiny")
  assert cfg.student.coupled
  old = config_io.shape_fingerprint(cfg)
  del old["student.coupled"]  # a checkpoint from before the switch
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"student.coupled': \(False, True\)"):
    checkpoints.check_fingerprint({"fingerprint": old}, cfg, 3, tmp_path)
  cfg.student.coupled = False
  checkpoints.check_fingerprint({"fingerprint": old}, cfg, 3, tmp_path)


def test_a_run_trained_without_token_feedback_is_not_resumed_with_it(
    tmp_path):
  """student.token_feedback adds parameters: the fingerprint names it, and
  a checkpoint from before the switch existed reads as without (so resuming
  one with today's default, True, is refused)."""
  cfg = config_io.load_config("reference_cpu:tiny")
  assert cfg.student.token_feedback  # the default since 2026-12-07
  cfg.student.token_feedback = False
  old = config_io.shape_fingerprint(cfg)
  del old["student.token_feedback"]
  checkpoints.check_fingerprint({"fingerprint": old}, cfg, 3, tmp_path)
  cfg.student.token_feedback = True
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"student.token_feedback': \(False, True\)"):
    checkpoints.check_fingerprint({"fingerprint": old}, cfg, 3, tmp_path)


def test_a_student_file_with_another_noise_layout_is_refused(tmp_path):
  from mrt_distill.serve import student_files
  cfg = config_io.load_config("reference_cpu:tiny")
  with pytest.raises(student_files.StudentLoadError,
                     match=r"noise layout 'dd0/old'.*distil a new student"):
    student_files.check_noise_layout({"noise_layout": "dd0/old"}, cfg,
                                     tmp_path / "s.npz")
  student_files.check_noise_layout({"noise_layout": coupling.NOISE_LAYOUT},
                                   cfg, tmp_path / "s.npz")
  cfg.student.coupled = False  # uncoupled files carry no layout
  student_files.check_noise_layout({}, cfg, tmp_path / "s.npz")


def test_token_head_picks_with_the_flow_map_and_sums_codewords():
  """A token head sure of a code picks it for every z; an unsure one
  follows z; codes -> latents equals the codec's own dequantize in the
  student's scale. Mutations caught: TokenBooks.codes ignoring the logits
  (argmax of z . c), latents summing only level 0."""
  cfg = load_teacher_config("tiny")
  g = cfg.geometry
  codec = MinimalCodec(g)
  scaler = S.LatentScaler.for_codec(codec, 0.5)
  books = S.TokenBooks.for_codec(codec, g, scaler)
  codes = jax.jit(books.codes)
  rng = np.random.default_rng(0)
  want = rng.integers(0, g.codebook_size, (B, g.chunk_frames,
                                           g.target_levels))
  sure = 1e4 * jax.nn.one_hot(want, g.codebook_size)
  for seed in range(3):
    z = coupling.draw_noise(jax.random.PRNGKey(seed), g, B)
    np.testing.assert_array_equal(np.asarray(codes(sure, z)), want)
  flat = jnp.zeros_like(sure)
  a = np.asarray(codes(flat, coupling.draw_noise(jax.random.PRNGKey(0), g,
                                                  B)))
  b = np.asarray(codes(flat, coupling.draw_noise(jax.random.PRNGKey(1), g,
                                                  B)))
  assert (a != b).mean() > 0.5
  np.testing.assert_allclose(
      np.asarray(books.latents(jnp.asarray(want))),
      np.asarray(scaler.to_student(codec.dequantize(want))), atol=1e-5)


def test_token_head_needs_coupling():
  with pytest.raises(ValueError, match="token_head=True needs "
                     "student.coupled=True"):
    S.StudentConfig(teacher=load_teacher_config("tiny"), token_head=True)


def _token_head_run(weights, **student):
  """A tiny token-head student (`student`: more StudentConfig fields), one
  coupled batch of 4 with random teacher codes, and a jitted train step
  with `weights` -> (step, state, batch, trainable params, geometry)."""
  from mrt_distill.distill.losses import NoiseSchedule
  from mrt_distill.distill.tiny import tiny_setup
  base = tiny_setup()
  g = base.geometry
  scfg = S.StudentConfig(base.model.cfg.teacher, lora_rank=2,
                         noise=NoiseSchedule(), coupled=True,
                         token_head=True, **student)
  full = S.from_teacher(scfg, base.teacher_params, jax.random.PRNGKey(1))
  trainable, frozen = S.split_params(full)
  model = S.StudentModel(scfg, books=S.TokenBooks.for_codec(
      base.codec, g, base.scaler))
  _token_head_run.model = model
  batch = base.batch(4)
  rng = np.random.default_rng(3)
  batch["tokens"] = rng.integers(0, g.codebook_size, (4, g.chunk_frames,
                                                      g.target_levels))
  batch["noise"] = np.asarray(coupling.draw_noise(jax.random.PRNGKey(0), g,
                                                  4))
  opt = T.make_optimizer(ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=3e-2, warmup_steps=1, decay_steps=100,
      final_lr_fraction=1.0, b1=0.9, b2=0.99, weight_decay=0.0,
      grad_clip=10.0)))
  step = jax.jit(T.make_train_step(model, opt, codec=base.codec,
                                   scaler=base.scaler, weights=weights))
  return step, T.init_state(trainable, frozen, opt), batch, trainable, g


def test_token_head_train_step_learns_the_teachers_codes():
  """15 steps on one batch: the cross-entropy to its codes falls well
  below the uniform ln V, whatever the latent terms' weights. Mutations
  caught: token_cross_entropy with its sign flipped, the step returning the latent
  terms' loss for a token head (no 'loss/tokens')."""
  from mrt_distill.distill.losses import LossWeights
  step, state, batch, trainable, g = _token_head_run(LossWeights(latent=5.0))
  assert "token_out" in trainable and "latent_out" not in trainable
  first = None
  for i in range(15):
    state, m = step(state, batch, jax.random.PRNGKey(i))
    first = float(m["loss/tokens"]) if first is None else first
  assert abs(first - np.log(g.codebook_size)) < 0.05  # zero head: uniform
  assert float(m["loss/tokens"]) < 0.7 * first
  assert float(m["loss/total"]) == float(m["loss/tokens"])


def _feedback_state(**more):
  """A token_feedback train step with random heads -> (step, state, batch,
  model, geometry, merged params)."""
  from flax import traverse_util
  from mrt_distill.distill.losses import LossWeights
  step, state, batch, trainable, g = _token_head_run(
      LossWeights(), token_feedback=True, **more)
  assert {"prev_in", "level_in", "prev_hidden", "prev_out",
          "repeat_logit"} <= set(trainable)
  assert ({"state_decay", "state_out"} <= set(trainable)) == bool(
      more.get("frame_state"))
  rng = np.random.default_rng(5)
  flat = traverse_util.flatten_dict(state.params)
  flat = {k: jnp.asarray(rng.normal(size=v.shape).astype(np.float32) * 0.3)
          for k, v in flat.items()}
  state = state.replace(params=traverse_util.unflatten_dict(flat))
  model = _token_head_run.model
  return step, state, batch, model, g, S.merge_params(state.params,
                                                      state.frozen)


def _feedback_step(model, **options):
  """A jitted train step of `model` on the tiny world with compute_losses
  `options` (feedback_noise, own_picks), the optimizer of _token_head_run."""
  from mrt_distill.distill.losses import LossWeights
  from mrt_distill.distill.tiny import tiny_setup
  base = tiny_setup()
  return jax.jit(T.make_train_step(
      model, T.make_optimizer(ml_collections.ConfigDict(dict(
          name="adamw", learning_rate=3e-2, warmup_steps=1, decay_steps=100,
          final_lr_fraction=1.0, b1=0.9, b2=0.99, weight_decay=0.0,
          grad_clip=10.0))), codec=base.codec, scaler=base.scaler,
      weights=LossWeights(), **options))


def _feedback_logits(model, params, batch, codes):
  b = batch["tokens"].shape[0]
  z = jnp.asarray(batch["noise"])
  x, _ = S.first_step_input(model.cfg, jax.random.PRNGKey(0), b, z)
  sig = jnp.full((b,), model.cfg.noise.sigma_max, jnp.float32)
  return model.apply({"params": params}, jnp.asarray(batch["ctx_ids"]),
                     jnp.asarray(batch["style_ids"]),
                     jnp.asarray(batch["style_emb"]), x, sig, z,
                     jnp.asarray(codes, jnp.int32))


def test_token_feedback_trains_teacher_forced_on_the_teachers_codes():
  """A token_feedback student's training loss is the cross-entropy of its
  logits when every token reads the teacher's codes before it; other codes
  give another loss. Mutation caught: the train step leaving the codes
  out."""
  from mrt_distill.distill import losses as L
  step, state, batch, model, g, params = _feedback_state()
  _, m = step(state, batch, jax.random.PRNGKey(0))
  tokens = jnp.asarray(batch["tokens"], jnp.int32)
  ce = lambda codes: float(L.token_cross_entropy(
      _feedback_logits(model, params, batch, codes), tokens))
  want = ce(tokens)
  assert float(m["loss/tokens"]) == pytest.approx(want, rel=1e-4)
  assert abs(ce((tokens + 1) % g.codebook_size) - want) > 1e-2


def test_seam_codes_are_the_last_context_frames_coarse_codes():
  """seam_codes: the last context frame's codes on the context's levels,
  "none" (V) on the finer levels and for an empty (cold-start) context,
  read back from the encoder ids. Mutations caught: the first context
  frame instead of the last; the level offsets left in."""
  from mrt_distill.geometry import TINY as g
  rng = np.random.default_rng(0)
  ctx = rng.integers(0, g.codebook_size,
                     (3, g.context_frames, g.target_levels))
  ctx[1] = -1  # cold start
  ctx[2, -1, 0] = -1  # a frame with no audio yet is MASK on every level
  seam = np.asarray(S.seam_codes(g, jnp.asarray(S.context_ids(g, ctx))))
  cl, v = g.context_levels, g.codebook_size
  assert seam.shape == (3, g.target_levels) and seam.dtype == np.int32
  np.testing.assert_array_equal(seam[0, :cl], ctx[0, -1, :cl])
  assert (seam[0, cl:] == v).all() and (seam[1:] == v).all()
  np.testing.assert_array_equal(np.asarray(S.no_seam(g, 2)),
                                np.full((2, g.target_levels), v))


def test_token_feedback_first_frame_reads_the_seam():
  """Frame 0's logits read the seam (the context's last frame) through
  the previous-frame embedding and the repeat bonus; the trunk's features
  do not see it. So with the trunk's features fixed, changing the seam
  moves frame 0's logits only. Mutation caught: previous_frames ignoring
  the seam (the chunk starting afresh at every seam)."""
  _, _, batch, model, g, params = _feedback_state()
  b = batch["tokens"].shape[0]
  tokens = jnp.asarray(batch["tokens"], jnp.int32)
  h = jnp.asarray(np.random.default_rng(1).normal(
      size=(b, g.chunk_frames, model.cfg.backbone.d_model)), jnp.float32)
  prev = lambda seam: S.previous_frames(tokens, seam)
  logits = lambda seam: np.asarray(model.apply(
      {"params": params}, h, prev(seam), tokens,
      method=S.StudentModel.frame_logits))
  none = S.no_seam(g, b)
  some = none.at[:, 0].set(3)
  moved = np.abs(logits(some) - logits(none)).max(axis=(0, 3))  # (C, K)
  assert moved[0].min() > 1e-4 and moved[1:].max() == 0


def test_token_feedback_logits_read_only_the_codes_before_them():
  """Teacher forcing without a leak: changing the code at (frame f, level
  q) leaves the logits of every token up to and including (f, q) as they
  were (in the teacher's order: frames, then levels) and moves those of
  (f, q + 1) and of frame f + 1; frames after f + 1 do not read it."""
  _, _, batch, model, g, params = _feedback_state()
  tokens = np.asarray(batch["tokens"], np.int32)
  base = np.asarray(_feedback_logits(model, params, batch, tokens))
  f, q = 1, 1
  assert f + 2 < g.chunk_frames and q + 1 < g.target_levels
  other = tokens.copy()
  other[:, f, q] = (other[:, f, q] + 7) % g.codebook_size
  moved = np.abs(np.asarray(_feedback_logits(model, params, batch, other))
                 - base).max(axis=(0, 3))  # (C, K)
  assert moved[:f].max() == 0 and moved[f, :q + 1].max() == 0
  assert moved[f, q + 1:].min() > 1e-4 and moved[f + 1].min() > 1e-4
  assert moved[f + 2:].max() == 0


def test_frame_state_reads_every_frame_before_and_none_after():
  """With student.frame_state a code at (frame f, level q) also reaches
  the logits of every later frame (the decaying sum of the picked frames),
  still never those of the tokens up to and including itself."""
  _, _, batch, model, g, params = _feedback_state(frame_state=True)
  tokens = np.asarray(batch["tokens"], np.int32)
  base = np.asarray(_feedback_logits(model, params, batch, tokens))
  f, q = 1, 1
  other = tokens.copy()
  other[:, f, q] = (other[:, f, q] + 7) % g.codebook_size
  moved = np.abs(np.asarray(_feedback_logits(model, params, batch, other))
                 - base).max(axis=(0, 3))  # (C, K)
  assert moved[:f].max() == 0 and moved[f, :q + 1].max() == 0
  assert moved[f + 1:].min() > 1e-4


def test_extra_pick_blocks_start_as_nothing_then_shape_the_logits():
  """student.head_layers=3 adds two residual blocks to the pick, trained
  with the heads and zero at the start: a fresh student's logits are those
  of head_layers=1 with the same shared parameters; once a block's output
  is not zero, they move. Its parameters are in the fingerprint."""
  from flax import traverse_util
  base = config_io.load_config("reference_cpu:tiny")
  _, _, batch, model3, g, params3 = _feedback_state(head_layers=3)
  flat = traverse_util.flatten_dict(params3)
  assert {k[1] for k in flat if k[0] == "pick_blocks"} == {
      "hidden_0", "out_0", "hidden_1", "out_1"}
  assert all(S.is_trainable(k) for k in flat if k[0] == "pick_blocks")
  model1 = S.StudentModel(dataclasses.replace(model3.cfg, head_layers=1),
                          books=model3.books)
  zeroed = {k: (jnp.zeros_like(v) if k[0] == "pick_blocks"
                and k[1].startswith("out_") else v) for k, v in flat.items()}
  shared = {k: v for k, v in flat.items() if k[0] != "pick_blocks"}
  codes = np.asarray(batch["tokens"], np.int32)
  one = _feedback_logits(model1, traverse_util.unflatten_dict(shared), batch,
                         codes)
  np.testing.assert_array_equal(_feedback_logits(
      model3, traverse_util.unflatten_dict(zeroed), batch, codes), one)
  assert float(jnp.abs(_feedback_logits(model3, params3, batch, codes)
                       - one).max()) > 1e-3
  base.student.head_layers = 3
  assert config_io.shape_fingerprint(base)["student.head_layers"] == 3


@pytest.mark.parametrize("layers,feedback,match", [
    (0, True, r"student.head_layers must be a whole number >= 1, got 0"),
    (2.5, True, r"student.head_layers must be a whole number >= 1, got 2.5"),
    (2, False, r"student.head_layers > 1 needs student.token_feedback=True"),
])
def test_bad_head_layers_are_refused_by_name(layers, feedback, match):
  from mrt_distill.teacher.load import load_teacher_config
  with pytest.raises(ValueError, match=match):
    S.StudentConfig(teacher=load_teacher_config("tiny"), coupled=True,
                    token_head=True, token_feedback=feedback,
                    head_layers=layers)


# ---- losses.token_kl: the teacher's whole distribution per token -----------
def test_token_kl_is_the_kl_to_the_teachers_distribution():
  """Zero at the teacher's own distribution, the KL by hand elsewhere, and
  codes outside the teacher's top-k (log p -30 or -inf) add nothing.
  Mutations caught: KL(student || teacher) instead; dropping the mask on
  zero-mass codes (NaN with -inf)."""
  from mrt_distill.distill import losses as L
  rng = np.random.default_rng(0)
  t = rng.normal(size=(2, 3, 4, 8))
  t[..., 5:] = -np.inf  # top-k 5
  logp = jax.nn.log_softmax(jnp.asarray(t), axis=-1)
  assert float(L.token_kl(logp, logp)) == pytest.approx(0.0, abs=1e-6)
  s = rng.normal(size=t.shape)
  p = np.exp(np.asarray(logp, np.float64))
  logq = np.asarray(jax.nn.log_softmax(jnp.asarray(s), axis=-1), np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    want = np.where(p > 0, p * (np.asarray(logp, np.float64) - logq), 0.0)
  got = float(L.token_kl(jnp.asarray(s), logp))
  assert got == pytest.approx(want.sum(-1).mean(), rel=1e-5)
  clipped = jnp.maximum(logp, -30.0).astype(jnp.float16)  # as stored
  assert float(L.token_kl(jnp.asarray(s), clipped)) == pytest.approx(
      got, rel=2e-3)


def test_rollouts_carry_the_teachers_distributions(system):
  """teacher_log_probs: float16 log p (B, C, K, V) per example, a
  distribution for every token, and the token is the flow map of it and
  the noise; sub-chunks slice it with their frames."""
  g = system.geometry
  gen = RolloutGenerator(system, _prompts(), batch=B, session_chunks=3,
                         seed=0, coupled=True, teacher_log_probs=True)
  ex = gen.next()
  lp = ex["teacher_logp"]
  assert lp.shape == (B, g.chunk_frames, g.target_levels, g.codebook_size)
  assert lp.dtype == np.float16 and lp.min() >= -30
  np.testing.assert_allclose(np.exp(lp.astype(np.float64)).sum(-1), 1.0,
                             atol=2e-2)
  assert ((np.exp(lp.astype(np.float64)) > 1e-4).sum(-1) <= 20).all()
  books = system.flow_books
  for q in range(g.target_levels):
    again = coupling.flow_map(
        jnp.asarray(lp[:, :, q].reshape(-1, g.codebook_size), jnp.float32),
        jnp.asarray(ex["noise"][:, :, q].reshape(-1, g.codec_latent_dim)),
        jnp.asarray(books[q]))
    agree = np.mean(np.asarray(again).reshape(B, -1) == ex["tokens"][..., q])
    assert agree > 0.97  # float16 storage may flip a near tie
  f = g.chunk_frames // 5 if g.chunk_frames % 5 == 0 else g.chunk_frames
  out = split_examples(ex, g, g.replace(name="short", chunk_frames=f))
  np.testing.assert_array_equal(out["teacher_logp"][:B], lp[:, :f])
  assert T.batch_keys(True, True)[-1] == "teacher_logp"
  with pytest.raises(ValueError, match="teacher_log_probs needs coupled"):
    RolloutGenerator(system, _prompts(), batch=B, session_chunks=3, seed=0,
                     teacher_log_probs=True)


def test_token_kl_needs_a_token_head_and_is_in_the_fingerprint():
  from mrt_distill.distill.losses import LossWeights
  with pytest.raises(ValueError, match=r"losses.token_kl=0.5 .* "
                     r"student.token_head is False"):
    T.check_token_kl(LossWeights(token_kl=0.5), token_head=False)
  T.check_token_kl(LossWeights(token_kl=0.5), token_head=True)
  cfg = config_io.load_config("reference_cpu:tiny")
  assert config_io.shape_fingerprint(cfg)["soft_tokens"] is False
  cfg.losses.token_kl = 0.5
  assert config_io.shape_fingerprint(cfg)["soft_tokens"] is True


def test_token_kl_train_step_moves_the_student_to_the_teachers_distribution():
  """With losses.token_kl the step reports the term, adds it to the total,
  and 15 steps bring the student's distributions towards the teacher's
  (the KL falls). Mutation caught: the term computed but left out of the
  total (the total check fails, and the KL no longer falls)."""
  from mrt_distill.distill.losses import LossWeights
  step, state, batch, _, g = _token_head_run(LossWeights(token_kl=2.0))
  rng = np.random.default_rng(4)
  logits = 3.0 * rng.normal(size=batch["tokens"].shape + (g.codebook_size,))
  batch["teacher_logp"] = np.asarray(jax.nn.log_softmax(
      jnp.asarray(logits), axis=-1)).astype(np.float16)
  kl = []
  for i in range(15):
    state, m = step(state, batch, jax.random.PRNGKey(i))
    kl.append(float(m["loss/token_kl"]))
    assert float(m["loss/total"]) == pytest.approx(
        float(m["loss/tokens"]) + 2.0 * kl[-1], rel=1e-5)
  assert kl[-1] < 0.7 * kl[0]


# ---- feedback noise: teacher forcing that does not trust its inputs ---------
def test_corrupt_feedback_replaces_codes_at_the_given_rate():
  """Each fed-back code is replaced by a random code with the given
  probability; a seam's "none" entries stay "none"; 0 changes nothing.
  Mutations caught: the rate inverted; "none" replaced."""
  v = 16
  rng = np.random.default_rng(0)
  codes = jnp.asarray(rng.integers(0, v, (64, 8, 4)), jnp.int32)
  seam = jnp.asarray(np.r_[rng.integers(0, v, (64, 2)).T,
                           np.full((2, 64), v)].T, jnp.int32)  # (64, 4)
  key = jax.random.PRNGKey(0)
  same_c, same_s = T.corrupt_feedback(key, codes, seam, 0.0, v)
  np.testing.assert_array_equal(same_c, codes)
  np.testing.assert_array_equal(same_s, seam)
  c, s = map(np.asarray, T.corrupt_feedback(key, codes, seam, 0.3, v))
  # A replaced code differs from the original with probability 15/16.
  changed = (c != np.asarray(codes)).mean()
  assert 0.3 * 15 / 16 - 0.03 < changed < 0.3 * 15 / 16 + 0.03
  assert c.min() >= 0 and c.max() < v
  assert (s[:, 2:] == v).all()
  assert 0.15 < (s[:, :2] != np.asarray(seam)[:, :2]).mean() < 0.42


def test_feedback_noise_reaches_the_token_feedback_train_step():
  """With feedback_noise the loss reads corrupted codes (another loss at
  the same rng), without it the clean teacher-forced loss; a student
  without feedback ignores it. Mutation caught: the step never passing it
  on."""
  step, state, batch, model, g, params = _feedback_state()
  _, clean = step(state, batch, jax.random.PRNGKey(0))
  noisy_step = _feedback_step(model, feedback_noise=0.5)
  _, noisy = noisy_step(state, batch, jax.random.PRNGKey(0))
  assert abs(float(noisy["loss/tokens"]) - float(clean["loss/tokens"])) > 1e-3


# ---- own picks: teacher forcing on the student's own slips ------------------
def _own_pick_inputs(**more):
  # A pick temperature other than 1, so that leaving it out shows.
  step, state, batch, model, g, params = _feedback_state(pick_temperature=3.0,
                                                         **more)
  apply = lambda *a, **kw: model.apply({"params": params}, *a, **kw)
  b = batch["tokens"].shape[0]
  z = jnp.asarray(batch["noise"])
  x, _ = S.first_step_input(model.cfg, jax.random.PRNGKey(0), b, z)
  sig = jnp.full((b,), model.cfg.noise.sigma_max, jnp.float32)
  cross = apply(jnp.asarray(batch["ctx_ids"]), jnp.asarray(batch["style_ids"]),
                jnp.asarray(batch["style_emb"]), method=S.StudentModel.context_kv)
  h = apply(x, sig, cross, z, method=S.StudentModel.token_features)
  tokens = jnp.asarray(batch["tokens"], jnp.int32)
  seam = S.seam_codes(g, jnp.asarray(batch["ctx_ids"]))
  return step, state, batch, model, params, apply, h, z, tokens, seam


def test_own_pick_feedback_is_the_students_teacher_forced_coupled_pick():
  """At rate 1 every fed-back code is the student's own pick for that token
  (its teacher-forced logits over its pick temperature, the flow map with
  the teacher's z), at 0 the teacher's, in between a per-token mix. Values
  checked against the model's own logits. Mutations caught: picking with
  fresh noise, without the pick temperature, or from the unshifted codes;
  the rate inverted."""
  _, _, batch, model, params, apply, h, z, tokens, seam = _own_pick_inputs()
  key = jax.random.PRNGKey(3)
  logits = _feedback_logits(model, params, batch, tokens)
  want = np.asarray(model.books.codes(logits / model.cfg.pick_temperature, z))
  own = np.asarray(T.own_pick_feedback(model, apply, h, z, tokens, seam, key,
                                       1.0))
  np.testing.assert_array_equal(own, want)
  # Random heads: the student's picks are not the teacher's codes.
  assert 0.5 < (own != np.asarray(tokens)).mean()
  assert not (np.asarray(model.books.codes(logits, z)) == own).all()
  np.testing.assert_array_equal(
      T.own_pick_feedback(model, apply, h, z, tokens, seam, key, 0.0), tokens)
  mix = np.asarray(T.own_pick_feedback(model, apply, h, z, tokens, seam, key,
                                       0.3))
  assert ((mix == own) | (mix == np.asarray(tokens))).all()
  differ = own != np.asarray(tokens)
  assert 0.15 < (mix[differ] == own[differ]).mean() < 0.45


def test_own_picks_train_on_the_mixed_feedback_toward_the_teachers_tokens():
  """With own_picks=1 the step's token loss is the cross-entropy of the
  logits read from the student's own picks to the teacher's tokens (not to
  its picks), and differs from the teacher-forced loss. Mutation caught:
  the step never passing own_picks on; the targets replaced by the picks."""
  from mrt_distill.distill import losses as L
  step, state, batch, model, params, apply, h, z, tokens, seam = (
      _own_pick_inputs())
  _, clean = step(state, batch, jax.random.PRNGKey(0))
  own_step = _feedback_step(model, own_picks=1.0)
  _, m = own_step(state, batch, jax.random.PRNGKey(0))
  own = T.own_pick_feedback(model, apply, h, z, tokens, seam,
                            jax.random.PRNGKey(0), 1.0)
  want = L.token_cross_entropy(_feedback_logits(model, params, batch, own),
                               tokens)
  assert float(m["loss/tokens"]) == pytest.approx(float(want), rel=1e-4)
  assert abs(float(m["loss/tokens"]) - float(clean["loss/tokens"])) > 1e-3


@pytest.mark.parametrize("frame_state,head_layers", [(False, 1), (True, 3)])
def test_played_own_picks_are_the_chunk_the_student_plays(frame_state,
                                                          head_layers):
  """own_picks_from="played": the fed-back codes are the chunk the student
  plays from the seam (unguided, at its pick temperature, the teacher's z):
  read back teacher-forced, every pick is its own coupled pick -- the fixed
  point a free-running chunk is and a teacher-forced one is not. Mutations
  caught: the forced picks returned, no pick temperature, a zero seam."""
  _, _, batch, model, params, apply, h, z, tokens, seam = _own_pick_inputs(
      frame_state=frame_state, head_layers=head_layers)
  key = jax.random.PRNGKey(3)
  played = T.own_pick_feedback(model, apply, h, z, tokens, seam, key, 1.0,
                               "played")
  reread = _feedback_logits(model, params, batch, played)
  np.testing.assert_array_equal(
      played, model.books.codes(reread / model.cfg.pick_temperature, z))
  forced = T.own_pick_feedback(model, apply, h, z, tokens, seam, key, 1.0)
  reread = _feedback_logits(model, params, batch, forced)
  assert (np.asarray(forced) != np.asarray(model.books.codes(
      reread / model.cfg.pick_temperature, z))).mean() > 0.2
  assert (np.asarray(played) != np.asarray(forced)).mean() > 0.2
  # At rate 0 the teacher's codes, as for forced picks.
  np.testing.assert_array_equal(T.own_pick_feedback(
      model, apply, h, z, tokens, seam, key, 0.0, "played"), tokens)


def test_played_own_picks_train_toward_the_teachers_tokens():
  """The step's token loss with own_picks=1 from played picks is the
  cross-entropy of the logits read from the played chunk to the teacher's
  tokens, not the forced picks' loss. Mutation caught: the step not passing
  own_picks_from on."""
  from mrt_distill.distill import losses as L
  _, state, batch, model, params, apply, h, z, tokens, seam = (
      _own_pick_inputs())
  _, m = _feedback_step(model, own_picks=1.0, own_picks_from="played")(
      state, batch, jax.random.PRNGKey(0))
  ce = lambda source: float(L.token_cross_entropy(_feedback_logits(
      model, params, batch, T.own_pick_feedback(
          model, apply, h, z, tokens, seam, jax.random.PRNGKey(0), 1.0,
          source)), tokens))
  assert float(m["loss/tokens"]) == pytest.approx(ce("played"), rel=1e-4)
  assert abs(float(m["loss/tokens"]) - ce("forced")) > 1e-3


def test_unknown_own_picks_source_is_refused_by_name():
  from mrt_distill.distill.losses import LossWeights
  with pytest.raises(ValueError, match=r"student.own_picks_from 'free' is not "
                     r"one of \('forced', 'played'\): set e.g. "
                     r"--config.student.own_picks_from=played"):
    T.make_train_step(None, None, codec=None, scaler=None,
                      weights=LossWeights(), own_picks_from="free")


def test_own_picks_out_of_range_is_refused():
  from mrt_distill.distill import config_io, limits
  cfg = config_io.load_config("reference_cpu:tiny")
  cfg.student.own_picks = -0.1
  with pytest.raises(ValueError, match=r"student.own_picks=-0.1: must be "
                     r"a number in 0..1"):
    limits.check(cfg)


def test_feedback_noise_out_of_range_is_refused():
  from mrt_distill.distill import config_io, limits
  cfg = config_io.load_config("reference_cpu:tiny")
  cfg.student.feedback_noise = 1.5
  with pytest.raises(ValueError, match=r"student.feedback_noise=1.5: must be "
                     r"a number in 0..1"):
    limits.check(cfg)


@pytest.mark.parametrize("value,match", [
    (0.0, r"student.pick_temperature=0.0: must be a number in 0.001..100"),
    (-1.25, r"student.pick_temperature=-1.25: must be a number in"),
    (float("nan"), r"student.pick_temperature=nan: must be a number in"),
])
def test_pick_temperature_out_of_range_is_refused_before_loading(value,
                                                                 match):
  """limits.check runs before the world loads: a temperature of 0 (a
  division by zero in every pick), negative or NaN is named with its
  range."""
  from mrt_distill.distill import config_io, limits
  cfg = config_io.load_config("reference_cpu:tiny")
  cfg.student.pick_temperature = value
  with pytest.raises(ValueError, match=match):
    limits.check(cfg)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf"), True, "warm"])
def test_student_config_refuses_a_pick_temperature_that_is_not_one(value):
  """The StudentConfig itself (a student .npz's config is rebuilt through
  it) refuses what is not a finite number > 0."""
  from mrt_distill.distill.tiny import tiny_setup
  base = tiny_setup().model.cfg
  import dataclasses
  with pytest.raises(ValueError, match=r"student.pick_temperature must be a "
                     r"number > 0"):
    dataclasses.replace(base, pick_temperature=value)
