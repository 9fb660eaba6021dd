"""Distil Magenta RT v1 *base* on a Cloud TPU v5e-64 slice (16 hosts x 4).

  python tools/plan_memory.py --config configs/mrt_base_v5e64.py
  python tools/tpu/tpu.py create mrt-base64 --type v5litepod-64 --spot
  python tools/tpu/tpu.py distill mrt-base64 --type v5litepod-64 \
      --config configs/mrt_base_v5e64.py --workdir /mnt/mrt/runs/base64 \
      --config.magenta_rt.teacher=/mnt/mrt/teachers/base
  # which runs, on each worker:
  mrt-distill distill --config configs/mrt_base_v5e64.py \
      --workdir /mnt/mrt/runs/base64 \
      --config.magenta_rt.teacher=/mnt/mrt/teachers/base

`configs/mrt_base_v5e.py` scaled out 4x by data parallelism: mesh (data 16,
fsdp 4, tensor 1), batch 256 (4 examples per chip, as on v5e-16), so the
per-chip plan equals v5e-16's and only the step's gradient all-reduce
grows. 16 teacher sessions per host (256 in flight). Planned peak:
docs/scale_out.md.
"""

from __future__ import annotations

import ml_collections

from mrt_distill.configs import mrt_base_v5e


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg:
    raise ValueError(f"configs/mrt_base_v5e64.py takes no arg, got {arg!r}")
  c = mrt_base_v5e.get_config()
  c.name = "mrt_base_v5e64"
  c.train.batch = 256
  c.mesh_shape = (16, 4, 1)
  return c
