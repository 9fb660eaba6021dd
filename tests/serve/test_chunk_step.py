"""The serving chunk step: cached context == recomputed, k=1 == training
forward, controls never recompile, state is donated."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mrt_distill.codec.neural import rvq_encode_jnp
from mrt_distill.distill import student as S
from mrt_distill.distill.tiny import tiny_setup
from mrt_distill.geometry import MASK_ID
from mrt_distill.serve.chunk_step import ChunkStepper, controls


def _randomised(trainable, frozen, seed: int):
  """A trained-looking student: random heads and LoRA B, so the output really
  depends on context, style and noise (a fresh one is c_skip * x)."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(trainable)
  for k, v in flat.items():
    flat[k] = jnp.asarray(rng.standard_normal(v.shape).astype(np.float32)
                          * (0.3 if k[-1] == "lora_b" else 0.5))
  return S.merge_params(traverse_util.unflatten_dict(flat), frozen)


def _variant(world, seed: int, books: bool, **changes):
  """The world's student with config `changes`, its heads random too
  (`books`: a token head's TokenBooks) -> (setup, params, stepper)."""
  import dataclasses
  su, _, _ = world
  scfg = dataclasses.replace(su.model.cfg, **changes)
  full = S.from_teacher(scfg, su.teacher_params, jax.random.PRNGKey(seed))
  params = _randomised(*S.split_params(full), seed)
  model = S.StudentModel(scfg, books=S.TokenBooks.for_codec(
      su.codec, su.geometry, su.scaler) if books else None)
  su = dataclasses.replace(su, model=model)
  return su, params, ChunkStepper(model, su.codec, su.style_model, su.scaler,
                                  max_steps=3)


@pytest.fixture(scope="module")
def world():
  su = tiny_setup(lora_rank=2)
  params = _randomised(su.trainable, su.frozen, 0)
  stepper = ChunkStepper(su.model, su.codec, su.style_model, su.scaler,
                         max_steps=3)
  return su, params, stepper


@pytest.fixture(scope="module")
def coupled_world(world):
  """The same world with a coupled student (it reads coupling noise z
  through noise_in; serving draws z itself), its heads random too."""
  return _variant(world, 1, books=False, coupled=True)


def _styles(su, b, seed):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((b, su.geometry.style_embed_dim)).astype(
      np.float32)


def _recomputed_session(su, params, stepper, styles, chunks, w, k):
  """Reference: re-encode the whole window every chunk (no cache)."""
  g = su.geometry
  b = styles.shape[0]
  context = np.full((b, g.context_frames, g.target_levels), -1, np.int32)
  latents = []
  for i in range(chunks):
    ctl = controls(styles, w, k)
    ids = stepper.style_ids(ctl.style_emb)
    ctx_ids = jnp.asarray(S.context_ids(g, context))
    full = lambda sid, emb: su.model.apply(
        {"params": params}, ctx_ids, sid, emb,
        method=S.StudentModel.context_kv)
    cross_c = full(ids, ctl.style_emb)
    cross_u = full(jnp.full_like(ids, MASK_ID), jnp.zeros_like(ctl.style_emb))
    x0 = stepper.sample(params, cross_c, cross_u, ctl,
                        jax.random.PRNGKey(100 + i))
    lat = np.asarray(su.scaler.to_codec(x0))
    latents.append(lat)
    codes = su.codec.quantize(lat, g.target_levels)
    context = np.concatenate([context, codes], axis=1)[:, -g.context_frames:]
  return np.stack(latents)


