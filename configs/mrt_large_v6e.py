"""Distil Magenta RT v1 *large* (762M teacher) on a Cloud TPU v6e-64 pod slice.

  # on every worker (16 hosts x 4 chips; tools/tpu/ runs it on all of them):
  mrt-distill distill --config configs/mrt_large_v6e.py \
      --workdir gs://BUCKET/runs/mrt_large \
      --config.magenta_rt.teacher=/path/to/imported_teacher

Geometry `mrt_v1`. Mesh (data 8, fsdp 8, tensor 1) over 64 chips, batch 256
(4 examples per chip); the 1280-wide backbone is FSDP-sharded along `embed`.

Needs the real Magenta RT assets: see docs/real_magenta_rt.md.
"""

from __future__ import annotations

import ml_collections

from mrt_distill.configs import mrt_base_v5e


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg:
    raise ValueError(f"configs/mrt_large_v6e.py takes no arg, got {arg!r}")
  c = mrt_base_v5e.get_config()
  c.name = "mrt_large_v6e"
  c.magenta_rt.gin = "large"
  c.student.lora_rank = 32
  c.rollout.update(batch=256, replay_capacity=16_384)
  c.train.update(batch=256, steps=30_000)
  c.optim.update(decay_steps=30_000)
  c.mesh_shape = (8, 8, 1)
  return c
