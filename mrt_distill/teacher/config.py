"""Teacher architecture hyperparameters (a frozen dataclass, built from gin).

The sizes mirror the Magenta RT v1 gin files (reference §2.2). Gin files in
`gin/` are read by `teacher.load.load_teacher_config`; tests may also build a
`TeacherConfig` directly.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from mrt_distill.geometry import Geometry, MRT_V1

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
  """Sizes of the T5 encoder + Depthformer decoder."""

  geometry: Geometry = MRT_V1
  name: str = "base"
  d_model: int = 768
  num_heads: int = 12
  head_dim: int = 64
  mlp_dim: int = 2048
  depth_mlp_dim: int = 2048
  num_encoder_layers: int = 12
  num_temporal_layers: int = 20
  num_depth_layers: int = 4
  temporal_relpos_buckets: int = 128
  temporal_relpos_max_distance: int = 128
  depth_relpos_buckets: int = 16
  depth_relpos_max_distance: int = 16
  dropout_rate: float = 0.1
  depth_dropout_rate: float = 0.0
  # v1: attention/MLP/norm internals in bf16, decoder residual stream in f32.
  activation_dtype: str = "bfloat16"
  # LoRA rank of every attention and MLP kernel in the encoder and temporal
  # stacks (0 = none, the teacher). The distilled student sets it.
  lora_rank: int = 0

  def __post_init__(self):
    def need(cond, msg):
      if not cond:
        raise ValueError(f"TeacherConfig {self.name!r}: {msg}")

    for f in ("d_model", "num_heads", "head_dim", "mlp_dim", "depth_mlp_dim",
              "num_encoder_layers", "num_temporal_layers", "num_depth_layers",
              "temporal_relpos_buckets", "depth_relpos_buckets"):
      v = getattr(self, f)
      need(isinstance(v, int) and v > 0, f"{f} must be a positive int, got {v!r}")
    need(isinstance(self.lora_rank, int) and self.lora_rank >= 0,
         f"lora_rank must be an int >= 0, got {self.lora_rank!r}")
    need(self.activation_dtype in _DTYPES,
         f"activation_dtype must be one of {sorted(_DTYPES)}, got "
         f"{self.activation_dtype!r}")
    need(0.0 <= self.dropout_rate < 1.0, "dropout_rate must be in [0, 1)")
    need(0.0 <= self.depth_dropout_rate < 1.0,
         "depth_dropout_rate must be in [0, 1)")
    need(self.depth_relpos_buckets >= 2 and self.temporal_relpos_buckets >= 2,
         "relpos buckets must be >= 2")

  @property
  def dtype(self):
    return _DTYPES[self.activation_dtype]

  @property
  def qkv_dim(self) -> int:
    return self.num_heads * self.head_dim

  @property
  def vocab_rows(self) -> int:
    return self.geometry.padded_vocab_size

  def replace(self, **kw) -> "TeacherConfig":
    return dataclasses.replace(self, **kw)


def for_backend(cfg: TeacherConfig, dtype: str = "auto") -> TeacherConfig:
  """`cfg` with the activation dtype to *run* it in on this JAX backend.

  "auto" keeps the config's dtype on TPU/GPU and uses float32 on CPU: XLA:CPU
  has no fast bfloat16 matmul, so the Magenta RT Base student's chunk step is
  about 2x slower in bf16 than in f32 there, and its 4-token context-chunk
  encode 8x slower (docs/benchmarks.md, "Serving chunk step"). Parameters are
  float32 either way, so a student trained in bf16 serves in f32 unchanged.
  """
  if dtype == "auto":
    import jax
    dtype = ("float32" if jax.default_backend() == "cpu"
             else cfg.activation_dtype)
  if dtype not in _DTYPES:
    raise ValueError(f"dtype {dtype!r}: use 'auto' or one of "
                     f"{sorted(_DTYPES)}")
  return cfg if dtype == cfg.activation_dtype else cfg.replace(
      activation_dtype=dtype)
