"""The distillation train step: one pure, sharded, donated function.

  train_step(state, batch, rng) -> (state, metrics)

`state.params` holds only what trains (LoRA factors + the new heads) and the
optimizer state exists only for those; `state.frozen` holds the teacher's
backbone weights (passed through unchanged, never checkpointed). The teacher
itself runs outside this function (rollouts), so no teacher forward is ever
differentiated.

Per example the step draws noise and an adjacent pair of noise levels
(sigma_n < sigma_n+1) and evaluates the student:
  * one step from pure noise, f(sigma_max z, sigma_max) -> x1 (the serving
    path; with `imle_samples` K > 1 the nearest of K draws to the teacher's
    chunk, see `nearest_draw`): latent loss vs the teacher latents, and the
    music-aware losses on
    x1 -- multi-resolution STFT and onset envelope of the codec-decoded audio
    vs the codec-decoded teacher chunk, and frame-to-frame latent deltas;
  * f(x0 + sigma_n+1 z) and stop_gradient f(x0 + sigma_n z): the latent loss
    at sigma_n+1 (reconstruction across noise levels) and the consistency
    loss between the two (iCT weighting).

Coupled students (`StudentConfig.coupled`): the batch also holds `noise`,
the coupling noise (B, C, K, D) the teacher sampled the chunk with; the
one-step term is f(sigma_max z_0 | z) (z_0: its level-0 slice) and every
evaluation receives z, so the regression target is a function of the input
(no IMLE: there is one draw, the teacher's).

NaN/Inf: `optax.apply_if_finite` skips the update and counts it
(`metrics["nonfinite"]`); the host loop stops after a configured number.

Shapes: B batch, N context chunks, L tokens per chunk, S style tokens,
E style width, C chunk frames, D latent width.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mrt_distill import axes
from mrt_distill.distill import losses as L
from mrt_distill.distill import student as S
from mrt_distill.distill.student import (LatentScaler, StudentModel,
                                         merge_params)
from mrt_distill.geometry import MASK_ID

BATCH_KEYS = ("ctx_ids", "style_ids", "style_emb", "latents")
# A coupled student's batches also carry the teacher's coupling noise and
# its codes (the token head's targets).
COUPLED_BATCH_KEYS = BATCH_KEYS + ("noise", "tokens")
# With losses.token_kl, also the teacher's distribution for every token.
SOFT_KEY = "teacher_logp"


def batch_keys(coupled: bool, soft_tokens: bool = False) -> tuple[str, ...]:
  keys = COUPLED_BATCH_KEYS if coupled else BATCH_KEYS
  return keys + (SOFT_KEY,) if soft_tokens else keys


def check_token_kl(weights: L.LossWeights, token_head: bool) -> None:
  if weights.token_kl and not token_head:
    raise ValueError(
        f"losses.token_kl={weights.token_kl} matches the token head's "
        f"distributions to the teacher's, but student.token_head is False: "
        f"set --config.student.token_head=True (with student.coupled=True) "
        f"or --config.losses.token_kl=0")


def check_coupled_draws(coupled: bool, imle_samples: int) -> None:
  """IMLE picks the nearest of K independent draws; a coupled student has
  exactly one draw per example, the teacher's noise."""
  if coupled and imle_samples != 1:
    raise ValueError(
        f"student.coupled=True takes the teacher's own noise (one draw per "
        f"example); student.imle_samples is {imle_samples}: set "
        f"--config.student.imle_samples=1 (or student.coupled=False for the "
        f"uncoupled IMLE student)")


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # trainable: LoRA + heads
  opt_state: Any
  frozen: Any  # teacher backbone, constant


class ParamEmaState(NamedTuple):
  count: jax.Array  # updates averaged so far
  ema: Any  # the average, a tree like the trainable parameters