@pytest.mark.parametrize("w,k", [(0.0, 1), (2.0, 2)])
def test_cached_session_equals_recomputing_every_chunk(world, w, k):
  su, params, stepper = world
  styles = _styles(su, 2, 1)
  chunks = 4  # the window (2 chunks) fills and slides
  ref = _recomputed_session(su, params, stepper, styles, chunks, w, k)
  state = stepper.init_state(params, 2)
  got, audio = [], []
  for i in range(chunks):
    a, state = stepper.chunk_step(params, state, controls(styles, w, k),
                                  jax.random.PRNGKey(100 + i))
    got.append(np.asarray(state.lead))
    audio.append(np.asarray(a))
  g = su.geometry
  np.testing.assert_allclose(np.stack(got), ref[:, :, -g.crossfade_frames:],
                             rtol=1e-4, atol=1e-4)
  # Audio: the codec decode of [lead, chunk], crossfaded.
  assert np.asarray(audio).shape == (chunks, 2, g.chunk_samples, g.channels)
  assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0
  assert int(state.index) == chunks


def test_k1_step_equals_the_training_forward(world):
  su, params, stepper = world
  g, noise = su.geometry, su.model.cfg.noise
  styles = _styles(su, 3, 2)
  state = stepper.init_state(params, 3)
  key = jax.random.PRNGKey(7)
  _, after = stepper.chunk_step(params, state, controls(styles, 0.0, 1), key)
  # Training-time forward on the same inputs: a cold context, the style
  # tokens of the embedding, sigma_max times the step's first noise draw.
  ctl = controls(styles, 0.0, 1)
  ctx = jnp.full((3, su.model.cfg.context_chunks, su.model.cfg.chunk_tokens),
                 MASK_ID, jnp.int32)
  z = jax.random.normal(jax.random.fold_in(key, 0),
                        (3, g.chunk_frames, g.codec_latent_dim))
  x0 = su.model.apply({"params": params}, ctx, stepper.style_ids(ctl.style_emb),
                      ctl.style_emb, z * noise.sigma_max,
                      jnp.full((3,), noise.sigma_max))
  lat = su.scaler.to_codec(x0)
  np.testing.assert_allclose(np.asarray(after.lead),
                             np.asarray(lat[:, -g.crossfade_frames:]),
                             rtol=1e-5, atol=1e-5)
  # The style tokens equal the host-side tokenizer's.
  from mrt_distill.style import mixing
  np.testing.assert_array_equal(
      np.asarray(stepper.style_ids(ctl.style_emb)),
      mixing.style_tokens(su.style_model, g, styles))


def test_controls_never_recompile_and_state_is_donated(world):
  su, params, stepper = world
  state = stepper.init_state(params, 2)
  before = stepper.compiles
  outs = []
  for i, (w, k) in enumerate([(0.0, 1), (3.0, 1), (0.0, 3), (1.5, 2)]):
    old = state
    a, state = stepper.chunk_step(params, state,
                                  controls(_styles(su, 2, i), w, k),
                                  jax.random.PRNGKey(i))
    outs.append(np.asarray(a))
    assert old.cross_k.is_deleted()  # donated
  assert stepper.compiles - before <= 1
  # The controls really act: different settings give different audio.
  assert not np.allclose(outs[0], outs[1])


# ---- audio injection ---------------------------------------------------------
def _fork(state):
  """An independent copy of a state (the step donates its input)."""
  return jax.tree.map(jnp.copy, state)


def _noise(shape, seed, scale=0.3):
  rng = np.random.default_rng(seed)
  return (scale * rng.standard_normal(shape)).astype(np.float32)


def test_codec_jnp_encode_matches_the_numpy_encoder():
  from mrt_distill.codec.base import MinimalCodec
  from mrt_distill.codec.neural import TEST_CONFIG, NeuralCodec
  from mrt_distill.geometry import TINY
  audio = _noise((2, 3 * TINY.samples_per_frame, TINY.channels), 0)
  for codec in (MinimalCodec(TINY), NeuralCodec.init_random(TINY, TEST_CONFIG)):
    got = np.asarray(jax.jit(codec.encode_latents_jnp)(audio))
    want = codec.encode_latents(audio, TINY.sample_rate)
    assert got.shape == want.shape == (2, 3, TINY.codec_latent_dim)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="whole frames"):
      codec.encode_latents_jnp(audio[:, 1:])


