"""A complete tiny distillation setup (random tiny teacher, minimal codec and
style model) for tests, benchmarks and sharding checks: everything the train
step needs, built in a second on CPU."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from mrt_distill.codec.base import MinimalCodec
from mrt_distill.distill import student as S
from mrt_distill.distill import train_step as T
from mrt_distill.distill.losses import LossWeights, NoiseSchedule
from mrt_distill.style.base import MinimalStyleModel
from mrt_distill.teacher.load import load_teacher_config
from mrt_distill.teacher.model import init_params


@dataclasses.dataclass
class TinySetup:
  model: S.StudentModel
  trainable: dict
  frozen: dict
  codec: MinimalCodec
  style_model: MinimalStyleModel
  scaler: S.LatentScaler
  teacher_params: dict

  @property
  def geometry(self):
    return self.model.cfg.geometry

  def batch(self, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random but valid batch (the shapes and ranges of rollouts)."""
    g, rng = self.geometry, np.random.default_rng(seed)
    ctx = rng.integers(0, g.codebook_size,
                       (size, g.context_frames, g.target_levels))
    ctx[: size // 2, : g.chunk_frames] = -1  # some cold-start chunks
    style = rng.integers(0, g.style_codebook_size, (size, g.style_levels))
    codes = rng.integers(0, g.codebook_size,
                         (size, g.chunk_frames, g.target_levels))
    return {
        "ctx_ids": S.context_ids(g, ctx),
        "style_ids": g.style_to_ids(style).astype(np.int32),
        "style_emb": rng.standard_normal(
            (size, g.style_embed_dim)).astype(np.float32),
        "latents": self.codec.dequantize(codes).astype(np.float32),
    }

  def train_step(self, optimizer, weights: LossWeights = LossWeights()):
    return T.make_train_step(self.model, optimizer, codec=self.codec,
                             scaler=self.scaler, weights=weights)


def tiny_setup(seed: int = 0, lora_rank: int = 2) -> TinySetup:
  cfg = load_teacher_config("tiny")
  g = cfg.geometry
  teacher = init_params(cfg, jax.random.PRNGKey(seed))
  scfg = S.StudentConfig(cfg, lora_rank=lora_rank, noise=NoiseSchedule())
  full = S.from_teacher(scfg, teacher, jax.random.PRNGKey(seed + 1))
  trainable, frozen = S.split_params(full)
  codec = MinimalCodec(g)
  return TinySetup(S.StudentModel(scfg), trainable, frozen, codec,
                   MinimalStyleModel(g),
                   S.LatentScaler.for_codec(codec, scfg.noise.sigma_data),
                   teacher)
