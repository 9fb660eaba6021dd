"""The distillation train step: what trains, NaN guard, sharding parity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mrt_distill.distill import student as S
from mrt_distill.distill import train_step as T
from mrt_distill.distill.losses import LossWeights
from mrt_distill.distill.tiny import tiny_setup


def _optim(**kw):
  base = dict(name="adamw", learning_rate=3e-3, warmup_steps=0,
              decay_steps=100, final_lr_fraction=1.0, b1=0.9, b2=0.99,
              weight_decay=0.0, grad_clip=1.0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


@pytest.fixture(scope="module")
def setup():
  return tiny_setup()


def _run(setup, steps, batch, weights=LossWeights(), optim=None):
  opt = T.make_optimizer(optim or _optim())
  state = T.init_state(setup.trainable, setup.frozen, opt)
  step = jax.jit(setup.train_step(opt, weights))
  out = []
  for i in range(steps):
    state, m = step(state, batch, jax.random.PRNGKey(i % 2))
    out.append(jax.device_get(m))
  return state, out


def test_only_lora_and_heads_train_and_loss_falls(setup):
  batch = {k: jnp.asarray(v) for k, v in setup.batch(8).items()}
  state, metrics = _run(setup, 30, batch)
  # The teacher backbone is untouched, bit for bit.
  for a, b in zip(jax.tree.leaves(state.frozen), jax.tree.leaves(setup.frozen)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Every trainable leaf moved (LoRA B starts at zero and must leave it).
  flat0 = jax.tree_util.tree_flatten_with_path(setup.trainable)[0]
  flat1 = jax.tree.leaves(state.params)
  for (path, a), b in zip(flat0, flat1):
    assert not np.array_equal(np.asarray(a), np.asarray(b)), path
  # Overfitting one batch (same two rngs): the total loss falls clearly.
  first = np.mean([m["loss/total"] for m in metrics[:2]])
  last = np.mean([m["loss/total"] for m in metrics[-2:]])
  assert last < 0.8 * first, (first, last)
  assert set(metrics[0]) >= {"loss/latent", "loss/consistency",
                             "loss/spectral", "loss/temporal", "loss/onset",
                             "loss/total", "grad_norm", "nonfinite"}
  # Optimizer state exists for trainable leaves only.
  n_opt = sum(x.size for x in jax.tree.leaves(state.opt_state))
  n_train = sum(x.size for x in jax.tree.leaves(state.params))
  n_frozen = sum(x.size for x in jax.tree.leaves(state.frozen))
  assert 2 * n_train <= n_opt < 2 * n_train + 100 < n_frozen


def test_zero_weight_drops_a_term(setup):
  batch = {k: jnp.asarray(v) for k, v in setup.batch(4).items()}
  w = LossWeights(spectral=0.0, onset=0.0)
  _, metrics = _run(setup, 1, batch, weights=w)
  assert "loss/spectral" not in metrics[0]
  assert "loss/onset" not in metrics[0]
  total = sum(metrics[0][f"loss/{k}"] * getattr(w, k)
              for k in ("latent", "consistency", "temporal"))
  np.testing.assert_allclose(metrics[0]["loss/total"], total, rtol=1e-5)


def test_nan_batch_skips_the_update_and_counts_it(setup):
  good = {k: jnp.asarray(v) for k, v in setup.batch(4).items()}
  bad = dict(good, latents=good["latents"].at[0, 0, 0].set(jnp.nan))
  opt = T.make_optimizer(_optim())
  state = T.init_state(setup.trainable, setup.frozen, opt)
  step = jax.jit(setup.train_step(opt))
  before = jax.device_get(state.params)
  state, m = step(state, bad, jax.random.PRNGKey(0))
  assert not np.isfinite(float(m["loss/total"]))
  assert int(m["nonfinite"]) == 1
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before)):
    np.testing.assert_array_equal(np.asarray(a), b)
  state, m = step(state, good, jax.random.PRNGKey(0))
  assert int(m["nonfinite"]) == 1 and np.isfinite(float(m["loss/total"]))


def test_unknown_optimizer_and_indivisible_batch_errors():
  with pytest.raises(ValueError, match="'adamw' or 'adafactor'"):
    T.make_optimizer(_optim(name="sgd"))
  mesh = T.make_mesh((1, 1, 1))
  T.check_batch_divides(5, mesh)  # one shard divides anything
  with pytest.raises(ValueError, match=r"needs 8 devices, only 1"):
    T.make_mesh((2, 2, 2))


SHARDING_SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    import ml_collections
    from mrt_distill.distill import student as S, train_step as T
    from mrt_distill.distill.tiny import tiny_setup

    assert len(jax.devices()) == 8, jax.devices()
    su = tiny_setup()
    optim = ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=1e-3, warmup_steps=0, decay_steps=10,
        final_lr_fraction=1.0, b1=0.9, b2=0.99, weight_decay=0.0,
        grad_clip=1.0))
    # Host copies: the step donates its state, and device_put onto the
    # same device would hand over the very buffers of su.
    trainable, frozen = jax.device_get((su.trainable, su.frozen))
    batch = su.batch(8)
    specs = S.student_partition_spec(su.model.cfg)
    t_specs, f_specs = S.split_params(specs)
    out = {}
    for name, shape in (("single", (1, 1, 1)), ("mesh222", (2, 2, 2))):
      mesh = T.make_mesh(shape)
      T.check_batch_divides(8, mesh)
      t_sh = T.param_shardings(t_specs, mesh)
      f_sh = T.param_shardings(f_specs, mesh)
      opt = T.make_optimizer(optim)
      state = T.init_state(jax.device_put(trainable, t_sh),
                           jax.device_put(frozen, f_sh), opt)
      st_sh = T.state_shardings(state, t_sh, f_sh, mesh)
      state = jax.device_put(state, st_sh)
      step = T.jit_train_step(su.train_step(opt), st_sh, mesh)
      b = {k: jax.device_put(jnp.asarray(batch[k]), T.batch_sharding(mesh))
           for k in T.BATCH_KEYS}
      state, m = step(state, b, jax.random.PRNGKey(0))
      out[name] = {k: float(v) for k, v in jax.device_get(m).items()}
      wi = state.frozen["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
      lora = state.params["encoder"]["layers_0"]["mlp"]["wi_0"]["lora_b"]
      mu = state.opt_state.inner_state[1][0].mu["encoder"]["layers_0"][
          "mlp"]["wi_0"]["lora_b"]
      out[name + "_specs"] = {
          "wi_0": str(wi.sharding.spec), "wi_0_shard": list(
              wi.addressable_shards[0].data.shape), "wi_0_full": list(wi.shape),
          "lora_b": str(lora.sharding.spec), "mu": str(mu.sharding.spec),
          "devices": len(wi.sharding.device_set)}
    try:
      T.check_batch_divides(6, T.make_mesh((2, 2, 2)))
    except ValueError as e:
      out["indivisible"] = str(e)
    print("RESULT" + json.dumps(out))
""")