def test_injection_changes_only_the_context_never_the_played_chunk(world):
  su, params, stepper = world
  g = su.geometry
  styles = _styles(su, 2, 3)
  inj = _noise((2, g.chunk_samples, g.channels), 1)
  state = stepper.init_state(params, 2)
  _, state = stepper.chunk_step(params, state, controls(styles),
                                jax.random.PRNGKey(0))
  before = stepper.compiles
  key = jax.random.PRNGKey(1)
  runs = {}
  for name, ctl in [("none", controls(styles)),
                    ("gain0", controls(styles, 0.0, 1, inj, 0.0)),
                    ("loud", controls(styles, 0.0, 1, inj, 1.0)),
                    ("silence", controls(styles, 0.0, 1, 0 * inj, 1.0))]:
    a, s = stepper.chunk_step(params, _fork(state), ctl, key)
    runs[name] = (np.asarray(a), jax.tree.map(np.asarray, s))
  none_a, none_s = runs["none"]
  # Gain 0 is bitwise no injection, audio and every state leaf.
  np.testing.assert_array_equal(runs["gain0"][0], none_a)
  for x, y in zip(runs["gain0"][1], none_s):
    np.testing.assert_array_equal(x, y)
  # Injecting never changes the played chunk or the student's own audio.
  loud_a, loud_s = runs["loud"]
  np.testing.assert_array_equal(loud_a, none_a)
  np.testing.assert_array_equal(loud_s.lead, none_s.lead)
  np.testing.assert_array_equal(loud_s.ctx_audio, none_s.ctx_audio)
  # It changes the newest context chunk's keys, and only that chunk's.
  l_tok = su.model.cfg.chunk_tokens
  np.testing.assert_array_equal(loud_s.cross_k[:, :, :-l_tok],
                                none_s.cross_k[:, :, :-l_tok])
  assert np.abs(loud_s.cross_k[:, :, -l_tok:]
                - none_s.cross_k[:, :, -l_tok:]).max() > 1e-2
  # The minimal codec inverts its decoder exactly, so encoding the chunk's
  # own audio (silence injected) gives back the student's own tokens.
  np.testing.assert_allclose(runs["silence"][1].cross_k, none_s.cross_k,
                             rtol=1e-5, atol=1e-5)
  # ... and the changed context changes the following chunk.
  nxt = [np.asarray(stepper.chunk_step(params, jax.tree.map(jnp.asarray, s),
                                       controls(styles), key)[0])
         for s in (none_s, loud_s)]
  assert np.abs(nxt[0] - nxt[1]).max() > 1e-3
  # Gains, audio and the other controls are values: one compile at most.
  for w, k, gain in [(2.0, 2, 0.5), (0.0, 3, 2.0), (1.0, 1, 0.0)]:
    _, state = stepper.chunk_step(params, state,
                                  controls(styles, w, k, inj * gain, gain),
                                  key)
  assert stepper.compiles - before <= 1
  with pytest.raises(ValueError, match="inject_audio of shape"):
    stepper.chunk_step(params, state, controls(styles, 0.0, 1, inj[:, :5]),
                       key)


