"""Distil Magenta RT v1 *large* on a full Cloud TPU v6e-256 pod (64 hosts x 4).

  python tools/plan_memory.py --config configs/mrt_large_v6e256.py
  python tools/tpu/tpu.py create mrt-large256 --type v6e-256 --reserved --queued
  python tools/tpu/tpu.py distill mrt-large256 --type v6e-256 \
      --config configs/mrt_large_v6e256.py --workdir /mnt/mrt/runs/l256 \
      --config.magenta_rt.teacher=/mnt/mrt/teachers/large
  # which runs, on each worker:
  mrt-distill distill --config configs/mrt_large_v6e256.py \
      --workdir /mnt/mrt/runs/l256 \
      --config.magenta_rt.teacher=/mnt/mrt/teachers/large

`configs/mrt_large_v6e.py` scaled out 4x: mesh (data 32, fsdp 8, tensor 1),
batch 1024 (4 examples per chip, as on v6e-64). 16 teacher sessions per
host (1024 in flight, one per train example of a step; v6e-64's 64 per host
would be 4096), so the decoding chip is no longer the busiest: planned peak
14.8 GiB of 32 per chip (docs/scale_out.md).
"""

from __future__ import annotations

import ml_collections

from mrt_distill.configs import mrt_large_v6e


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg:
    raise ValueError(f"configs/mrt_large_v6e256.py takes no arg, got {arg!r}")
  c = mrt_large_v6e.get_config()
  c.name = "mrt_large_v6e256"
  c.train.batch = 1024
  c.rollout.batch = 16
  c.mesh_shape = (32, 8, 1)
  return c
