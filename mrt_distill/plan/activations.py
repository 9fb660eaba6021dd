"""Transient memory by part: the train step's saved-for-backward arrays
(`train_activation_rows`) and one decoding chip's teacher rollout
(`rollout_rows`), from the student's sizes (`Dims`).
"""

from __future__ import annotations

import dataclasses

from mrt_distill.plan.bytes_per_chip import _itemsize, array_bytes


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