def param_ema(decay: float) -> optax.GradientTransformation:
  """An exponential moving average of the parameters after each update, kept
  in the optimizer state (so it is sharded like the parameters, saved and
  restored with them, and left alone when apply_if_finite skips a step).

  Chain it last: it sees the final updates. The decay warms up as
  min(decay, (1 + t) / (10 + t)) (t = updates so far), so a short run's
  average is not dominated by the initial weights.
  """
  if not 0.0 < decay < 1.0:
    raise ValueError(f"optim.ema_decay must be in (0, 1) or 0 (off), got "
                     f"{decay}")

  def init(params):
    return ParamEmaState(jnp.zeros((), jnp.int32),
                         jax.tree.map(lambda p: jnp.array(p, copy=True),
                                      params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("param_ema needs the parameters in update()")
    new = optax.apply_updates(params, updates)
    count = state.count + 1
    t = count.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    ema = jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype),
                       state.ema, new)
    return updates, ParamEmaState(count, ema)

  return optax.GradientTransformation(init, update)


def ema_params(opt_state):
  """The parameter average in an optimizer state from `make_optimizer` (its
  `ParamEmaState.ema` field), or None when the optimizer keeps none
  (optim.ema_decay = 0). Works on trees of shardings too."""
  return optax.tree_utils.tree_get(opt_state, "ema")


def served_params(state: "TrainState"):
  """What a finished run exports and reports: the parameter average when
  the optimizer keeps one, else the last iterate."""
  ema = ema_params(state.opt_state)
  return state.params if ema is None else ema


def make_optimizer(cfg) -> optax.GradientTransformation:
  """AdamW or Adafactor with an optax warmup-cosine schedule, clipping, an
  optional parameter average (`ema_decay`, see `param_ema`) and the
  non-finite guard. cfg: the `optim` ConfigDict."""
  sched = optax.warmup_cosine_decay_schedule(
      0.0, cfg.learning_rate, cfg.warmup_steps,
      max(cfg.decay_steps, cfg.warmup_steps + 1),
      cfg.learning_rate * cfg.final_lr_fraction)
  if cfg.name == "adamw":
    opt = optax.adamw(sched, b1=cfg.b1, b2=cfg.b2,
                      weight_decay=cfg.weight_decay)
  elif cfg.name == "adafactor":
    opt = optax.adafactor(sched, weight_decay_rate=cfg.weight_decay or None)
  else:
    raise ValueError(f"optim.name {cfg.name!r} is not supported: use "
                     f"'adamw' or 'adafactor'")
  parts = [optax.clip_by_global_norm(cfg.grad_clip), opt]
  decay = float(cfg.get("ema_decay", 0.0) or 0.0)
  if decay:
    parts.append(param_ema(decay))
  opt = optax.chain(*parts)
  return optax.apply_if_finite(opt, max_consecutive_errors=1_000_000)


def init_state(params, frozen, optimizer) -> TrainState:
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params),
                    frozen)


def nonfinite_count(opt_state) -> jax.Array:
  """Total skipped updates so far (optax.apply_if_finite's counter)."""
  return opt_state.total_notfinite


def drop_style(batch, rng, prob: float):
  """CFG conditioning dropout, as the teacher was trained: with probability
  `prob` an example's style becomes unconditioned (MASK tokens, zero
  embedding), so serving can combine conditioned and unconditioned calls."""
  if not prob:
    return batch["style_ids"], batch["style_emb"]
  b = batch["style_ids"].shape[0]
  drop = jax.random.bernoulli(rng, prob, (b,))
  ids = jnp.where(drop[:, None], MASK_ID, batch["style_ids"])
  emb = jnp.where(drop[:, None], 0.0, batch["style_emb"])
  return ids, emb


def one_step_draws(apply, cross, shape_BxCxD, rng, sigma_max: float,
                   samples: int) -> jax.Array:
  """`samples` one-step outputs f(sigma_max z) per example, each from its
  own noise draw -> (K, B, C, D)."""
  b = shape_BxCxD[0]
  z = jax.random.normal(rng, (samples * b,) + tuple(shape_BxCxD[1:]))
  tile = lambda t: jnp.concatenate([t] * samples, axis=0)
  cross_k = [type(kv)(tile(kv.k), tile(kv.v)) for kv in cross]
  out = apply(z * sigma_max, jnp.full((samples * b,), sigma_max, jnp.float32),
              cross_k, method=StudentModel.denoise)
  return out.reshape((samples, b) + tuple(shape_BxCxD[1:]))


IMLE_SELECT = ("latent", "spectral")


