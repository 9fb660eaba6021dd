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

Importing this module is cheap (no jax): tools/tpu/tpu.py uses the slice
catalogue below on machines that only have gcloud.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

GIB = 2**30

# ---- the slice catalogue -----------------------------------------------------
# HBM per chip: v5e 16 GiB (HBM2), v6e 32 GiB (Cloud TPU docs, "TPU v5e" and
# "TPU v6e" system architecture pages).
HBM_GIB = {"v5e": 16, "v6e": 32}
# gcloud accelerator-type prefixes.
TYPE_PREFIX = {"v5e": "v5litepod", "v6e": "v6e"}
# Slice sizes offered for both (2-D tori, no custom topologies).
SLICE_TOPOLOGY = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8",
                  64: "8x8", 128: "8x16", 256: "16x16"}
# Single-host slices have up to 8 chips; multi-host slices have 4 per host.
MAX_SINGLE_HOST = 8
CHIPS_PER_HOST_MULTI = 4


class UnknownAcceleratorError(ValueError):
  """An accelerator type outside the catalogue."""


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """One Cloud TPU slice type (v5e or v6e)."""
  generation: str  # "v5e" | "v6e"
  chips: int

  @property
  def name(self) -> str:
    """The gcloud --accelerator-type, e.g. v5litepod-16, v6e-64."""
    return f"{TYPE_PREFIX[self.generation]}-{self.chips}"

  @property
  def hosts(self) -> int:
    if self.chips <= MAX_SINGLE_HOST:
      return 1
    return self.chips // CHIPS_PER_HOST_MULTI

  @property
  def chips_per_host(self) -> int:
    return self.chips // self.hosts

  @property
  def topology(self) -> str:
    return SLICE_TOPOLOGY[self.chips]

  @property
  def hbm_bytes(self) -> int:
    return HBM_GIB[self.generation] * GIB


def supported_accelerators() -> list[str]:
  return [Accelerator(g, n).name for g in TYPE_PREFIX for n in SLICE_TOPOLOGY]


def accelerator(name: str) -> Accelerator:
  """'v5litepod-16' | 'v5e-16' | 'v6e-64' -> Accelerator.

  Raises:
    UnknownAcceleratorError: naming every supported type.
  """
  m = re.fullmatch(r"(v5litepod|v5e|v6e)-(\d+)", str(name).strip())
  chips = int(m.group(2)) if m else None
  if m is None or chips not in SLICE_TOPOLOGY:
    raise UnknownAcceleratorError(
        f"unknown TPU accelerator type {name!r}; supported: "
        f"{', '.join(supported_accelerators())} (v5e is spelled v5litepod-N "
        f"by gcloud; v5e-N is accepted here)")
  gen = "v6e" if m.group(1) == "v6e" else "v5e"
  return Accelerator(gen, chips)


def accelerator_for_config(config) -> Accelerator:
  """The slice a pod config targets: the generation named in config.name
  (`..._v5e...` / `..._v6e...`) and prod(mesh_shape) chips.

  Raises:
    UnknownAcceleratorError: the name names no generation, or the mesh is
      not a slice size; pass the type explicitly then.
  """
  m = re.search(r"v5e|v6e", str(config.name))
  chips = int(math.prod(int(x) for x in config.mesh_shape))
  if m is None or chips not in SLICE_TOPOLOGY:
    raise UnknownAcceleratorError(
        f"config {config.name!r} (mesh {tuple(config.mesh_shape)}) names no "
        f"TPU slice; pass one explicitly (--tpu), e.g. v5litepod-16")
  return Accelerator(m.group(0), chips)


# ---- model sizes from a config -----------------------------------------------
def teacher_config_for(config):
  """The teacher architecture a distillation config distils."""
  from mrt_distill.teacher.load import load_teacher_config
  world = config.world
  if world == "magenta_rt":
    return load_teacher_config(config.magenta_rt.gin)
  names = {"reference": "reference", "random-tiny": "tiny"}
  if world not in names:
    raise ValueError(f"world {world!r} has no known teacher architecture; "
                     f"known: {sorted(names) + ['magenta_rt']}")
  return load_teacher_config(names[world])