def test_inject_context_reencodes_only_the_chosen_window_chunks(world):
  su, params, stepper = world
  g = su.geometry
  n, l_tok = su.model.cfg.context_chunks, su.model.cfg.chunk_tokens
  styles = _styles(su, 2, 4)
  state = stepper.init_state(params, 2)
  for i in range(n + 1):  # a full window of generated chunks
    _, state = stepper.chunk_step(params, state, controls(styles),
                                  jax.random.PRNGKey(i))
  ref = jax.tree.map(np.asarray, state)
  loud = _noise((2, g.context_samples, g.channels), 5)
  before = stepper.context_compiles
  none = stepper.inject_context(params, _fork(state), loud, 1.0,
                                np.zeros(n, bool))
  np.testing.assert_array_equal(np.asarray(none.cross_k), ref.cross_k)
  # Own audio re-encoded (silence injected) == the student's own tokens.
  quiet = stepper.inject_context(params, _fork(state), loud, 0.0,
                                 np.ones(n, bool))
  np.testing.assert_allclose(np.asarray(quiet.cross_k), ref.cross_k,
                             rtol=1e-5, atol=1e-5)
  first = stepper.inject_context(params, _fork(state), loud, 1.0,
                                 np.arange(n) == 0)
  k = np.asarray(first.cross_k)
  assert np.abs(k[:, :, :l_tok] - ref.cross_k[:, :, :l_tok]).max() > 1e-2
  np.testing.assert_array_equal(k[:, :, l_tok:], ref.cross_k[:, :, l_tok:])
  np.testing.assert_array_equal(np.asarray(first.ctx_audio), ref.ctx_audio)
  # The seam (the window's last frame, what a token_feedback student's
  # first frame reads) follows the window's last chunk only.
  for kept in (none, quiet, first):
    np.testing.assert_array_equal(np.asarray(kept.seam), ref.seam)
  last = stepper.inject_context(params, _fork(state), loud, 1.0,
                                np.arange(n) == n - 1)
  want = S.seam_codes(g, stepper.audio_context_ids(
      jnp.asarray(ref.ctx_audio + loud)).reshape(2, n, l_tok))
  np.testing.assert_array_equal(np.asarray(last.seam), np.asarray(want))
  assert (np.asarray(want) != ref.seam).any()
  assert stepper.context_compiles - before <= 1
  key = jax.random.PRNGKey(99)
  a_ref, _ = stepper.chunk_step(params, _fork(state), controls(styles), key)
  a_inj, _ = stepper.chunk_step(params, first, controls(styles), key)
  assert np.abs(np.asarray(a_ref) - np.asarray(a_inj)).max() > 1e-3
  with pytest.raises(ValueError, match="window audio of shape"):
    stepper.inject_context(params, state, loud[:, 1:], 1.0, np.ones(n, bool))


def test_a_codec_without_a_traceable_encoder_serves_but_refuses_injection(
    world):
  from mrt_distill.codec.base import Codec, MinimalCodec

  class NumpyOnlyCodec(MinimalCodec):
    _analyse_jnp = Codec._analyse_jnp

  su, params, stepper = world
  assert stepper.can_inject
  plain = ChunkStepper(su.model, NumpyOnlyCodec(su.geometry), su.style_model,
                       su.scaler)
  assert not plain.can_inject
  state = stepper.init_state(params, 2)
  with pytest.raises(ValueError, match="traceable encoder"):
    plain.chunk_step(params, state, controls(_styles(su, 2, 0), 0.0, 1,
                                             None, 1.0), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="traceable encoder"):
    plain.inject_context(params, state, 0.0, 1.0, [True, True])