def select_draw(draws_KxBxCxD: jax.Array, dist_KxB: jax.Array) -> jax.Array:
  """Per example the draw with the smallest `dist` (held fixed: selection
  is not differentiated) -> (B, C, D)."""
  best = jnp.argmin(jax.lax.stop_gradient(dist_KxB), axis=0)
  return jnp.take_along_axis(draws_KxBxCxD, best[None, :, None, None],
                             axis=0)[0]


def nearest_draw(draws_KxBxCxD: jax.Array, x0_BxCxD: jax.Array) -> jax.Array:
  """The draw nearest (L2) to each example's teacher chunk -> (B, C, D).

  The teacher is stochastic: a context and a style have many valid chunks.
  Regressing one noise draw onto one teacher sample teaches the conditional
  *mean*, which decodes to quiet, blurred audio. Implicit maximum likelihood
  (Li & Malik 2018, IMLE) pulls only the nearest of K draws to each target,
  so different noise regions learn different chunks and outputs stay
  sample-like. One draw: plain regression.
  """
  if draws_KxBxCxD.shape[0] == 1:
    return draws_KxBxCxD[0]
  d = jnp.sum(jnp.square(jax.lax.stop_gradient(draws_KxBxCxD) - x0_BxCxD[None]),
              axis=(2, 3))  # (K, B)
  return select_draw(draws_KxBxCxD, d)


def nearest_draw_spectral(draws_KxBxCxD: jax.Array, target_audio_BxS,
                          decode) -> jax.Array:
  """The draw whose decoded audio is nearest to the teacher chunk's audio by
  the multi-resolution spectral distance -> (B, C, D).

  Why not latent L2 (`nearest_draw`): ||x - y||^2 = ||x||^2 + ||y||^2 -
  2<x, y>. For chunks whose events vary in timing from sample to sample
  (drums, bass lines: <x, y> ~ 0), the quietest draw is the L2-nearest, so
  L2 selection trains every noise region towards quiet chunks -- the
  student's silence on rhythmic styles. Magnitude spectra do not care about
  a few ms of phase, and their log term punishes silence.

  decode: latents (N, C, D) in the student's scale -> mono audio (N, S).
  """
  k, b = draws_KxBxCxD.shape[:2]
  flat = jax.lax.stop_gradient(draws_KxBxCxD).reshape(
      (k * b,) + draws_KxBxCxD.shape[2:])
  audio = decode(flat)
  target = jnp.concatenate([target_audio_BxS] * k, axis=0)
  dist = L.spectral_distance(audio, jax.lax.stop_gradient(target))
  return select_draw(draws_KxBxCxD, dist.reshape(k, b))


def check_imle_select(select: str) -> None:
  if select not in IMLE_SELECT:
    raise ValueError(f"student.imle_select {select!r} is not one of "
                     f"{IMLE_SELECT}")


def check_energy_draws(weights: L.LossWeights, imle_samples: int) -> None:
  """The energy score compares draws with each other: it needs K >= 2."""
  if weights.energy and imle_samples < 2:
    raise ValueError(
        f"losses.energy needs >= 2 one-step draws per example; "
        f"student.imle_samples is {imle_samples}: raise it (e.g. 4) or set "
        f"losses.energy=0")


def corrupt_feedback(key, codes_BxCxK, seam_BxK, prob: float,
                     codebook_size: int):
  """The fed-back codes (B, C, K) and seam (B, K) with each code replaced,
  with probability `prob`, by a uniformly random code (a seam's "none"
  entries stay "none": the context holds no finer levels)."""
  k_c, k_s, k_rc, k_rs = jax.random.split(key, 4)
  def flip(k_flip, k_rand, a):
    a = jnp.asarray(a, jnp.int32)
    hit = jax.random.bernoulli(k_flip, prob, a.shape) & (a < codebook_size)
    rand = jax.random.randint(k_rand, a.shape, 0, codebook_size, jnp.int32)
    return jnp.where(hit, rand, a)
  return flip(k_c, k_rc, codes_BxCxK), flip(k_s, k_rs, seam_BxK)


OWN_PICKS_FROM = ("forced", "played")


