"""Distil Magenta RT v1 *large* (762M teacher) on a Cloud TPU v6e-64 pod slice.

  python tools/plan_memory.py --config configs/mrt_large_v6e.py
  # on every worker (16 hosts x 4 chips):
  python tools/tpu/tpu.py distill mrt-large --type v6e-64 \
      --config configs/mrt_large_v6e.py --workdir /mnt/mrt/runs/mrt_large \
      --config.magenta_rt.teacher=/mnt/mrt/teachers/large
  # which runs, on each worker:
  mrt-distill distill --config configs/mrt_large_v6e.py \
      --workdir /mnt/mrt/runs/mrt_large \
      --config.magenta_rt.teacher=/mnt/mrt/teachers/large

Geometry `mrt_v1`. Mesh (data 8, fsdp 8, tensor 1) over 64 chips, batch 256
(4 examples per chip); the 1024-wide backbone is FSDP-sharded along `embed`.
Rollouts: `rollout.batch` sessions per host (loop.py runs one generator per
process), decoded on the host's first chip: 64 (1024 in flight over 16
hosts; a multiple of data x fsdp). The planner puts that chip at 31.8 GiB of
32 (TIGHT; its decode estimate is conservative), the decode compiled ahead
of time for a v6e chip takes 24.3 GiB, so the chip peaks near 25 GiB; the
other chips at 14.8 GiB (docs/scale_out.md). 256 per host would need
113 GiB there.

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
  c.rollout.update(batch=64, replay_capacity=16_384)
  c.train.update(batch=256, steps=30_000)
  c.optim.update(decay_steps=30_000)
  c.mesh_shape = (8, 8, 1)
  return c