@pytest.mark.parametrize("coupled,k", [(False, 1), (False, 2), (True, 2)])
def test_guidance_equals_two_separate_model_applications(request, coupled, k):
  """Guidance checked independently of `denoise_guided`: the conditioned
  and unconditioned predictions come from two separate full-model
  applications (the training forward: context + style encoded from
  scratch), combined by hand as (1 + w) f(cond) - w f(uncond). Catches
  cond/uncond swapped in `denoise_guided` (guidance steering away from the
  prompt), a wrong sign or a missing (1 + w)."""
  su, params, stepper = request.getfixturevalue(
      "coupled_world" if coupled else "world")
  assert su.model.cfg.coupled == coupled
  g, noise = su.geometry, su.model.cfg.noise
  b, w = 2, 3.0
  styles = _styles(su, b, 5)
  key = jax.random.PRNGKey(11)
  state = stepper.init_state(params, b)
  _, after = stepper.chunk_step(params, state, controls(styles, w, k), key)

  ctl = controls(styles, w, k)
  ctx = jnp.full((b, su.model.cfg.context_chunks, su.model.cfg.chunk_tokens),
                 MASK_ID, jnp.int32)
  ids = stepper.style_ids(ctl.style_emb)
  shape = (b, g.chunk_frames, g.codec_latent_dim)

  # The first step's input: sigma_max * N(0, I), or (coupled) the coupling
  # noise z drawn from the step's key, x = sigma_max * z's level-0 slice;
  # both halves and every step see the same z.
  x, z = S.first_step_input(su.model.cfg, jax.random.fold_in(key, 0), b)

  def f(x, sigma, style_ids, style_emb):
    return su.model.apply({"params": params}, ctx, style_ids, style_emb, x,
                          jnp.full((b,), sigma), z)

  def guided(x, sigma):
    cond = f(x, sigma, ids, ctl.style_emb)
    uncond = f(x, sigma, jnp.full_like(ids, MASK_ID),
               jnp.zeros_like(ctl.style_emb))
    # The two predictions differ, so a swap cannot go unnoticed.
    assert np.abs(np.asarray(cond - uncond)).max() > 1e-2
    return (1 + w) * cond - w * uncond

  x0 = guided(x, noise.sigma_max)
  for i, s in enumerate(noise.sampling_ladder(k)[:k - 1], start=1):
    s_noise = np.sqrt(max(s * s - noise.sigma_min ** 2, 0.0))
    x0 = guided(x0 + s_noise * jax.random.normal(jax.random.fold_in(key, i),
                                                 shape), s)
  lat = np.asarray(su.scaler.to_codec(x0))
  np.testing.assert_allclose(np.asarray(after.lead),
                             lat[:, -g.crossfade_frames:], rtol=1e-4,
                             atol=1e-4)


@pytest.fixture(scope="module")
def token_world(world):
  """The same world with a coupled token-head student (code logits picked
  with the flow map and z), its heads random too."""
  return _variant(world, 2, books=True, coupled=True, token_head=True)


@pytest.mark.parametrize("w,temperature", [(0.0, 1.0), (3.0, 0.5)])
def test_token_head_guidance_and_temperature_equal_a_hand_computation(
    token_world, w, temperature):
  """A token head's served chunk = the flow-map pick, with the step's own z,
  of ((1 + w) logits(cond) - w logits(uncond)) / T, the two logits from
  separate full-model applications. Catches cond / uncond swapped for the
  token head, the temperature ignored or applied as a product, and a
  temperature change recompiling."""
  su, params, stepper = token_world
  g = su.geometry
  b = 2
  styles = _styles(su, b, 7)
  key = jax.random.PRNGKey(5)
  state = stepper.init_state(params, b)
  ctl = controls(styles, w, 1, token_temperature=temperature)
  _, after = stepper.chunk_step(params, state, ctl, key)

  ctx = jnp.full((b, su.model.cfg.context_chunks, su.model.cfg.chunk_tokens),
                 MASK_ID, jnp.int32)
  ids = stepper.style_ids(ctl.style_emb)
  x, z = S.first_step_input(su.model.cfg, jax.random.fold_in(key, 0), b)
  sig = jnp.full((b,), su.model.cfg.noise.sigma_max)
  cond = su.model.apply({"params": params}, ctx, ids, ctl.style_emb, x, sig,
                        z)
  uncond = su.model.apply({"params": params}, ctx, jnp.full_like(ids, MASK_ID),
                          jnp.zeros_like(ctl.style_emb), x, sig, z)
  assert cond.shape == (b, g.chunk_frames, g.target_levels, g.codebook_size)
  assert np.abs(np.asarray(cond - uncond)).max() > 1e-2
  books = su.model.books
  logits = ((1 + w) * cond - w * uncond) / temperature
  lat = np.asarray(su.scaler.to_codec(books.latents(books.codes(logits, z))))
  np.testing.assert_allclose(np.asarray(after.lead),
                             lat[:, -g.crossfade_frames:], rtol=1e-4,
                             atol=1e-4)
  # The temperature matters (the picks move) and is traced (no recompile).
  before = stepper.compiles
  _, other = stepper.chunk_step(params, stepper.init_state(params, b),
                                controls(styles, w, 1,
                                         token_temperature=0.05), key)
  assert stepper.compiles == before
  assert np.abs(np.asarray(other.lead) - np.asarray(after.lead)).max() > 1e-3