def check_own_picks_from(source: str) -> None:
  if source not in OWN_PICKS_FROM:
    raise ValueError(f"student.own_picks_from {source!r} is not one of "
                     f"{OWN_PICKS_FROM}: set e.g. "
                     "--config.student.own_picks_from=played")


def own_pick_feedback(model: StudentModel, apply, h_BxCxd, z_BxCxKxD,
                      tokens_BxCxK, seam_BxK, key, prob: float,
                      source: str = "forced"):
  """The fed-back codes (B, C, K) with each replaced, with probability
  `prob`, by the student's own coupled pick for that token, at its pick
  temperature, with the teacher's noise z -- where the student's
  distribution leaves the teacher's, the code it would have played instead.
  Trained on these with the teacher's tokens as targets, the head learns to
  come back to the teacher's chunk for z after its own slips instead of
  following them (at serve time it reads its own picks). No gradient flows
  through the picks.

  source "forced": each pick reads the teacher's codes before it (one
  parallel pass: a single slip, never two in a row). "played": the chunk the
  student plays from the seam (`recurrent_codes`, unguided: a scan of C
  small steps), whose picks read its own earlier picks, so slips compound
  as they do when it plays."""
  check_own_picks_from(source)
  if source == "played":
    own = jax.lax.stop_gradient(apply(
        h_BxCxd[None], z_BxCxKxD, seam_BxK, 0.0, model.cfg.pick_temperature,
        method=StudentModel.recurrent_codes))
  else:
    logits = apply(h_BxCxd, S.previous_frames(tokens_BxCxK, seam_BxK),
                   tokens_BxCxK, method=StudentModel.frame_logits)
    own = model.books.codes(
        jax.lax.stop_gradient(logits) / model.cfg.pick_temperature, z_BxCxKxD)
  hit = jax.random.bernoulli(key, prob, tokens_BxCxK.shape)
  return jnp.where(hit, own, tokens_BxCxK)