def codec_for(config, geometry):
  """The codec the train step decodes through. The reference world's codec
  is its trained one. Planning Magenta RT does not load SpectroStream (its
  SavedModels need TensorFlow and are not needed to plan), so its plan uses
  the linear MinimalCodec (the real decoder's activations are not in the
  plan, see the notes)."""
  if config.world == "reference":
    from mrt_distill.world import assets
    return assets.load_codec()
  from mrt_distill.codec.base import MinimalCodec
  return MinimalCodec(geometry)


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


def train_setup(config) -> TrainSetup:
  """The train step of `loop.build`, built from shapes only (no teacher
  weights are read, no world is loaded except the reference codec)."""
  import flax.linen as nn
  import jax

  from mrt_distill.distill import loop
  from mrt_distill.distill import student as S
  from mrt_distill.distill import train_step as T
  from mrt_distill.distill.losses import LossWeights

  tcfg = teacher_config_for(config)
  scfg = loop.student_config(config, tcfg)
  model = S.StudentModel(scfg)
  boxed = jax.eval_shape(model.init, jax.random.key(0), *S._dummy_inputs(scfg))
  trainable, frozen = S.split_params(nn.unbox(boxed["params"]))
  t_specs, f_specs = S.split_params(nn.get_partition_spec(boxed["params"]))
  optimizer = T.make_optimizer(config.optim)
  state = jax.eval_shape(lambda t, f: T.init_state(t, f, optimizer),
                         trainable, frozen)
  codec = codec_for(config, scfg.geometry)
  scaler = S.LatentScaler.for_codec(codec, scfg.noise.sigma_data)
  step = T.make_train_step(
      model, optimizer, codec=codec, scaler=scaler,
      weights=LossWeights(**config.losses.to_dict()),
      style_drop_prob=float(config.student.style_drop_prob),
      imle_samples=int(config.student.imle_samples))
  return TrainSetup(config, tcfg, scfg, model, optimizer, step, state,
                    t_specs, f_specs, codec)


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
  return {k: jax.ShapeDtypeStruct(sh, dt) for k, (sh, dt) in shapes.items()}


# ---- bytes per chip ----------------------------------------------------------
def _itemsize(dtype) -> int:
  import numpy as np
  return int(np.dtype(dtype).itemsize)