@pytest.mark.parametrize("which", ["token_world", "feedback_world"])
def test_the_pick_temperature_is_multiplied_into_the_control(which, request):
  """A student shipped with pick_temperature p, played at the control T,
  picks exactly what the same weights with p = 1 pick at T * p (so the
  control stays relative to the student as shipped), and not what they
  pick at T. Catches the student's temperature ignored, or replacing the
  control instead of multiplying it; for both token heads."""
  import dataclasses
  su, params, stepper = request.getfixturevalue(which)
  hot = dataclasses.replace(su.model, cfg=dataclasses.replace(
      su.model.cfg, pick_temperature=2.0))
  hot_stepper = ChunkStepper(hot, su.codec, su.style_model, su.scaler,
                             max_steps=3)
  b = 2
  styles = _styles(su, b, 13)
  key = jax.random.PRNGKey(17)
  lead = lambda st, t: np.asarray(st.chunk_step(
      params, st.init_state(params, b), controls(styles, 3.0, 1,
                                                 token_temperature=t),
      key)[1].lead)
  played = lead(hot_stepper, 0.5)
  np.testing.assert_array_equal(played, lead(stepper, 1.0))
  assert np.abs(lead(hot_stepper, 1.0) - played).max() > 1e-3


@pytest.fixture(scope="module")
def feedback_world(world):
  """A token-head student with the frame-recurrent pick (token_feedback),
  its heads (the previous-frame embedding, MLP, repeat bonus) random too."""
  return _variant(world, 3, books=True, coupled=True, token_head=True,
                  token_feedback=True)


@pytest.fixture(scope="module")
def frame_state_world(world):
  """The recurrent pick that also reads a decaying sum of every frame
  picked before (student.frame_state), its heads random too."""
  return _variant(world, 4, books=True, coupled=True, token_head=True,
                  token_feedback=True, frame_state=True)


def _hand_recurrent_codes(su, params, ctx, ids, emb, x, sig, z, w, temp):
  """Token by token, in the teacher's order (frames, then levels), from
  full-model applications (the teacher-forced __call__): (frame f, level
  q)'s logits are read off a pass whose codes hold the picks made before
  it; guided, tempered, picked with that token's z."""
  g = su.geometry
  b, c, k = z.shape[0], g.chunk_frames, g.target_levels
  picks = np.zeros((b, c, k), np.int32)
  # Jitted once each (shapes fixed), not op by op: one full model pass per
  # half and one pick per token, as separate compiled calls.
  full = jax.jit(lambda i, e, codes: su.model.apply(
      {"params": params}, ctx, i, e, x, sig, z, codes))
  pick = jax.jit(su.model.books.codes)
  for f in range(c):
    for q in range(k):
      codes = jnp.asarray(picks)
      cond = full(ids, emb, codes)[:, f:f + 1]
      unc = full(jnp.full_like(ids, MASK_ID), jnp.zeros_like(emb),
                 codes)[:, f:f + 1]
      logits = ((1 + w) * cond - w * unc) / temp
      picks[:, f, q] = np.asarray(pick(logits, z[:, f:f + 1]))[:, 0, q]
  return picks