# slow: a fresh process compiling the step for 8 devices and for 1 (about
# 40 s on 2 cores); .ci/run runs it with the other slow checks.
@pytest.mark.slow
def test_sharded_step_on_8_fake_devices_matches_single_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  out = json.loads(line[len("RESULT"):])
  one, many = out["single"], out["mesh222"]
  for k in ("loss/total", "loss/latent", "loss/spectral", "grad_norm"):
    np.testing.assert_allclose(many[k], one[k], rtol=2e-4, err_msg=k)
  s = out["mesh222_specs"]
  # (embed, mlp) -> (fsdp, tensor): really split 2 x 2 over 8 devices.
  assert s["wi_0"] == str(jax.sharding.PartitionSpec("fsdp", "tensor"))
  assert s["wi_0_shard"] == [s["wi_0_full"][0] // 2, s["wi_0_full"][1] // 2]
  assert s["devices"] == 8
  # LoRA B (lora_rank, mlp): the rank is replicated, mlp over tensor; the
  # Adam moment follows its parameter.
  assert s["lora_b"] == str(jax.sharding.PartitionSpec(None, "tensor"))
  assert s["mu"] == s["lora_b"]
  assert "batch size 6 does not divide" in out["indivisible"]
  assert "multiple of 4" in out["indivisible"]


def test_style_dropout_masks_tokens_and_embedding():
  from mrt_distill.geometry import MASK_ID
  b = {"style_ids": jnp.full((64, 2), 300, jnp.int32),
       "style_emb": jnp.ones((64, 3), jnp.float32)}
  ids, emb = T.drop_style(b, jax.random.PRNGKey(0), 0.5)
  dropped = np.asarray(ids[:, 0] == MASK_ID)
  assert 10 < dropped.sum() < 54  # about half, per example
  np.testing.assert_array_equal(np.asarray(ids[:, 1] == MASK_ID), dropped)
  np.testing.assert_array_equal(np.asarray(emb[:, 0] == 0.0), dropped)
  np.testing.assert_array_equal(np.asarray(emb[~dropped]), 1.0)
  same = T.drop_style(b, jax.random.PRNGKey(0), 0.0)
  assert same[0] is b["style_ids"] and same[1] is b["style_emb"]


def test_imle_picks_the_draw_nearest_the_teacher_chunk(setup):
  from mrt_distill.distill import student as S
  params = S.merge_params(setup.trainable, setup.frozen)
  # A live output head, so different noise draws give different outputs.
  params["latent_out"]["kernel"] = jnp.ones_like(
      params["latent_out"]["kernel"]) * 0.1
  batch = {k: jnp.asarray(v) for k, v in setup.batch(3).items()}
  apply = lambda *a, **kw: setup.model.apply({"params": params}, *a, **kw)
  cross = apply(batch["ctx_ids"], batch["style_ids"], batch["style_emb"],
                method=S.StudentModel.context_kv)
  x0 = setup.scaler.to_student(batch["latents"])
  key, sigma = jax.random.PRNGKey(3), setup.model.cfg.noise.sigma_max
  best = T.nearest_draw(
      T.one_step_draws(apply, cross, x0.shape, key, sigma, 5), x0)
  # Recompute every draw by hand: the chosen one is the nearest per example.
  z = jax.random.normal(key, (15,) + x0.shape[1:])
  tile = lambda t: jnp.concatenate([t] * 5, axis=0)
  all_out = apply(z * sigma, jnp.full((15,), sigma),
                  [type(kv)(tile(kv.k), tile(kv.v)) for kv in cross],
                  method=S.StudentModel.denoise).reshape((5,) + x0.shape)
  d = np.sum((np.asarray(all_out) - np.asarray(x0)[None]) ** 2, axis=(2, 3))
  for i in range(3):
    np.testing.assert_allclose(np.asarray(best[i]),
                               np.asarray(all_out[np.argmin(d[:, i]), i]),
                               rtol=1e-5, atol=1e-6)
    assert np.sum((np.asarray(best[i]) - np.asarray(x0[i])) ** 2) <= \
        d[:, i].min() + 1e-4
  # K = 1 is plain regression on one draw.
  one = T.nearest_draw(
      T.one_step_draws(apply, cross, x0.shape, key, sigma, 1), x0)
  plain = apply(jax.random.normal(key, x0.shape) * sigma,
                jnp.full((3,), sigma), cross, method=S.StudentModel.denoise)
  np.testing.assert_allclose(np.asarray(one), np.asarray(plain), rtol=1e-5,
                             atol=1e-6)


def test_style_term_trains_through_the_style_tower(setup):
  """losses.style: the cosine distance between style-model embeddings of the
  student's and the teacher's decoded chunk, differentiated end to end."""
  from mrt_distill.style.mel_encoder import EncoderConfig
  from mrt_distill.style.reference import ReferenceStyleModel
  from mrt_distill.style.style_net import ReferenceStyleConfig
  g = setup.geometry
  cfg = ReferenceStyleConfig(
      encoder=EncoderConfig(patch_dim=16, hidden=32, dilations=(1,)),
      text_width=16, text_hidden=32, embed_dim=g.style_embed_dim)
  sm = ReferenceStyleModel.init(0, config=cfg, geometry=g)
  batch = {k: jnp.asarray(v) for k, v in setup.batch(4).items()}
  only = LossWeights(latent=0.0, consistency=0.0, spectral=0.0,
                     temporal=0.0, onset=0.0, style=1.0)
  opt = T.make_optimizer(_optim())
  state = T.init_state(setup.trainable, setup.frozen, opt)
  step = jax.jit(T.make_train_step(setup.model, opt, codec=setup.codec,
                                   scaler=setup.scaler, weights=only,
                                   style_embed=sm.audio_embedder()))
  metrics = []
  for i in range(3):
    state, m = step(state, batch, jax.random.PRNGKey(0))
    metrics.append(jax.device_get(m))
  # The one-step latent term is always logged; only style counts here.
  np.testing.assert_allclose(metrics[0]["loss/total"],
                             metrics[0]["loss/style"], rtol=1e-6)
  assert 0.0 < metrics[0]["loss/style"] <= 2.0
  assert metrics[0]["grad_norm"] > 0
  # The same batch and noise three times: the term falls.
  assert metrics[-1]["loss/style"] < metrics[0]["loss/style"]
  # Without a tower the step refuses, naming the config key.
  with pytest.raises(ValueError, match="losses.style"):
    T.compute_losses(setup.model, setup.trainable, batch,
                     jax.random.PRNGKey(0), codec=setup.codec,
                     scaler=setup.scaler, weights=only)


def test_style_embedder_refuses_a_world_without_a_jax_tower(setup):
  import types
  from mrt_distill.distill import loop
  world = types.SimpleNamespace(style_model=setup.style_model,
                                geometry=setup.geometry)
  assert loop.style_embedder(world, LossWeights()) is None
  with pytest.raises(ValueError, match="differentiable JAX audio tower"):
    loop.style_embedder(world, LossWeights(style=1.0))


def test_energy_term_needs_several_draws_and_spreads_them(setup):
  batch = {k: jnp.asarray(v) for k, v in setup.batch(4).items()}
  w = LossWeights(energy=1.0)
  with pytest.raises(ValueError, match="imle_samples"):
    T.compute_losses(setup.model, S.merge_params(setup.trainable,
                                                 setup.frozen), batch,
                     jax.random.PRNGKey(0), codec=setup.codec,
                     scaler=setup.scaler, weights=w, imle_samples=1)
  opt = T.make_optimizer(_optim())
  state = T.init_state(setup.trainable, setup.frozen, opt)
  step = jax.jit(T.make_train_step(setup.model, opt, codec=setup.codec,
                                   scaler=setup.scaler, weights=w,
                                   imle_samples=3))
  state, m = step(state, batch, jax.random.PRNGKey(0))
  m = jax.device_get(m)
  assert np.isfinite(m["loss/energy"]) and m["grad_norm"] > 0
  terms = sum(m[f"loss/{k}"] * getattr(w, k) for k in
              ("latent", "consistency", "spectral", "temporal", "onset",
               "energy"))
  np.testing.assert_allclose(m["loss/total"], terms, rtol=1e-5)


def test_spectral_selection_prefers_a_shifted_chunk_to_silence():
  """L2 picks a near-silent draw over the target's rhythm a few ms late (the
  student's silence on rhythmic styles); the spectral distance picks the
  late copy. Decoder here: a (C, D) latent is C * D audio samples."""
  rng = np.random.default_rng(0)
  c, d, b = 25, 64, 2
  hits = np.zeros((b, c * d), np.float32)
  for i in range(b):  # a drum-like click train, different per example
    hits[i, rng.integers(50, 300)::400] = 1.0
  hits = np.convolve(hits.ravel(), np.hanning(31), "same").reshape(b, -1)
  target = jnp.asarray(hits.reshape(b, c, d))
  late = jnp.asarray(np.roll(hits, 40, axis=1).reshape(b, c, d))
  quiet = 0.01 * target[:, ::-1]  # near silence, and not the rhythm
  draws = jnp.stack([quiet, late])  # (K=2, B, C, D)
  decode = lambda x: x.reshape(x.shape[0], -1)
  np.testing.assert_array_equal(np.asarray(T.nearest_draw(draws, target)),
                                np.asarray(quiet))
  picked = T.nearest_draw_spectral(draws, decode(target), decode)
  np.testing.assert_array_equal(np.asarray(picked), np.asarray(late))
  # Selection is held fixed; the gradient reaches the chosen draw only.
  g = jax.grad(lambda dr: jnp.sum(T.nearest_draw_spectral(
      dr, decode(target), decode)))(draws)
  np.testing.assert_array_equal(np.asarray(g[0]), 0.0)
  np.testing.assert_array_equal(np.asarray(g[1]), 1.0)


def test_spectral_selection_trains_and_unknown_selection_is_refused(setup):
  batch = {k: jnp.asarray(v) for k, v in setup.batch(4).items()}
  opt = T.make_optimizer(_optim())
  with pytest.raises(ValueError, match="imle_select 'nearest'"):
    T.make_train_step(setup.model, opt, codec=setup.codec,
                      scaler=setup.scaler, weights=LossWeights(),
                      imle_samples=3, imle_select="nearest")
  metrics = {}
  for select in ("latent", "spectral"):
    state = T.init_state(setup.trainable, setup.frozen, opt)
    step = jax.jit(T.make_train_step(setup.model, opt, codec=setup.codec,
                                     scaler=setup.scaler,
                                     weights=LossWeights(), imle_samples=3,
                                     imle_select=select))
    _, m = step(state, batch, jax.random.PRNGKey(0))
    metrics[select] = jax.device_get(m)
    assert np.isfinite(metrics[select]["loss/total"])
    assert metrics[select]["grad_norm"] > 0
  # Same noise draws, another choice among them: the one-step spectral
  # term can only be lower (or equal) with spectral selection.
  assert (metrics["spectral"]["loss/spectral"]
          <= metrics["latent"]["loss/spectral"] + 1e-6)


def test_param_ema_averages_the_iterates_and_skips_nonfinite_steps():
  """optim.ema_decay: the optimizer state carries the average of the
  parameters after each update, with the warm-up min(d, (1+t)/(10+t)), and
  leaves it alone when a step is skipped for NaN."""
  params = {"w": jnp.arange(3.0), "b": jnp.ones((2, 2))}
  opt = T.make_optimizer(_optim(name="adamw", learning_rate=0.1,
                                ema_decay=0.9))
  state = opt.init(params)
  assert T.ema_params(state) is not None
  np.testing.assert_array_equal(np.asarray(T.ema_params(state)["w"]),
                                np.asarray(params["w"]))
  ema = jax.tree.map(np.asarray, params)
  p = params
  for t in range(1, 5):
    g = jax.tree.map(lambda x: jnp.full_like(x, float(t)), p)
    upd, state = opt.update(g, state, p)
    p = optax.apply_updates(p, upd)
    d = min(0.9, (1 + t) / (10 + t))
    ema = jax.tree.map(lambda e, q: d * e + (1 - d) * np.asarray(q), ema, p)
    for k in ema:
      np.testing.assert_allclose(np.asarray(T.ema_params(state)[k]), ema[k],
                                 rtol=1e-6)
  # A NaN gradient: no update, and the average does not move either.
  nan = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), p)
  upd, state2 = opt.update(nan, state, p)
  np.testing.assert_array_equal(np.asarray(upd["w"]), 0.0)
  for k in ema:
    np.testing.assert_array_equal(np.asarray(T.ema_params(state2)[k]),
                                  np.asarray(T.ema_params(state)[k]))
  # Off: no average, and the served parameters are the last iterate.
  off = T.make_optimizer(_optim())
  assert T.ema_params(off.init(params)) is None
  ts = T.init_state(params, {}, off)
  assert T.served_params(ts) is ts.params
  with pytest.raises(ValueError, match="ema_decay must be in"):
    T.make_optimizer(_optim(ema_decay=1.5))


