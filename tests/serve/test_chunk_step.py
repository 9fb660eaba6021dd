"""The serving chunk step: cached context == recomputed, k=1 == training
forward, controls never recompile, state is donated."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mrt_distill.distill import student as S
from mrt_distill.distill.tiny import tiny_setup
from mrt_distill.geometry import MASK_ID
from mrt_distill.serve.chunk_step import ChunkStepper, controls


@pytest.fixture(scope="module")
def world():
  su = tiny_setup(lora_rank=2)
  # A trained-looking student: random heads and LoRA B, so the output really
  # depends on context, style and noise (a fresh one is c_skip * x).
  rng = np.random.default_rng(0)
  flat = traverse_util.flatten_dict(su.trainable)
  for k, v in flat.items():
    flat[k] = jnp.asarray(rng.standard_normal(v.shape).astype(np.float32)
                          * (0.3 if k[-1] == "lora_b" else 0.5))
  params = S.merge_params(traverse_util.unflatten_dict(flat), su.frozen)
  stepper = ChunkStepper(su.model, su.codec, su.style_model, su.scaler,
                         max_steps=3)
  return su, params, stepper


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