def _warm_state(su, params, stepper, b, seed):
  """A random context window (B, N, L) of valid ids and the chunk-step
  state that holds it (`ChunkStepper.window_state`)."""
  g = su.geometry
  codes = np.random.default_rng(seed).integers(
      0, g.codebook_size, (b, g.context_frames, g.target_levels))
  ctx = jnp.asarray(S.context_ids(g, codes))
  return ctx, stepper.window_state(params, ctx)


@pytest.mark.parametrize("which,w,temperature,warm", [
    ("feedback_world", 0.0, 1.0, False), ("feedback_world", 3.0, 0.5, True),
    ("frame_state_world", 3.0, 0.5, True)])
def test_token_feedback_pick_equals_a_frame_by_frame_hand_computation(
    request, which, w, temperature, warm):
  """The recurrent pick (one trunk pass, then a scan over frames and their
  levels) = tokens picked one by one, each from a full teacher-forced model
  pass that reads the picks before it -- so serving reads exactly what
  training reads, the first frame reading the context's last frame (warm)
  or nothing (a cold start). Catches the previous frame or level off by
  one, guidance or temperature applied outside the recurrence, the halves
  reading different picks, and the chunk step dropping the seam; with
  frame_state, the state carried through the scan as training computes it
  over the teacher-forced frames."""
  su, params, stepper = request.getfixturevalue(which)
  assert su.model.cfg.frame_state == (which == "frame_state_world")
  g = su.geometry
  b = 2
  styles = _styles(su, b, 11)
  key = jax.random.PRNGKey(9)
  ctl = controls(styles, w, 1, token_temperature=temperature)
  if warm:
    ctx, state = _warm_state(su, params, stepper, b, 4)
  else:
    ctx = jnp.full((b, su.model.cfg.context_chunks,
                    su.model.cfg.chunk_tokens), MASK_ID, jnp.int32)
    state = stepper.init_state(params, b)
  _, after = stepper.chunk_step(params, state, ctl, key)
  ids = stepper.style_ids(ctl.style_emb)
  x, z = S.first_step_input(su.model.cfg, jax.random.fold_in(key, 0), b)
  sig = jnp.full((b,), su.model.cfg.noise.sigma_max)
  picks = _hand_recurrent_codes(su, params, ctx, ids, ctl.style_emb, x, sig,
                                z, w, temperature)
  books = su.model.books
  want = np.asarray(su.scaler.to_codec(books.latents(jnp.asarray(picks))))
  # The whole chunk through the public guided denoiser, and the served
  # step's last frame.
  cross_c = su.model.apply({"params": params}, ctx, ids, ctl.style_emb,
                           method=S.StudentModel.context_kv)
  cross_u = su.model.apply({"params": params}, ctx, jnp.full_like(ids, MASK_ID),
                           jnp.zeros_like(ctl.style_emb),
                           method=S.StudentModel.context_kv)
  got = stepper.denoise_guided(params, x, sig, cross_c, cross_u,
                               jnp.float32(w), z, temperature,
                               S.seam_codes(g, ctx))
  np.testing.assert_allclose(np.asarray(su.scaler.to_codec(got)), want,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(after.lead),
                             want[:, -g.crossfade_frames:], rtol=1e-4,
                             atol=1e-4)
  # The recurrence matters here: picking every token as if nothing came
  # before it gives another chunk.
  none = jnp.full((b, g.chunk_frames, g.target_levels), g.codebook_size,
                  jnp.int32)
  lone = su.model.apply({"params": params}, ctx, ids, ctl.style_emb, x, sig, z,
                        none)
  assert (np.asarray(jax.jit(books.codes)(lone, z)) != picks).mean() > 0.1
  assert not (picks == g.codebook_size).any()
  # The next chunk's seam: the last frame of the chunk just cached, on the
  # context's levels (the codes its ids hold), "none" on the finer levels.
  last, _, _ = rvq_encode_jnp(after.lead[:, -1],
                              stepper._codec_books)  # (K, B)
  cl = g.context_levels
  np.testing.assert_array_equal(np.asarray(after.seam[:, :cl]),
                                np.asarray(last.T[:, :cl]))
  assert (np.asarray(after.seam[:, cl:]) == g.codebook_size).all()