def test_ema_is_sharded_like_the_params_and_served(setup):
  from jax.sharding import PartitionSpec as P
  opt = T.make_optimizer(_optim(ema_decay=0.99))
  state = T.init_state(setup.trainable, setup.frozen, opt)
  mesh = T.make_mesh((1, 1, 1))
  specs = S.student_partition_spec(setup.model.cfg)
  t_specs, f_specs = S.split_params(specs)
  t_sh = T.param_shardings(t_specs, mesh)
  sh = T.state_shardings(state, t_sh, T.param_shardings(f_specs, mesh), mesh)
  ema_sh = T.ema_params(sh.opt_state)
  assert jax.tree.structure(ema_sh) == jax.tree.structure(t_sh)
  for a, b in zip(jax.tree.leaves(ema_sh), jax.tree.leaves(t_sh)):
    assert a.spec == b.spec
  assert any(s.spec != P() for s in jax.tree.leaves(ema_sh))
  # One step: the served parameters are the average, not the iterate.
  step = jax.jit(T.make_train_step(setup.model, opt, codec=setup.codec,
                                   scaler=setup.scaler,
                                   weights=LossWeights()))
  batch = {k: jnp.asarray(v) for k, v in setup.batch(4).items()}
  state, _ = step(state, batch, jax.random.PRNGKey(0))
  served = T.served_params(state)
  assert served is T.ema_params(state.opt_state)
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
      jax.tree.leaves(served), jax.tree.leaves(state.params))]
  assert max(moved) > 0


def test_ltas_term_enters_the_total_with_its_weight(setup):
  batch = {k: jnp.asarray(v) for k, v in setup.batch(4).items()}
  full = S.merge_params(setup.trainable, setup.frozen)
  kw = dict(codec=setup.codec, scaler=setup.scaler, imle_samples=2)
  _, off = T.compute_losses(setup.model, full, batch, jax.random.PRNGKey(0),
                            weights=LossWeights(), **kw)
  _, on = T.compute_losses(setup.model, full, batch, jax.random.PRNGKey(0),
                           weights=LossWeights(ltas=2.0), **kw)
  assert "loss/ltas" not in off
  assert float(on["loss/ltas"]) > 0
  np.testing.assert_allclose(float(on["loss/total"]),
                             float(off["loss/total"])
                             + 2.0 * float(on["loss/ltas"]), rtol=1e-5)