def shard_bytes(shape, dtype, mesh_spec, mesh_shape: dict[str, int]) -> int:
  """Bytes one chip holds of an array laid out by a mesh PartitionSpec:
  each dim split over the product of its mesh axes, rounded up (XLA pads
  uneven shards)."""
  spec = tuple(mesh_spec) + (None,) * (len(shape) - len(tuple(mesh_spec)))
  local = []
  for dim, entry in zip(shape, spec):
    names = () if entry is None else (
        (entry,) if isinstance(entry, str) else tuple(entry))
    ways = math.prod(mesh_shape[n] for n in names)
    local.append(-(-int(dim) // ways))
  return array_bytes(local, _itemsize(dtype), tiled=False)


def tree_bytes(tree) -> int:
  import jax
  return sum(math.prod(x.shape) * _itemsize(x.dtype)
             for x in jax.tree.leaves(tree))


def state_bytes_per_chip(setup: TrainSetup, mesh_shape: dict[str, int]
                         ) -> dict[str, int]:
  """{frozen, trainable, optimizer} per chip, with the shardings
  `train_step.state_shardings` gives the real state (an abstract mesh)."""
  import jax
  from jax.sharding import AbstractMesh

  from mrt_distill import axes
  from mrt_distill.distill import train_step as T
  mesh = AbstractMesh(tuple(mesh_shape[a] for a in axes.MESH_AXES),
                      axes.MESH_AXES)
  t_sh = T.param_shardings(setup.trainable_specs, mesh)
  f_sh = T.param_shardings(setup.frozen_specs, mesh)
  sh = T.state_shardings(setup.state, t_sh, f_sh, mesh)

  def per_chip(values, shardings):
    return sum(shard_bytes(v.shape, v.dtype, s.spec, mesh_shape)
               for v, s in zip(jax.tree.leaves(values),
                               jax.tree.leaves(shardings)))

  return {"frozen": per_chip(setup.state.frozen, sh.frozen),
          "trainable": per_chip(setup.state.params, sh.params),
          "optimizer": per_chip(setup.state.opt_state, sh.opt_state)
          + per_chip(setup.state.step, sh.step)}


# ---- activation model --------------------------------------------------------
# Arrays saved for the backward pass, per layer, counted from
# `jax.ad_checkpoint.saved_residuals` of the real loss (base config, bf16),
# as (count, kind): "d" activation-dtype D-wide (norm outputs, residual adds,
# attention output), "d32" f32 D-wide (RMSNorm inputs and the decoder's f32
# residual stream), "qkv" heads-split (.., H, Hd) projections, "f" MLP-wide
# (gated tanh-GELU pieces), "r" LoRA rank-wide (one per adapted dense),
# "map" attention logits / probabilities.
ENCODER_LAYER = {"d": 5, "d32": 4, "qkv": 3, "f": 8, "r": 7, "map": 2}
TEMPORAL_LAYER = {"d": 8, "d32": 6, "qkv": 4, "f": 8, "r": 9, "self_map": 2,
                  "cross_map": 2}
# Per-resolution STFT arrays kept for the spectral loss: 3 on the stacked
# (pred, target) batch and 4 on the prediction half; the onset envelope
# keeps 2 on the stack.
STFT_STACKED, STFT_HALF, ONSET_STACKED = 3, 4, 2


def array_bytes(shape, itemsize: int, tiled: bool) -> int:
  """Bytes of one array. tiled: the TPU's HBM layout, whose two minor dims
  are padded to (32 / itemsize, 128) tiles -- (16, 128) for bf16, (8, 128)
  for f32. It matters here: a (.., heads, 64) K/V array takes 2 to 2.7x
  its size (measured in the ahead-of-time compile of the teacher decode)."""
  dims = [int(x) for x in shape]
  if tiled and dims:
    dims[-1] = -(-dims[-1] // 128) * 128
    if len(dims) > 1:
      sub = 32 // itemsize
      dims[-2] = -(-dims[-2] // sub) * sub
  return math.prod(dims) * itemsize


@dataclasses.dataclass(frozen=True)
class Dims:
  """The sizes the activation model needs (from the student config)."""
  d: int
  heads: int
  head_dim: int
  f: int
  r: int
  enc_layers: int
  dec_layers: int
  depth_layers: int
  ctx_chunks: int  # N
  chunk_tokens: int  # L
  style_tokens: int  # S
  chunk_frames: int  # C
  target_levels: int
  act_bytes: int
  enc_length: int  # the teacher's encoder length
  vocab_rows: int
  audio_samples: int

  @classmethod
  def of(cls, scfg) -> "Dims":
    t, g = scfg.teacher, scfg.geometry
    return cls(t.d_model, t.num_heads, t.head_dim, t.mlp_dim, scfg.lora_rank,
               t.num_encoder_layers, t.num_temporal_layers,
               t.num_depth_layers, scfg.context_chunks, scfg.chunk_tokens,
               g.style_levels, g.chunk_frames, g.target_levels,
               _itemsize(t.dtype), g.encoder_length, t.vocab_rows,
               g.chunk_samples)

  @property
  def cross_length(self) -> int:
    return self.ctx_chunks * self.chunk_tokens + self.style_tokens


def _stft_shape(rows: int, samples: int, n_fft: int, hop: int):
  """(rows, frames, bins) of a centred STFT."""
  return (rows, samples // hop + 1, n_fft // 2 + 1)


def _layer_bytes(counts: dict, n: int, length: int, dims: Dims, tensor: int,
                 tiled: bool, keys: dict[str, int] | None = None) -> int:
  """One layer's saved arrays for n sequences of `length` tokens; keys:
  attention key lengths per map kind."""
  a, h = dims.act_bytes, -(-dims.heads // tensor)
  shapes = {
      "d": ((n, length, dims.d), a), "d32": ((n, length, dims.d), 4),
      "qkv": ((n, length, h, dims.head_dim), a),
      "f": ((n, length, -(-dims.f // tensor)), a),
      "r": ((n, length, dims.r), a),
  }
  for kind, k in (keys or {}).items():
    shapes[kind] = ((n, h, length, k), a)
  return sum(c * array_bytes(*shapes[kind], tiled)
             for kind, c in counts.items())


def train_activation_rows(dims: Dims, b: int, *, imle: int, tensor: int,
                          denoise_grad: bool, spectral: bool, onset: bool,
                          remat: bool, tiled: bool) -> dict[str, int]:
  """Saved-for-backward bytes of one chip's train step, by part.

  b: examples on the chip; imle: K noise draws per example; tensor: the
  mesh's tensor size (splits heads and MLP); denoise_grad: the sigma_hi
  denoise runs (latent or consistency weight set); remat: per-layer remat
  (only each layer's input kept, one layer recomputed at a time); tiled:
  TPU layouts (see `array_bytes`).
  """
  import inspect

  from mrt_distill.distill import losses as L

  a, lx = dims.act_bytes, dims.cross_length
  h = -(-dims.heads // tensor)
  n_chunks, n_l, s = b * dims.ctx_chunks, dims.chunk_tokens, dims.style_tokens
  # Encoder: b*N chunk sequences of L tokens and b style sequences of S.
  enc_layer = (_layer_bytes(ENCODER_LAYER, n_chunks, n_l, dims, tensor, tiled,
                            {"map": n_l})
               + _layer_bytes(ENCODER_LAYER, b, s, dims, tensor, tiled,
                              {"map": s}))
  # Denoise calls with a gradient: IMLE on K*b rows, sigma_hi on b rows.
  rows = b * imle + (b if denoise_grad else 0)
  c = dims.chunk_frames
  dec_layer = _layer_bytes(TEMPORAL_LAYER, rows, c, dims, tensor, tiled,
                           {"self_map": c, "cross_map": lx})
  # Cross K/V per temporal layer: k and v (+ LoRA lows) over the window,
  # plus the K-fold tiled copies IMLE concatenates; the encoded window once.
  kv = lambda n: array_bytes((n, lx, h, dims.head_dim), a, tiled)
  kv_layer = 2 * kv(b) + 2 * array_bytes((b, lx, dims.r), a, tiled) + (
      2 * kv(imle * b) if imle > 1 else 0)
  out = {}
  if remat:
    enc_in = (array_bytes((n_chunks, n_l, dims.d), a, tiled)
              + array_bytes((b, s, dims.d), a, tiled))
    dec_in = array_bytes((rows, c, dims.d), 4, tiled)
    out["encoder (remat: layer inputs + 1 layer)"] = (
        dims.enc_layers * enc_in + enc_layer)
    out["temporal denoise (remat: layer inputs + 1 layer)"] = (
        dims.dec_layers * dec_in + dec_layer)
  else:
    out["encoder (all layers)"] = dims.enc_layers * enc_layer
    out["temporal denoise (all layers)"] = dims.dec_layers * dec_layer
  out["cross K/V (all temporal layers)"] = (
      dims.dec_layers * kv_layer + array_bytes((b, lx, dims.d), a, tiled))
  audio = 0
  n_a = dims.audio_samples
  if spectral:
    for n in L.SPECTRAL_FFT_SIZES:
      audio += (STFT_STACKED * array_bytes(_stft_shape(2 * b, n_a, n, n // 4),
                                           4, tiled)
                + STFT_HALF * array_bytes(_stft_shape(b, n_a, n, n // 4), 4,
                                          tiled))
  if onset:
    sig = inspect.signature(L.onset_envelope).parameters
    audio += ONSET_STACKED * array_bytes(
        _stft_shape(2 * b, n_a, sig["n_fft"].default, sig["hop"].default), 4,
        tiled)
  if spectral or onset:
    audio += 3 * array_bytes((b, n_a), 4, tiled)  # decoded, mono, stacked
  out["audio losses (STFTs)"] = audio
  return {k: int(v) for k, v in out.items()}


def rollout_rows(dims: Dims, sessions: int, *, teacher_params: int,
                 cfg_rows: bool, tiled: bool) -> dict[str, int]:
  """One decoding chip's rollout memory, by part (sessions on that chip).

  teacher_params: bytes of the f32 teacher as the decode receives it.
  """
  a, h, hd = dims.act_bytes, dims.heads, dims.head_dim
  rows = sessions * (2 if cfg_rows else 1)
  le = dims.enc_length
  out = {"teacher params f32 (decode input)": teacher_params}
  if a < 4:
    out["teacher bf16 cast (cast_for_decode)"] = teacher_params * a // 4
  # One encoder layer at a time (no gradient): the f32 input, its norm
  # output, Q/K/V and one attention map.
  encoder = (array_bytes((rows, le, dims.d), 4, tiled)
             + array_bytes((rows, le, dims.d), a, tiled)
             + 3 * array_bytes((rows, le, h, hd), a, tiled)
             + array_bytes((rows, h, le, le), a, tiled))
  encoded = array_bytes((rows, le, dims.d), a, tiled)
  cross = dims.dec_layers * 2 * array_bytes((rows, le, h, hd), a, tiled)
  caches = (dims.dec_layers * 2 * array_bytes((rows, dims.chunk_frames, h, hd),
                                              a, tiled)
            + dims.depth_layers * 2 * array_bytes(
                (rows, dims.target_levels, h, hd), a, tiled))
  # Per depth step: logits, CFG-combined, tempered and top-k keys, f32.
  logits = 4 * array_bytes((rows, dims.vocab_rows), 4, tiled)
  out["cross K/V (all temporal layers)"] = cross
  out["temporal + depth KV caches"] = caches
  out["encoded + max(encoder layer, sampling logits)"] = encoded + max(
      encoder, logits)
  return {k: int(v) for k, v in out.items()}


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
  train.update(train_activation_rows(
      dims, b, imle=int(config.student.imle_samples),
      tensor=mesh["tensor"], denoise_grad=bool(w.latent or w.consistency),
      spectral=bool(w.spectral), onset=bool(w.onset), remat=remat,
      tiled=False))
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
  if config.world == "magenta_rt":
    notes.append("codec: the plan does not load SpectroStream; the audio "
                 "losses are planned through the linear stand-in codec "
                 "(the real decoder's activations are not counted)")
  plan = Plan(str(config.name), accel, mesh,
              hbm_bytes if hbm_bytes is not None else accel.hbm_bytes, b,
              rollout_placement, sessions(rollout_placement), remat,
              state_rows, train, rollout, host_ram, notes, setup=setup)
  if rollout_placement != "host-device":
    plan.today_rollout_peak = plan.state_total + max(
        plan.train_total, sum(roll("host-device").values()))
  return plan


def check(plan: Plan) -> None:
  """Raises DoesNotFitError (with the numbers) when the plan does not fit."""
  if plan.fits:
    return
  big = sorted(list(plan.state.items()) + list(plan.train.items())
               + list(plan.rollout.items()), key=lambda kv: -kv[1])[:3]
  where = ("train step" if plan.train_total >= plan.rollout_total
           else "teacher rollout")
  raise DoesNotFitError(
      f"{plan.config_name} on {_target(plan)}: peak {gib(plan.peak)} per "
      f"chip > {gib(plan.hbm_bytes)} HBM ({100 * plan.fraction:.0f}%), in "
      f"the {where}; largest parts: "
      + ", ".join(f"{k} {gib(v)}" for k, v in big)
      + ". Lower train.batch (per chip now "
      f"{plan.batch_per_chip}) or rollout.batch, raise mesh fsdp, or use a "
      f"larger slice")


def gib(n: float) -> str:
  return f"{n / GIB:.2f} GiB"


def _target(plan: Plan) -> str:
  m = "x".join(str(v) for v in plan.mesh.values())
  return (f"{plan.accelerator.name} (mesh data x fsdp x tensor = {m})"
          if plan.accelerator else f"{math.prod(plan.mesh.values())} devices"
          f" (mesh {m})")


def format_table(plan: Plan) -> str:
  """The plan as a fixed-width table (GiB and MiB per chip)."""
  lines = [f"{plan.config_name} on {_target(plan)}: "
           f"{plan.batch_per_chip} examples per chip, HBM "
           f"{gib(plan.hbm_bytes)} per chip"]
  width = 56

  def row(name, n):
    lines.append(f"  {name:<{width}} {n / GIB:>8.3f} GiB {n / 2**20:>10.1f} "
                 f"MiB")

  def section(title, rows, total):
    lines.append(f" {title}")
    for k, v in rows.items():
      row(k, v)
    row("= " + title.split(" (")[0] + " total", total)

  section("state (all run)", plan.state, plan.state_total)
  section("train step (transient)", plan.train, plan.train_total)
  section("teacher rollout (transient)", plan.rollout, plan.rollout_total)
  lines.append(f" {'peak = state + max(train step, rollout)':<{width + 1}} "
               f"{plan.peak / GIB:>8.3f} GiB {plan.peak / 2**20:>10.1f} MiB "
               f"({100 * plan.fraction:.0f}% of HBM) -> {plan.verdict}")
  if plan.today_rollout_peak is not None:
    lines.append(f" with rollouts as loop.py places them today "
                 f"(host-device): peak {gib(plan.today_rollout_peak)} "
                 f"({100 * plan.today_rollout_peak / plan.hbm_bytes:.0f}%)")
  lines.append(" host RAM per host (not HBM): " + ", ".join(
      f"{k} {gib(v)}" for k, v in plan.host_ram.items()))
  for n in plan.notes:
    lines.append(f" note: {n}")
  return "\n".join(lines)


# ---- compiled memory (checks) ------------------------------------------------
def compiled_train_memory(config, devices, mesh_shape=None,
                          setup: TrainSetup | None = None) -> dict[str, int]:
  """memory_analysis() of the real jitted train step over `devices`
  (CPU devices, or compile-only TPU devices), per device.

  Returns argument/output/alias/temp bytes and peak = argument + output -
  alias + temp.
  """
  import jax

  from mrt_distill.distill import train_step as T
  setup = setup or train_setup(config)
  shape = tuple(int(x) for x in (config.mesh_shape if mesh_shape is None
                                 else mesh_shape))
  mesh = T.make_mesh(shape, devices=devices)
  t_sh = T.param_shardings(setup.trainable_specs, mesh)
  f_sh = T.param_shardings(setup.frozen_specs, mesh)
  state_sh = T.state_shardings(setup.state, t_sh, f_sh, mesh)
  step = T.jit_train_step(setup.step, state_sh, mesh)
  batch = abstract_batch(setup, int(config.train.batch))
  key = jax.ShapeDtypeStruct((2,), jax.numpy.uint32)
  mem = step.lower(setup.state, batch, key).compile().memory_analysis()
  out = {k: int(getattr(mem, f"{k}_size_in_bytes"))
         for k in ("argument", "output", "alias", "temp")}
  out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


class AotUnavailable(RuntimeError):
  """TPU ahead-of-time compilation is not possible here (why in message)."""


def tpu_topology_devices(accel: Accelerator, libtpu_dir: str | None = None):
  """Compile-only devices of a named TPU slice (needs libtpu, no TPU).

  libtpu_dir: a directory holding the `libtpu` package (e.g. from `pip
  install --target DIR libtpu==<the version jax[tpu] pins>`), put on
  sys.path. Run with JAX_PLATFORMS=cpu so jax does not look for a TPU.
  """
  import importlib
  import os
  import sys
  if libtpu_dir:
    if not os.path.isdir(os.path.join(libtpu_dir, "libtpu")):
      raise AotUnavailable(f"{libtpu_dir} holds no libtpu package")
    if libtpu_dir not in sys.path:
      sys.path.insert(0, libtpu_dir)
  try:
    importlib.import_module("libtpu")
  except ImportError:
    raise AotUnavailable(
        "libtpu is not importable, so this host cannot compile for a TPU "
        "topology; install it beside the venv (pip install --target DIR "
        "'libtpu==<version jax[tpu] pins>') and pass --libtpu DIR") from None
  # A compile-only client, not a TPU VM: no GCE metadata queries, and no
  # claim on /tmp/libtpu_lockfile (another compile may hold it).
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  x, y = (int(v) for v in accel.topology.split("x"))
  bounds = (x, y, 1) if accel.hosts == 1 else (2, 2, 1)
  try:
    topo = topologies.get_topology_desc(
        platform="tpu", topology_name=f"{accel.generation}:{accel.topology}",
        chip_config_name="default", chips_per_host_bounds=bounds,
        num_slices=1, wrap=(False, False, False))
  except Exception as e:  # noqa: BLE001 -- libtpu's errors vary by version
    raise AotUnavailable(f"libtpu could not describe {accel.name} "
                         f"({type(e).__name__}: {e})") from None
  return list(topo.devices)


def compiled_rollout_memory(config, device, sessions: int,
                            setup: TrainSetup | None = None) -> dict[str, int]:
  """memory_analysis() of the teacher's chunk decode (`teacher.decode`, the
  jit `generate_tokens` calls) for `sessions` sessions on one device, with
  CFG rows when the config guides. Same keys as `compiled_train_memory`."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import SingleDeviceSharding

  from mrt_distill.teacher import decode
  from mrt_distill.teacher.model import abstract_params
  setup = setup or train_setup(config)
  tcfg = setup.teacher_cfg
  use_cfg = float(config.sampling.guidance_weight) > 0
  rows = sessions * (2 if use_cfg else 1)
  sh = SingleDeviceSharding(device)
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sh)
  params = jax.tree.map(lambda x: spec(x.shape, x.dtype),
                        abstract_params(tcfg)[0])
  args = (params, spec((rows, tcfg.geometry.encoder_length), jnp.int32),
          spec((2,), jnp.uint32), spec((), jnp.float32),
          spec((), jnp.float32), spec((), jnp.int32), spec((), jnp.int32))
  mem = decode._decode_jit.lower(tcfg, use_cfg, True, *args).compile(
      ).memory_analysis()
  out = {k: int(getattr(mem, f"{k}_size_in_bytes"))
         for k in ("argument", "output", "alias", "temp")}
  out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def aot_train_memory(config, accel: Accelerator, libtpu_dir: str | None = None,
                     setup: TrainSetup | None = None) -> dict[str, int]:
  """memory_analysis() of the train step compiled for the named slice."""
  devices = tpu_topology_devices(accel, libtpu_dir)
  return compiled_train_memory(config, devices, setup=setup)


def aot_rollout_memory(config, accel: Accelerator, sessions: int,
                       libtpu_dir: str | None = None,
                       setup: TrainSetup | None = None) -> dict[str, int]:
  """memory_analysis() of the teacher decode compiled for one chip of the
  named slice."""
  device = tpu_topology_devices(accel, libtpu_dir)[0]
  return compiled_rollout_memory(config, device, sessions, setup=setup)
