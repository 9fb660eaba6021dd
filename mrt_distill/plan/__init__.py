"""Per-chip HBM plan of a distillation run on a Cloud TPU slice.

Why: a pod run that does not fit fails only after the slice is up, every
host has installed the package and the teacher has loaded: minutes of a
paid slice to learn what shapes alone decide. This module computes, from
shapes only (`jax.eval_shape`; nothing is allocated), what each chip holds,
with the same logical-axis rules the train step uses (`axes.DEFAULT_RULES`
through flax), so a 256-chip plan runs on a laptop CPU in seconds.

What a chip holds (`estimate`):

  state, all run long (the donated TrainState, `train_step.py`):
    frozen backbone   the student's copy of the teacher's encoder, temporal
                      stack and token table, f32, sharded by the rules
                      (`embed` over `fsdp`, `mlp`/`heads`/`vocab` over
                      `tensor`);
    LoRA + heads      the trainable params, f32, same rules;
    optimizer         AdamW moments mirror the params' sharding; Adafactor's
                      factored rows/columns are replicated (state_shardings
                      gives a leaf its parameter's sharding only when path
                      and shape match).
  train step, transient (per chip: batch / (data x fsdp) examples):
    batch, the activations saved for the backward pass (the encoder over
    every context chunk, cross-attention K/V for every temporal layer, the
    IMLE denoise over K x B rows and the sigma_hi denoise, the audio-loss
    STFTs), the bf16 weight casts kept for the backward pass, gradients
    and update temporaries. Counts per layer come from the residuals JAX
    saves for the real loss (`jax.ad_checkpoint.saved_residuals`). No remat
    is in the model today; `remat=True` plans per-layer remat (only layer
    inputs saved) as a what-if.
  teacher rollout, transient (between train steps, `teacher/decode.py`):
    the teacher's f32 params (the decode jit receives the host's numpy
    params) plus their bf16 cast (`cast_for_decode`), the encoder pass over
    2 x sessions CFG rows, cross-attention K/V and the temporal and depth
    KV caches, and the sampling logits. On a TPU these are counted in the
    chip's tiled layout (`array_bytes`): a (.., heads, 64) K/V array pads
    its head dim to 128 lanes, 2.7x for base's 12 heads.

  peak = state + max(train step, rollout) on the busiest chip.

Is the student's base shared with the teacher? No: `student.from_teacher`
copies every backbone weight ("the train step donates its state, and the
teacher (still streaming rollouts) must keep its own buffers"), and the
teacher's params stay host-side numpy in `TeacherSystem`. So HBM holds the
student's sharded f32 copy all run long and, while a rollout decodes, the
whole teacher (f32 + its bf16 cast) on each decoding chip. Sharing would save
the frozen row on every chip, but would need the teacher to decode from the
sharded student copy.

Where rollouts run: `loop.py` builds one RolloutGenerator per process with
`rollout.batch` sessions, and `generate_tokens` jits with uncommitted
arguments, so each host decodes all of its sessions on its first chip
(placement "host-device", the default because it is what runs today).
"sharded" plans the alternative: each host spreads its sessions over its
chips (ceil(rollout.batch / chips per host) per chip), every chip holding a
teacher copy.

Checks of the estimate: `compiled_train_memory` compiles the real jitted
train step (CPU devices, or a named TPU topology ahead of time when libtpu is
importable, see `aot_train_memory`) and reads `memory_analysis()`;
tests/test_plan_memory.py keeps the estimate within a stated factor of it.
Measured (estimate / compiled peak): the tiny config 1.13 on one CPU device
and 0.89 on a 2x2x2 CPU mesh; mrt_base_v5e compiled ahead of time for
v5e-16: train step 0.93, state arguments 1.01; teacher decode of 4 / 8 /
16 sessions (CFG: twice the rows) on one v5e chip 1.11 / 1.15 / 1.14, of
large's 8 / 64 on one v6e chip 1.22 / 1.29 (XLA kept only half of its
bf16 weight cast) (docs/scale_out.md).

Modules (everything is re-exported here; import `mrt_distill.plan`):

  accelerators     the slice catalogue: chips, hosts, topology, HBM per chip
  abstract         the train step and its batch from shapes only
                   (`train_setup`, `abstract_batch`)
  bytes_per_chip   bytes of an array (TPU tiles), a sharded array, the
                   TrainState under the train step's shardings
  activations      train step and rollout rows by part (`Dims`)
  chip_plan        `Plan` and `estimate`
  report           `format_table` and `check` (refuses what does not fit)
  compiled         memory_analysis() checks, on CPU devices or ahead of time
                   for a TPU slice

Importing this package is cheap (no jax: every module imports jax and the
model inside its functions): tools/tpu/tpu.py uses the slice catalogue on
machines that only have gcloud.
"""

from __future__ import annotations

from mrt_distill.plan.abstract import TrainSetup, abstract_batch, train_setup
from mrt_distill.plan.accelerators import (CHIPS_PER_HOST_MULTI, GIB, HBM_GIB,
                                           MAX_SINGLE_HOST, SLICE_TOPOLOGY,
                                           TYPE_PREFIX, Accelerator,
                                           UnknownAcceleratorError,
                                           accelerator, accelerator_for_config,
                                           supported_accelerators)
from mrt_distill.plan.activations import (ENCODER_LAYER, ONSET_STACKED,
                                          STFT_HALF, STFT_STACKED,
                                          TEMPORAL_LAYER, Dims, rollout_rows,
                                          train_activation_rows)
from mrt_distill.plan.bytes_per_chip import (array_bytes, shard_bytes,
                                             state_bytes_per_chip, tree_bytes)
from mrt_distill.plan.chip_plan import (FIT_MARGIN, PLACEMENTS,
                                        DoesNotFitError, Plan, estimate)
from mrt_distill.plan.compiled import (AotUnavailable, aot_rollout_memory,
                                       aot_train_memory,
                                       compiled_rollout_memory,
                                       compiled_train_memory,
                                       tpu_topology_devices)
from mrt_distill.plan.report import check, format_table, gib

__all__ = [
    # accelerators
    "GIB", "HBM_GIB", "TYPE_PREFIX", "SLICE_TOPOLOGY", "MAX_SINGLE_HOST",
    "CHIPS_PER_HOST_MULTI", "UnknownAcceleratorError", "Accelerator",
    "supported_accelerators", "accelerator", "accelerator_for_config",
    # abstract
    "TrainSetup", "train_setup", "abstract_batch",
    # bytes_per_chip
    "array_bytes", "shard_bytes", "tree_bytes", "state_bytes_per_chip",
    # activations
    "ENCODER_LAYER", "TEMPORAL_LAYER", "STFT_STACKED", "STFT_HALF",
    "ONSET_STACKED", "Dims", "train_activation_rows", "rollout_rows",
    # chip_plan
    "Plan", "FIT_MARGIN", "PLACEMENTS", "DoesNotFitError", "estimate",
    # report
    "check", "gib", "format_table",
    # compiled
    "compiled_train_memory", "AotUnavailable", "tpu_topology_devices",
    "compiled_rollout_memory", "aot_train_memory", "aot_rollout_memory",
]
