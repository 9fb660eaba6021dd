"""The per-chip `Plan` and `estimate`, which assembles it from the state,
train step and rollout rows of a config on a slice.
"""

from __future__ import annotations

import dataclasses
import math

from mrt_distill.plan.abstract import TrainSetup, abstract_batch, train_setup
from mrt_distill.plan.accelerators import Accelerator, accelerator_for_config
from mrt_distill.plan.activations import (Dims, rollout_rows,
                                          train_activation_rows)
from mrt_distill.plan.bytes_per_chip import (array_bytes,
                                             state_bytes_per_chip, tree_bytes)


# ---- the plan ----------------------------------------------------------------
@dataclasses.dataclass
class Plan:
  config_name: str
  accelerator: Accelerator | None  # None: a plain device count (CPU checks)
  mesh: dict[str, int]
  hbm_bytes: int
  batch_per_chip: int
  rollout_placement: str
  rollout_sessions_per_chip: int
  remat: bool
  state: dict[str, int]
  train: dict[str, int]
  rollout: dict[str, int]
  host_ram: dict[str, int]
  notes: list[str]
  today_rollout_peak: int | None = None  # host-device peak, when not chosen
  setup: TrainSetup | None = dataclasses.field(default=None, repr=False)

  @property
  def state_total(self) -> int:
    return sum(self.state.values())

  @property
  def train_total(self) -> int:
    return sum(self.train.values())

  @property
  def rollout_total(self) -> int:
    return sum(self.rollout.values())

  @property
  def train_peak(self) -> int:
    """What the compiled train step needs: state + batch + activations."""
    return self.state_total + self.train_total

  @property
  def peak(self) -> int:
    return self.state_total + max(self.train_total, self.rollout_total)

  @property
  def fraction(self) -> float:
    return self.peak / self.hbm_bytes

  @property
  def verdict(self) -> str:
    if self.fraction > 1.0:
      return "DOES NOT FIT"
    if self.fraction > FIT_MARGIN:
      return "TIGHT"
    return "FITS"

  @property
  def fits(self) -> bool:
    return self.fraction <= 1.0

  def to_dict(self) -> dict:
    return {
        "config": self.config_name,
        "accelerator": self.accelerator.name if self.accelerator else None,
        "mesh": self.mesh, "hbm_bytes": self.hbm_bytes,
        "batch_per_chip": self.batch_per_chip,
        "rollout_placement": self.rollout_placement,
        "rollout_sessions_per_chip": self.rollout_sessions_per_chip,
        "remat": self.remat, "state": self.state, "train": self.train,
        "rollout": self.rollout, "host_ram": self.host_ram,
        "state_total": self.state_total, "train_total": self.train_total,
        "rollout_total": self.rollout_total, "peak": self.peak,
        "fraction": self.fraction, "verdict": self.verdict,
        "today_rollout_peak": self.today_rollout_peak, "notes": self.notes,
    }


# Peak above this fraction of HBM is TIGHT: the TPU runtime reserves some
# HBM and XLA's buffer assignment fragments the rest.
FIT_MARGIN = 0.9
PLACEMENTS = ("host-device", "sharded")


class DoesNotFitError(RuntimeError):
  """A plan whose peak exceeds the chip's HBM (message has the numbers)."""


def _mesh_dict(mesh_shape) -> dict[str, int]:
  from mrt_distill import axes
  return dict(zip(axes.MESH_AXES, (int(x) for x in mesh_shape)))