def compute_losses(model: StudentModel, params, batch, rng, *, codec,
                   scaler: LatentScaler, weights: L.LossWeights,
                   style_drop_prob: float = 0.0, imle_samples: int = 1,
                   style_embed=None, imle_select: str = "latent",
                   feedback_noise: float = 0.0, own_picks: float = 0.0,
                   own_picks_from: str = "forced"):
  """-> (total loss, metrics) for one batch; `params` = full student tree.

  `imle_select`: how the one-step term picks its draw among K: "latent"
  (L2 in latent space, `nearest_draw`) or "spectral" (decoded audio,
  `nearest_draw_spectral`; costs K extra decodes per example, forward only).

  `style_embed`: mono audio (B, S) -> style embeddings (B, E), a pure JAX
  function of frozen world weights (`ReferenceStyleModel.audio_embedder`);
  needed only when `weights.style` is nonzero.

  `feedback_noise`: a token_feedback student reads the teacher's codes
  before each token (teacher forcing) with this fraction of them replaced
  by random codes, so it learns not to follow its own earlier picks
  blindly (at serve time it reads its own picks, errors included).

  `own_picks`: the same, with this fraction of them replaced by the
  student's own coupled picks instead (`own_pick_feedback`; `own_picks_from`
  "forced" or "played").
  """
  if weights.style and style_embed is None:
    raise ValueError(
        "losses.style is nonzero but no differentiable style-model audio "
        "tower was given (the world's style model has no `audio_embedder`); "
        "set --config.losses.style=0")
  noise, g = model.cfg.noise, model.cfg.geometry
  b = batch["latents"].shape[0]
  x0 = scaler.to_student(batch["latents"])
  k_z, k_pair, k_z2, k_drop = jax.random.split(rng, 4)
  apply = lambda *a, **kw: model.apply({"params": params}, *a, **kw)
  style_ids, style_emb = drop_style(batch, k_drop, style_drop_prob)
  cross = apply(batch["ctx_ids"], style_ids, style_emb,
                method=StudentModel.context_kv)

  # The serving path: one step from pure noise.
  check_energy_draws(weights, imle_samples)
  check_imle_select(imle_select)
  coupled = model.cfg.coupled
  z = batch["noise"] if coupled else None
  if model.cfg.token_head:
    # Cross-entropy to the teacher's coupled codes, one pass at sigma_max.
    x_max, _ = S.first_step_input(model.cfg, k_z, b, z)
    tokens = batch["tokens"]
    # token_feedback: each token reads the teacher's codes before it
    # (teacher forcing; StudentModel.token_logits).
    # The first frame reads the context's last frame (S.seam_codes).
    feedback = model.cfg.token_feedback
    known = tokens if feedback else None
    seam = S.seam_codes(g, batch["ctx_ids"]) if feedback else None
    if feedback and feedback_noise > 0:
      known, seam = corrupt_feedback(jax.random.fold_in(rng, 7), known, seam,
                                     feedback_noise, g.codebook_size)
    sigma = jnp.full((b,), noise.sigma_max, jnp.float32)
    if feedback and own_picks > 0:
      h = apply(x_max, sigma, cross, z, method=StudentModel.token_features)
      known = own_pick_feedback(model, apply, h, z, known, seam,
                                jax.random.fold_in(rng, 8), own_picks,
                                own_picks_from)
      logits = apply(h, S.previous_frames(known, seam), known,
                     method=StudentModel.frame_logits)
    else:
      logits = apply(x_max, sigma, cross, z, known, seam,
                     method=StudentModel.token_logits)
    terms = {"tokens": L.token_cross_entropy(logits, tokens)}
    if weights.token_kl:
      terms["token_kl"] = L.token_kl(logits, batch[SOFT_KEY])
    # The token head's objective, whatever the latent terms' weights.
    total, metrics = L.combine(terms, L.LossWeights(
        tokens=1.0, token_kl=weights.token_kl))
    metrics["token_accuracy"] = jnp.mean(
        (jnp.argmax(logits, axis=-1) == tokens).astype(jnp.float32))
    return total, metrics
  if coupled:
    check_coupled_draws(coupled, imle_samples)
    x_max, _ = S.first_step_input(model.cfg, k_z, b, z)
    draws = apply(x_max, jnp.full((b,), noise.sigma_max, jnp.float32), cross,
                  z, method=StudentModel.denoise)[None]
  else:
    draws = one_step_draws(apply, cross, x0.shape, k_z, noise.sigma_max,
                           imle_samples)
  decode = lambda x: codec.decode_latents(scaler.to_codec(x)).mean(axis=-1)
  target = None
  audio_terms = (weights.spectral or weights.onset or weights.style
                 or weights.ltas)
  if audio_terms or (imle_select == "spectral" and imle_samples > 1):
    target = jax.lax.stop_gradient(
        codec.decode_latents(batch["latents"]).mean(axis=-1))
  if imle_select == "spectral" and imle_samples > 1:
    x1 = nearest_draw_spectral(draws, target, decode)
  else:
    x1 = nearest_draw(draws, x0)
  terms = {"latent": L.latent_loss(x1, x0)}
  if weights.energy:
    terms["energy"] = L.energy_score_loss(draws, x0)

  # Across noise levels: reconstruction at sigma_hi and consistency with the
  # (stop-gradient) answer at the adjacent sigma_lo.
  if weights.latent or weights.consistency:
    lo, hi = noise.sample_pair_indices(k_pair, b)
    sig = jnp.asarray(noise.sigmas(), jnp.float32)
    s_lo, s_hi = sig[lo], sig[hi]
    z2 = jax.random.normal(k_z2, x0.shape)
    f_hi = apply(x0 + s_hi[:, None, None] * z2, s_hi, cross, z,
                 method=StudentModel.denoise)
    f_lo = apply(x0 + s_lo[:, None, None] * z2, s_lo, cross, z,
                 method=StudentModel.denoise)
    terms["latent"] = 0.5 * (terms["latent"] + L.latent_loss(f_hi, x0))
    terms["consistency"] = L.consistency_loss(f_hi, f_lo, s_hi, s_lo)

  if weights.temporal:
    terms["temporal"] = L.temporal_difference_loss(x1, x0)
  if audio_terms:
    audio = decode(x1)
    if weights.spectral:
      terms["spectral"] = L.spectral_loss(audio, target)
    if weights.onset:
      terms["onset"] = L.onset_loss(audio, target, g.sample_rate)
    if weights.ltas:
      terms["ltas"] = L.ltas_loss(audio, target, g.sample_rate)
    if weights.style:
      terms["style"] = L.style_embedding_loss(
          style_embed(audio), jax.lax.stop_gradient(style_embed(target)))
  total, metrics = L.combine(terms, weights)
  return total, metrics


