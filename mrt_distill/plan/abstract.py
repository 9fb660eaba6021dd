"""The train step a plan is made for, built from shapes only.

`train_setup` builds what `loop.build` builds (student, optimizer, train
step, TrainState) as ShapeDtypeStructs; nothing is allocated and no teacher
weights are read. jax and the model are imported inside the functions.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class TrainSetup:
  """Everything the train step needs, abstract (ShapeDtypeStruct leaves)."""
  config: Any
  teacher_cfg: Any
  student_cfg: Any
  model: Any
  optimizer: Any
  step: Any  # the pure train_step(state, batch, rng)
  state: Any  # TrainState of ShapeDtypeStruct
  trainable_specs: Any  # logical PartitionSpecs
  frozen_specs: Any
  codec: Any
  codec_note: str | None = None  # when the plan's codec stands in for one


def train_setup(config) -> TrainSetup:
  """The train step of `loop.build`, built from shapes only (no teacher
  weights are read, no world is loaded except the reference codec; the
  world's teacher architecture and codec come from `world.runtime.load`)."""
  import flax.linen as nn
  import jax

  from mrt_distill.distill import loop
  from mrt_distill.distill import student as S
  from mrt_distill.distill import train_step as T
  from mrt_distill.distill.losses import LossWeights
  from mrt_distill.world.runtime import load as worlds

  tcfg = worlds.teacher_config(config)
  scfg = loop.student_config(config, tcfg)
  model = S.StudentModel(scfg)
  boxed = jax.eval_shape(model.init, jax.random.key(0), *S._dummy_inputs(scfg))
  trainable, frozen = S.split_params(nn.unbox(boxed["params"]))
  t_specs, f_specs = S.split_params(nn.get_partition_spec(boxed["params"]))
  optimizer = T.make_optimizer(config.optim)
  state = jax.eval_shape(lambda t, f: T.init_state(t, f, optimizer),
                         trainable, frozen)
  codec, codec_note = worlds.plan_codec(config, scfg.geometry)
  scaler = S.LatentScaler.for_codec(codec, scfg.noise.sigma_data)
  step = T.make_train_step(
      model, optimizer, codec=codec, scaler=scaler,
      weights=LossWeights(**config.losses.to_dict()),
      style_drop_prob=float(config.student.style_drop_prob),
      imle_samples=int(config.student.imle_samples))
  return TrainSetup(config, tcfg, scfg, model, optimizer, step, state,
                    t_specs, f_specs, codec, codec_note)


def abstract_batch(setup: TrainSetup, batch: int):
  """ShapeDtypeStructs of a train batch (the rollout example layout)."""
  import jax
  import jax.numpy as jnp
  s = setup.student_cfg
  g = s.geometry
  shapes = {
      "ctx_ids": ((batch, s.context_chunks, s.chunk_tokens), jnp.int32),
      "style_ids": ((batch, g.style_levels), jnp.int32),
      "style_emb": ((batch, g.style_embed_dim), jnp.float32),
      "latents": ((batch, g.chunk_frames, g.codec_latent_dim), jnp.float32),
  }
  if s.coupled:  # the teacher's coupling noise and codes
    shapes["noise"] = ((batch, g.chunk_frames, g.target_levels,
                        g.codec_latent_dim), jnp.float32)
    shapes["tokens"] = ((batch, g.chunk_frames, g.target_levels), jnp.int32)
  if float(setup.config.losses.get("token_kl", 0.0) or 0.0):
    # The teacher's distribution for every token (float16 in the rollouts).
    shapes["teacher_logp"] = ((batch, g.chunk_frames, g.target_levels,
                               g.codebook_size), jnp.float16)
  return {k: jax.ShapeDtypeStruct(sh, dt) for k, (sh, dt) in shapes.items()}