def estimate(config, accel: Accelerator | None = None, *,
             mesh_shape=None, hbm_bytes: int | None = None,
             remat: bool = False, rollout_placement: str = "host-device",
             setup: TrainSetup | None = None) -> Plan:
  """The per-chip plan of `config` on `accel` (default: from the config).

  mesh_shape: (data, fsdp, tensor), default config.mesh_shape (data = -1
  takes the remaining chips). hbm_bytes: overrides the chip's HBM (CPU
  checks). rollout_placement: "host-device" (loop.py today) or "sharded".
  """
  import jax

  from mrt_distill.teacher.model import abstract_params

  if rollout_placement not in PLACEMENTS:
    raise ValueError(f"rollout_placement {rollout_placement!r}: use one of "
                     f"{PLACEMENTS}")
  if accel is None and hbm_bytes is None:
    accel = accelerator_for_config(config)
  shape = [int(x) for x in (config.mesh_shape if mesh_shape is None
                            else mesh_shape)]
  chips = accel.chips if accel is not None else None
  if shape[0] == -1:
    if chips is None:
      raise ValueError("mesh data = -1 needs an accelerator to size it")
    shape[0] = chips // (shape[1] * shape[2])
  mesh = _mesh_dict(shape)
  n_mesh = math.prod(shape)
  if chips is not None and n_mesh != chips:
    raise ValueError(
        f"config {config.name!r}: mesh {tuple(shape)} has {n_mesh} devices "
        f"but {accel.name} has {chips} chips; set config.mesh_shape to a "
        f"shape whose product is {chips}")
  setup = setup or train_setup(config)
  dims = Dims.of(setup.student_cfg)
  shards = mesh["data"] * mesh["fsdp"]
  batch = int(config.train.batch)
  if batch % shards:
    raise ValueError(f"train.batch {batch} does not divide over data x fsdp "
                     f"= {shards}")
  b = batch // shards
  # TPU tile padding (`array_bytes`) is counted where the ahead-of-time
  # compiles showed it: the rollout's decode buffers (K/V caches, attention
  # maps). In the train step XLA lays intermediates out freely and the
  # compiled v5e-16 step matched plain byte counts (0.93x), as did the
  # state arguments (1.01x); see docs/scale_out.md.
  tiled = accel is not None
  state = state_bytes_per_chip(setup, mesh)
  state_rows = {
      "frozen backbone (student's f32 copy of the teacher)": state["frozen"],
      "LoRA + heads (trainable, f32)": state["trainable"],
      f"optimizer state ({config.optim.name})": state["optimizer"],
  }
  from mrt_distill.distill.losses import LossWeights
  w = LossWeights(**config.losses.to_dict())
  train = {"batch": tree_bytes(abstract_batch(setup, b))}
  # A token head trains one pass on cross-entropy alone (train_step.py).
  token = setup.student_cfg.token_head
  train.update(train_activation_rows(
      dims, b, imle=1 if token else int(config.student.imle_samples),
      tensor=mesh["tensor"],
      denoise_grad=not token and bool(w.latent or w.consistency),
      spectral=not token and bool(w.spectral),
      onset=not token and bool(w.onset), remat=remat, tiled=False))
  if token:  # logits, their log-softmax and its gradient, f32
    g = setup.student_cfg.geometry
    train["token logits (f32)"] = 3 * array_bytes(
        (b, g.chunk_frames, g.target_levels * g.codebook_size), 4, False)
  if dims.act_bytes < 4:
    # Each frozen kernel's bf16 cast is kept for the backward pass (the
    # LoRA input gradient needs W). Counted gathered (whole kernels, split
    # only by `tensor`): XLA casts after the FSDP all-gather.
    train["bf16 weight casts kept for backward"] = sum(
        array_bytes((x.shape[0], -(-x.shape[1] // mesh["tensor"])),
                    dims.act_bytes, False) for p, x in
        jax.tree_util.tree_flatten_with_path(setup.state.frozen)[0]
        if getattr(p[-1], "key", None) == "kernel")
  # Gradients of the trainable params plus the optimizer's update
  # temporaries (about two more trainable-sized trees).
  train["gradients + update temporaries"] = 3 * state["trainable"]

  t_abs, _ = abstract_params(setup.teacher_cfg)
  t_params = sum(math.prod(x.shape) for x in jax.tree.leaves(t_abs))
  t_bytes = sum(array_bytes(x.shape, 4, tiled) for x in jax.tree.leaves(t_abs))
  cfg_rows = float(config.sampling.guidance_weight) > 0
  per_host = int(config.rollout.batch)
  cph = accel.chips_per_host if accel is not None else n_mesh

  def sessions(placement):
    return per_host if placement == "host-device" else -(-per_host // cph)

  def roll(placement):
    return rollout_rows(dims, sessions(placement), teacher_params=t_bytes,
                        cfg_rows=cfg_rows, tiled=tiled)

  rollout = roll(rollout_placement)
  g = setup.student_cfg.geometry
  example = (4 * dims.ctx_chunks * dims.chunk_tokens + 4 * g.style_levels
             + 4 * g.style_embed_dim + 4 * g.chunk_frames * g.target_levels
             + 4 * g.chunk_frames * g.codec_latent_dim + 4)
  host_ram = {
      "replay buffer": int(config.rollout.replay_capacity) * example,
      "teacher params (numpy f32)": t_params * 4,
  }
  notes = [
      f"activations: bf16={dims.act_bytes == 2}, remat="
      f"{'per layer (what-if)' if remat else 'none (the model has none)'}",
      f"rollout: {rollout_placement}, {sessions(rollout_placement)} sessions "
      f"({'x2 CFG rows' if cfg_rows else 'no CFG'}) per decoding chip",
  ]
  if setup.codec_note:
    notes.append(setup.codec_note)
  plan = Plan(str(config.name), accel, mesh,
              hbm_bytes if hbm_bytes is not None else accel.hbm_bytes, b,
              rollout_placement, sessions(rollout_placement), remat,
              state_rows, train, rollout, host_ram, notes, setup=setup)
  if rollout_placement != "host-device":
    plan.today_rollout_peak = plan.state_total + max(
        plan.train_total, sum(roll("host-device").values()))
  return plan