def make_train_step(model: StudentModel, optimizer, *, codec,
                    scaler: LatentScaler, weights: L.LossWeights,
                    style_drop_prob: float = 0.0, imle_samples: int = 1,
                    style_embed=None, imle_select: str = "latent",
                    feedback_noise: float = 0.0, own_picks: float = 0.0,
                    own_picks_from: str = "forced"):
  """The pure step; jit it with `jit_train_step` (shardings, donation)."""
  check_own_picks_from(own_picks_from)
  check_imle_select(imle_select)
  check_coupled_draws(model.cfg.coupled, imle_samples)

  def train_step(state: TrainState, batch, rng):
    def loss_fn(trainable):
      full = merge_params(trainable, state.frozen)
      return compute_losses(model, full, batch, rng, codec=codec,
                            scaler=scaler, weights=weights,
                            style_drop_prob=style_drop_prob,
                            imle_samples=imle_samples,
                            style_embed=style_embed,
                            imle_select=imle_select,
                            feedback_noise=feedback_noise,
                            own_picks=own_picks,
                            own_picks_from=own_picks_from)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["nonfinite"] = nonfinite_count(opt_state)
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state), metrics

  return train_step


# ---- sharding --------------------------------------------------------------
def make_mesh(shape: tuple[int, int, int], devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over the first prod(shape) devices."""
  devices = list(jax.devices() if devices is None else devices)
  n = int(shape[0] * shape[1] * shape[2])
  if n > len(devices):
    raise ValueError(
        f"mesh shape {tuple(shape)} needs {n} devices, only {len(devices)} "
        f"are visible ({devices[0].platform}); shrink config.mesh_shape")
  import numpy as np
  return Mesh(np.asarray(devices[:n]).reshape(shape), axes.MESH_AXES)


def check_batch_divides(batch: int, mesh: Mesh) -> None:
  n = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch % n:
    raise ValueError(
        f"batch size {batch} does not divide over the mesh's data x fsdp = "
        f"{mesh.shape['data']} x {mesh.shape['fsdp']} = {n} shards; use a "
        f"multiple of {n} (config.train.batch)")


def param_shardings(logical_specs, mesh: Mesh, rules=axes.DEFAULT_RULES):
  """Logical PartitionSpec tree -> NamedSharding tree (flax's rules)."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _dict_keys(path) -> tuple[str, ...]:
  return tuple(str(k.key) for k in path
               if isinstance(k, jax.tree_util.DictKey))


def state_shardings(state: TrainState, trainable_sh, frozen_sh, mesh: Mesh):
  """Shardings for a TrainState: params and frozen by the rules; optimizer
  leaves that mirror a parameter (same dict path and shape: Adam moments)
  take that parameter's sharding, everything else (counts, scalars) is
  replicated."""
  rep = replicated(mesh)
  by_path = {_dict_keys(p): (s, leaf.shape) for (p, s), leaf in zip(
      jax.tree_util.tree_flatten_with_path(trainable_sh)[0],
      jax.tree.leaves(state.params))}

  def pick(path, leaf):
    got = by_path.get(_dict_keys(path))
    if got is not None and got[1] == getattr(leaf, "shape", None):
      return got[0]
    return rep

  opt_sh = jax.tree_util.tree_map_with_path(pick, state.opt_state)
  return TrainState(rep, trainable_sh, opt_sh, frozen_sh)


def jit_train_step(train_step, state_sh, mesh: Mesh, coupled: bool = False,
                   soft_tokens: bool = False):
  """jit with explicit in/out shardings; the state is donated."""
  bsh = batch_sharding(mesh)
  batch_sh = {k: bsh for k in batch_keys(coupled, soft_tokens)}
  return jax.jit(train_step,
                 in_shardings=(state_sh, batch_sh, replicated(mesh)),
                 out_shardings=(state_sh, replicated(mesh)),
                 donate_argnums=(0,))