def test_token_feedback_repeat_bonus_holds_codes_across_frames(
    feedback_world):
  """A large learned repeat bonus makes every frame repeat the previous
  frame's codes (what the head can express that independent picks cannot);
  at zero the frames change code."""
  su, params, stepper = feedback_world
  g = su.geometry
  b = 2
  styles = _styles(su, b, 4)
  ctx = jnp.full((b, su.model.cfg.context_chunks, su.model.cfg.chunk_tokens),
                 MASK_ID, jnp.int32)
  ids = stepper.style_ids(jnp.asarray(styles))
  x, z = S.first_step_input(su.model.cfg, jax.random.PRNGKey(2), b)
  sig = jnp.full((b,), su.model.cfg.noise.sigma_max)
  h = su.model.apply({"params": params}, ctx, ids, jnp.asarray(styles), x, sig,
                     z, method=lambda m, *a: m.context_kv(*a[:3]))

  def repeats(bonus):
    p = traverse_util.flatten_dict(params)
    p[("repeat_logit",)] = jnp.full((g.target_levels,), bonus, jnp.float32)
    p = traverse_util.unflatten_dict(p)
    feats = su.model.apply({"params": p}, x, sig, h, z,
                           method=S.StudentModel.token_features)
    codes = np.asarray(su.model.apply({"params": p}, feats[None], z,
                                      S.no_seam(g, b),
                                      method=S.StudentModel.recurrent_codes))
    assert codes.shape == (b, g.chunk_frames, g.target_levels)
    return (codes[:, 1:] == codes[:, :-1]).mean()

  assert repeats(0.0) < 0.5
  assert repeats(1e4) == 1.0


def test_token_feedback_needs_a_token_head_and_the_previous_codes(world):
  import dataclasses
  su, _, _ = world
  with pytest.raises(ValueError, match="token_feedback=True needs "
                     "student.token_head=True"):
    dataclasses.replace(su.model.cfg, coupled=True, token_feedback=True)
  scfg = dataclasses.replace(su.model.cfg, coupled=True, token_head=True,
                             token_feedback=True)
  params = S.init_student_params(scfg, jax.random.PRNGKey(0))
  args = S._dummy_inputs(scfg)[:-1]  # without the previous-frame codes
  with pytest.raises(ValueError, match="read the previous codes"):
    S.StudentModel(scfg).apply({"params": params}, *args)


def test_on_policy_streamer_writes_the_serving_steps_chunk(feedback_world):
  """The rollouts' on-policy student (`StudentStreamer.codes_for`, the
  window re-encoded each call) writes, for a window, the chunk the serving
  step writes from a state holding that window, guided, with the same key:
  an on-policy context is what the student would play. Mutations caught:
  the unconditioned half reading the conditioned style; the streamer's
  first frame ignoring the seam."""
  from mrt_distill.distill.stream import StudentStreamer
  su, params, stepper = feedback_world
  g = su.geometry
  b, w = 2, 3.0
  styles = _styles(su, b, 21)
  ctx, state = _warm_state(su, params, stepper, b, 8)
  key = jax.random.PRNGKey(5)
  _, after = stepper.chunk_step(params, state, controls(styles, w, 1), key)
  streamer = StudentStreamer(su.model, params, su.codec, su.style_model,
                             su.scaler, cfg_weight=w)
  ids = stepper.style_ids(jnp.asarray(styles))
  lat, _ = streamer._chunk(params, ctx, ids, jnp.asarray(styles), key, 1)
  np.testing.assert_allclose(np.asarray(lat[:, -g.crossfade_frames:]),
                             np.asarray(after.lead), rtol=1e-5, atol=1e-5)
