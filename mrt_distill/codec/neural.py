"""A small trained RVQ neural audio codec (SpectroStream's role, ref. world).

Shape letters: B batch, S samples, C channels, T codec frames, N STFT frames
(N = r * T), F STFT bins, K or L RVQ levels, V codebook size, D latent width,
H hidden width.

Architecture (hybrid: fixed STFT front/back end, learned frame-domain nets):

  encoder   audio (B, S, C)
            -> STFT, Hann window W = 4 hops, hop = spf / r (640 / 160 / 4 at
               REFERENCE: 10 ms hops, 40 ms windows, F = 321 bins)
            -> per STFT frame: [log|X|, X / |X|^0.7] of every channel (3 F C)
            -> Dense(H_fine) + LayerNorm + fine ConvNeXt blocks at 100 Hz
            -> fold r STFT frames into one codec frame -> Dense(H)
            -> coarse ConvNeXt blocks at 25 Hz -> LayerNorm -> Dense(D)
            -> latents (B, T, D)
  RVQ       12 levels x 256 codes x 64 dims, greedy L2, learned with k-means
            init + EMA updates + dead-code restarts, quantizer dropout, and a
            straight-through estimator (training code:
            `world/training/train_codec.py`).
  decoder   latents (B, T, D) -> Dense(H) -> coarse ConvNeXt blocks at 25 Hz
            -> LayerNorm -> Dense(r H_fine) -> unfold to r STFT frames
            -> fine ConvNeXt blocks at 100 Hz -> LayerNorm
            -> Dense(2 F C): log-magnitude and phase (Vocos-style)
            -> inverse STFT (irfft, Hann synthesis window, overlap-add,
               window-envelope normalisation) -> audio (B, T * spf, C)

Why this shape: the expensive layers run at 25 Hz and 100 Hz frame rates
(matmuls), never at 16 kHz, so a 2-core CPU trains it in minutes, and the
decoder is a pure jnp function of the continuous latents (Dense, depthwise
conv, exp/cos/sin, irfft, overlap-add), so spectral losses differentiate
through it.

Receptive field of the decoder (for streaming): each coarse block's depthwise
conv sees +-(coarse_kernel // 2) codec frames, each fine block's sees
+-(fine_kernel // 2) STFT frames, and overlap-add spreads a STFT frame over
+-(W - hop) / 2 samples. With the default config (3 coarse blocks of kernel
3, 2 fine blocks of kernel 7, W = 640, hop = 160) a sample depends on latents
within +-3 codec frames (coarse) + 6 STFT frames (1.5 codec frames, fine) +
240 samples: about +-5 codec frames (200 ms). Chunk-by-chunk decoding sees
zero padding instead of neighbours at chunk edges; the 1-frame crossfade of
the streaming loop hides the seam, and decoding a chunk with a few frames of
left context removes it. The encoder has the same structure (+-2 coarse
frames + 1 fine block) and only runs on whole inputs.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mrt_distill import checksummed
from mrt_distill.audio_losses import frame_signal
from mrt_distill.audio_losses import hann_window
from mrt_distill.codec.base import Codec
from mrt_distill.codec.base import seeded_rng
from mrt_distill.geometry import Geometry
from mrt_distill.geometry import GeometryError

REBUILD_HINT = checksummed.REFERENCE_REBUILD
FORMAT_VERSION = 1
# The sizes a codec file is bound to; the LM-side ones (context and target
# levels, chunk and context frames, style tokens) may change freely.
CODEC_FIELDS = ("sample_rate", "channels", "frame_rate", "codec_rvq_depth",
                "codebook_size", "codec_latent_dim")
# Magnitudes below this floor carry no audible information; it bounds the log.
_LOG_FLOOR = 1e-5
# exp(7) ~ 1100 is ~17 dB above a full-scale sinusoid's peak bin (~160 for a
# 640-sample Hann window): a cap against blow-ups, never reached by music.
_MAX_LOG_MAG = 7.0


# Missing, unreadable or corrupted weights (the project-wide error).
CodecChecksumError = checksummed.ChecksumError


@dataclasses.dataclass(frozen=True)
class NeuralCodecConfig:
  """Architecture hyperparameters (sizes), saved with the weights.

  Attributes:
    hops_per_frame: r, STFT hops per codec frame (hop = spf / r).
    window_hops: STFT window length in hops (W = window_hops * hop; 4 gives
      constant overlap-add for the Hann window).
    enc_fine_dim: encoder width per STFT frame.
    enc_fine_blocks: encoder ConvNeXt blocks at the STFT frame rate.
    enc_dim: encoder width per codec frame.
    enc_blocks: encoder ConvNeXt blocks at the codec frame rate.
    dec_dim: decoder width per codec frame.
    dec_blocks: decoder ConvNeXt blocks at the codec frame rate.
    dec_fine_dim: decoder width per STFT frame.
    dec_fine_blocks: decoder ConvNeXt blocks at the STFT frame rate.
    mlp_ratio: ConvNeXt MLP expansion.
    coarse_kernel: depthwise kernel (codec frames) of the coarse blocks.
    fine_kernel: depthwise kernel (STFT frames) of the fine blocks.
    layer_scale: initial residual branch scale of every block.
    magnitude_dims: the first M latent dimensions come from a second
      encoder that sees the magnitude spectrum only (log|X|, no phase),
      averaged over each frame's hops: a sub-frame delay hardly moves it,
      and it keeps pitch and timbre. 0 (default): one encoder for all D.
      With train_codec's coarse_dims = M the coarse RVQ levels quantise
      these dimensions alone (issue 19's stable coarse tokens).
  """

  hops_per_frame: int = 4
  window_hops: int = 4
  enc_fine_dim: int = 128
  enc_fine_blocks: int = 1
  enc_dim: int = 256
  enc_blocks: int = 2
  dec_dim: int = 256
  dec_blocks: int = 3
  dec_fine_dim: int = 128
  dec_fine_blocks: int = 2
  mlp_ratio: int = 3
  coarse_kernel: int = 3
  fine_kernel: int = 7
  layer_scale: float = 0.25
  magnitude_dims: int = 0

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "NeuralCodecConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown NeuralCodecConfig fields {unknown}")
    return cls(**d)


# A very small config for unit tests: same structure, fast to compile.
TEST_CONFIG = NeuralCodecConfig(
    enc_fine_dim=32, enc_fine_blocks=1, enc_dim=48, enc_blocks=1, dec_dim=48,
    dec_blocks=1, dec_fine_dim=32, dec_fine_blocks=1, mlp_ratio=2)


# ---- STFT front and back end -------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Stft:
  """Frame-aligned STFT: r frames per codec frame, centred inside it.

  STFT frame n (of N = r T) starts at sample n * hop - pad, pad = (W - hop)
  / 2, so its centre n * hop + hop / 2 sits in the middle of its hop and the
  r frames of codec frame t are symmetric inside [t spf, (t + 1) spf).
  """

  spf: int
  hops_per_frame: int
  window_hops: int

  def __post_init__(self):
    if self.spf % self.hops_per_frame:
      raise GeometryError(
          f"samples per frame {self.spf} is not divisible by hops_per_frame "
          f"{self.hops_per_frame}")
    if (self.window_hops - 1) * self.hop % 2:
      raise GeometryError("(window_hops - 1) * hop must be even")

  @property
  def hop(self) -> int:
    return self.spf // self.hops_per_frame

  @property
  def window(self) -> int:
    return self.window_hops * self.hop

  @property
  def bins(self) -> int:
    return self.window // 2 + 1

  @property
  def pad(self) -> int:
    return (self.window - self.hop) // 2

  def analyse(self, x: jax.Array) -> jax.Array:
    """(..., S) with S = T spf -> complex (..., r T, F)."""
    widths = [(0, 0)] * (x.ndim - 1) + [(self.pad, self.pad)]
    xp = jnp.pad(x, widths)
    frames = frame_signal(xp, self.window, self.hop)
    return jnp.fft.rfft(frames * _lift(hann_window(self.window), frames.ndim),
                        axis=-1)

  def synthesise(self, spec: jax.Array) -> jax.Array:
    """complex (..., N, F) -> (..., N * hop): inverse of `analyse`."""
    n = spec.shape[-2]
    win = hann_window(self.window)
    frames = jnp.fft.irfft(spec, n=self.window, axis=-1)
    out = _overlap_add(frames * _lift(win, frames.ndim), self.hop)
    # Divide by the summed squared window (constant 1.5 inside, smaller near
    # the ends) so that synthesise(analyse(x)) == x.
    env = np.asarray(_overlap_add(np.broadcast_to(win * win, (n, self.window)),
                                  self.hop, xp=np))
    env = np.maximum(env, 1e-3).astype(np.float32)
    out = out / _lift(env, out.ndim)
    return out[..., self.pad:self.pad + n * self.hop]


def _lift(v: np.ndarray, ndim: int) -> np.ndarray:
  """(L,) -> (1, ..., 1, L) of rank ndim.

  Explicit ranks: the project runs with jax_numpy_rank_promotion='raise'.
  """
  return np.reshape(v, (1,) * (ndim - 1) + (-1,))


def _overlap_add(frames, hop: int, xp=jnp):
  """(..., N, W) frames, W = r hop, start n * hop -> (..., (N + r - 1) hop)."""
  *lead, n, w = frames.shape
  r = w // hop
  segs = frames.reshape(*lead, n, r, hop)
  out = 0.0
  for k in range(r):
    # Segment k of frame n lands in output segment n + k.
    widths = [(0, 0)] * len(lead) + [(k, r - 1 - k), (0, 0)]
    out = out + xp.pad(segs[..., :, k, :], widths)
  return out.reshape(*lead, (n + r - 1) * hop)


# ---- network blocks ----------------------------------------------------------
def _depthwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'Same' depthwise conv along time: (B, N, H), (k, H) -> (B, N, H).

  Written as k shifted multiply-adds: on CPU this is faster than a grouped
  XLA convolution, and its gradient is as simple.
  """
  k = kernel.shape[0]
  n = x.shape[1]
  xp = jnp.pad(x, ((0, 0), (k // 2, k - 1 - k // 2), (0, 0)))
  kernel = kernel[:, None, None, :]  # (k, 1, 1, H): explicit ranks.
  out = xp[:, 0:n] * kernel[0]
  for j in range(1, k):
    out = out + xp[:, j:j + n] * kernel[j]
  return out


class ConvNeXtBlock(nn.Module):
  """Depthwise conv -> LayerNorm -> MLP, scaled residual: (B, N, H) -> same."""

  kernel: int
  mlp_ratio: int
  layer_scale: float

  @nn.compact
  def __call__(self, x):
    h_dim = x.shape[-1]
    dw = self.param("dw_kernel",
                    nn.initializers.normal(1.0 / math.sqrt(self.kernel)),
                    (self.kernel, h_dim))
    dw_bias = self.param("dw_bias", nn.initializers.zeros, (h_dim,))
    h = _depthwise_conv(x, dw) + dw_bias[None, None, :]
    h = nn.LayerNorm(epsilon=1e-6)(h)
    h = nn.Dense(h_dim * self.mlp_ratio)(h)
    h = nn.gelu(h, approximate=True)
    h = nn.Dense(h_dim)(h)
    gamma = self.param("layer_scale", nn.initializers.constant(
        self.layer_scale), (h_dim,))
    return x + gamma[None, None, :] * h


class CodecModel(nn.Module):
  """Encoder and decoder of the neural codec (no quantiser: see module doc).

  Attributes:
    geometry: sample rate, frame rate, channels and latent width D.
    config: layer sizes.
  """

  geometry: Geometry
  config: NeuralCodecConfig

  def setup(self):
    g, c = self.geometry, self.config
    self.stft = _Stft(g.samples_per_frame, c.hops_per_frame, c.window_hops)

    def blocks(n, kernel, name):
      return [ConvNeXtBlock(kernel, c.mlp_ratio, c.layer_scale,
                            name=f"{name}_{i}") for i in range(n)]

    def encoder(prefix, out_dim):
      # STFT frames -> fine blocks -> fold a frame's hops -> coarse blocks
      # -> out_dim latents (parameter names "<prefix>_in", ...).
      return (nn.Dense(c.enc_fine_dim, name=f"{prefix}_in"),
              nn.LayerNorm(epsilon=1e-6, name=f"{prefix}_in_norm"),
              blocks(c.enc_fine_blocks, c.fine_kernel, f"{prefix}_fine"),
              nn.Dense(c.enc_dim, name=f"{prefix}_fold"),
              blocks(c.enc_blocks, c.coarse_kernel, f"{prefix}_coarse"),
              nn.LayerNorm(epsilon=1e-6, name=f"{prefix}_out_norm"),
              nn.Dense(out_dim, name=f"{prefix}_out"))

    m = c.magnitude_dims
    if not 0 <= m < g.codec_latent_dim:
      raise ValueError(f"magnitude_dims {m}: give 0 (off) up to "
                       f"{g.codec_latent_dim - 1} (the latent has "
                       f"{g.codec_latent_dim} dimensions)")
    self.enc = encoder("enc", g.codec_latent_dim - m)
    if m:  # the phase-free encoder of the first m dimensions
      self.mag = encoder("mag", m)

    self.dec_in = nn.Dense(c.dec_dim, name="dec_in")
    self.dec_coarse = blocks(c.dec_blocks, c.coarse_kernel, "dec_coarse")
    self.dec_unfold_norm = nn.LayerNorm(epsilon=1e-6, name="dec_unfold_norm")
    self.dec_unfold = nn.Dense(c.hops_per_frame * c.dec_fine_dim,
                               name="dec_unfold")
    self.dec_fine = blocks(c.dec_fine_blocks, c.fine_kernel, "dec_fine")
    self.dec_out_norm = nn.LayerNorm(epsilon=1e-6, name="dec_out_norm")
    self.dec_out = nn.Dense(2 * self.stft.bins * g.channels, name="dec_out")

  def __call__(self, audio):
    """Autoencode (init helper): (B, S, C) -> (B, S, C), no quantiser."""
    return self.decode(self.encode(audio))

  def encode(self, audio):
    """(B, T * spf, C) audio -> (B, T, D) continuous latents."""
    b, s, ch = audio.shape
    spf, r = self.geometry.samples_per_frame, self.config.hops_per_frame
    if s % spf:
      raise ValueError(f"encode needs a whole number of frames: {s} samples, "
                       f"{spf} per frame")
    t = s // spf
    spec = self.stft.analyse(jnp.moveaxis(audio, -1, -2))  # (B, C, N, F)
    power = jnp.real(spec)**2 + jnp.imag(spec)**2
    mag = jnp.sqrt(power + 1e-12)
    # log|X| carries loudness and timbre; X / |X|^0.7 = |X|^0.3 e^{i phase}
    # carries phase with a compressed range, so the encoder can see
    # transients and waveform alignment too.
    comp = spec / (mag + _LOG_FLOOR)**0.7
    feats = jnp.concatenate(
        [jnp.log(mag + _LOG_FLOOR), jnp.real(comp), jnp.imag(comp)], axis=-1)
    feats = jnp.moveaxis(feats, 1, 2).reshape(b, t * r, -1)  # (B, N, 3FC)
    z = self._encode_with(self.enc, feats, lambda h: h.reshape(b, t, -1))
    if not self.config.magnitude_dims:
      return z
    logmag = jnp.moveaxis(jnp.log(mag + _LOG_FLOOR), 1, 2).reshape(
        b, t * r, -1)  # (B, N, FC)
    # The mean over the frame's hops, not their concatenation: where in
    # the frame a sound starts moves it little.
    zm = self._encode_with(self.mag, logmag,
                           lambda h: h.reshape(b, t, r, -1).mean(axis=2))
    return jnp.concatenate([zm, z], axis=-1)

  @staticmethod
  def _encode_with(layers, feats_BxNxF, fold):
    """One encoder (`setup`'s `encoder`) on per-hop features (B, N, F);
    fold: (B, N, w) -> (B, T, w or r*w), the hops of each frame together."""
    inp, in_norm, fine, fold_dense, coarse, out_norm, out = layers
    h = in_norm(inp(feats_BxNxF))
    for blk in fine:
      h = blk(h)
    h = fold_dense(fold(h))
    for blk in coarse:
      h = blk(h)
    return out(out_norm(h))

  def decode(self, latents):
    """(B, T, D) latents -> (B, T * spf, C) audio. Pure jnp, differentiable."""
    b, t, _ = latents.shape
    r, ch = self.config.hops_per_frame, self.geometry.channels
    f = self.stft.bins
    h = self.dec_in(latents)
    for blk in self.dec_coarse:
      h = blk(h)
    h = self.dec_unfold(self.dec_unfold_norm(h)).reshape(b, t * r, -1)
    for blk in self.dec_fine:
      h = blk(h)
    out = self.dec_out(self.dec_out_norm(h)).reshape(b, t * r, ch, 2, f)
    log_mag = jnp.minimum(out[..., 0, :], _MAX_LOG_MAG)
    phase = out[..., 1, :]
    # Predicting an unconstrained phase angle and taking cos/sin (as Vocos
    # does) avoids the wrap-around discontinuity of regressing angles.
    mag = jnp.exp(log_mag)
    spec = jax.lax.complex(mag * jnp.cos(phase), mag * jnp.sin(phase))
    audio = self.stft.synthesise(jnp.moveaxis(spec, 2, 1))  # (B, C, S)
    return jnp.moveaxis(audio, 1, 2)


def init_params(geometry: Geometry, config: NeuralCodecConfig | None = None,
                seed: int = 0) -> dict:
  """Freshly initialised model parameters (the 'params' collection)."""
  config = NeuralCodecConfig() if config is None else config
  model = CodecModel(geometry, config)
  dummy = jnp.zeros((1, 2 * geometry.samples_per_frame, geometry.channels))
  # jit: eager init would compile every op separately (seconds on CPU).
  return jax.jit(model.init)(jax.random.PRNGKey(seed), dummy)["params"]


def count_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


# ---- jnp residual vector quantiser (training and eval) -----------------------
def rvq_encode_jnp(z: jax.Array, codebooks: jax.Array):
  """Greedy RVQ through all levels, in jnp (jit-friendly).

  Args:
    z: (N, D) vectors.
    codebooks: (L, V, D).

  Returns:
    codes (L, N) int32, inputs (L, N, D) residual entering each level,
    chosen (L, N, D) codeword picked at each level.
  """

  def level(residual, book):
    # |r - c|^2 = |r|^2 - 2 r.c + |c|^2; |r|^2 is the same for every code.
    dist = jnp.sum(book * book, -1)[None, :] - 2.0 * residual @ book.T
    idx = jnp.argmin(dist, axis=-1).astype(jnp.int32)
    chosen = book[idx]
    return residual - chosen, (idx, residual, chosen)

  _, (codes, inputs, chosen) = jax.lax.scan(level, z, codebooks)
  return codes, inputs, chosen


def rvq_partial_sum(chosen: jax.Array, num_levels: jax.Array) -> jax.Array:
  """Sum of the first num_levels[n] codewords: (L, N, D), (N,) -> (N, D)."""
  cum = jnp.cumsum(chosen, axis=0)
  idx = jnp.clip(num_levels - 1, 0, chosen.shape[0] - 1)
  return jnp.take_along_axis(cum, idx[None, :, None], axis=0)[0]


# ---- the Codec ---------------------------------------------------------------
def sidecar_path(path) -> pathlib.Path:
  """Checksum/metadata json of a weights file: X.npz -> X.npz.json."""
  return checksummed.sidecar(path)


def metrics_path(path) -> pathlib.Path:
  """Training/eval metrics json next to the weights: X.npz -> X.metrics.json."""
  return pathlib.Path(path).with_suffix(".metrics.json")


class NeuralCodec(Codec):
  """The trained neural codec behind the `Codec` interface.

  Args:
    geometry: the token geometry (REFERENCE for the shipped weights).
    params: CodecModel parameters (the 'params' collection, nested dict).
    codebooks: float32 (codec_rvq_depth, codebook_size, codec_latent_dim).
    config: the architecture the params belong to (default config if None).
    latent_stats: optional dict with "mean" and "std" (D,) of the encoder's
      latents on training audio, for users that normalise latents.
  """

  def __init__(self, geometry: Geometry, params, codebooks: np.ndarray,
               config: NeuralCodecConfig | None = None,
               latent_stats: Mapping[str, np.ndarray] | None = None):
    super().__init__(geometry)
    g = geometry
    self._config = NeuralCodecConfig() if config is None else config
    codebooks = np.asarray(codebooks, np.float32)
    want = (g.codec_rvq_depth, g.codebook_size, g.codec_latent_dim)
    if codebooks.shape != want:
      raise GeometryError(
          f"codebooks of shape {codebooks.shape}; geometry {g.name!r} needs "
          f"(codec_rvq_depth, codebook_size, codec_latent_dim) = {want}")
    self._codebooks = codebooks
    self._model = CodecModel(g, self._config)
    self._params = jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.float32), params)
    self._check_params()
    self._latent_stats = (None if latent_stats is None else {
        k: np.asarray(v, np.float32) for k, v in latent_stats.items()})
    self._encode_jit = jax.jit(
        lambda p, a: self._model.apply({"params": p}, a,
                                       method=CodecModel.encode))
    # Jitted once per shape; inside an outer jit/grad it is simply inlined.
    self._decode_jit = jax.jit(self.synthesise_with)

  def _check_params(self):
    g = self._geometry
    dummy = jax.ShapeDtypeStruct((1, g.samples_per_frame, g.channels),
                                 jnp.float32)
    ref = jax.eval_shape(
        lambda: self._model.init(jax.random.PRNGKey(0), jnp.zeros(
            dummy.shape))["params"])
    got = jax.tree_util.tree_map(lambda x: tuple(x.shape), self._params)
    want = jax.tree_util.tree_map(lambda x: tuple(x.shape), ref)
    if got != want:
      flat_g = traverse_util.flatten_dict(got, sep="/")
      flat_w = traverse_util.flatten_dict(want, sep="/")
      diff = sorted(k for k in set(flat_g) | set(flat_w)
                    if flat_g.get(k) != flat_w.get(k))
      raise ValueError(
          f"codec params do not fit config {self._config} at geometry "
          f"{g.name!r}; mismatched entries (first 5): {diff[:5]}")

  # ---- Codec interface ------------------------------------------------------
  @property
  def codebooks(self) -> np.ndarray:
    return self._codebooks

  @property
  def params(self):
    return self._params

  @property
  def config(self) -> NeuralCodecConfig:
    return self._config

  @property
  def model(self) -> CodecModel:
    return self._model

  @property
  def latent_stats(self):
    return self._latent_stats

  def _analyse(self, frames: np.ndarray) -> np.ndarray:
    b, t, spf, c = frames.shape
    audio = jnp.asarray(frames, jnp.float32).reshape(b, t * spf, c)
    return np.asarray(self._encode_jit(self._params, audio))

  def _analyse_jnp(self, frames: jax.Array) -> jax.Array:
    b, t, spf, c = frames.shape
    return self._model.apply({"params": self._params},
                             frames.reshape(b, t * spf, c),
                             method=CodecModel.encode)

  def _synthesise(self, latents: jax.Array) -> jax.Array:
    audio = self._decode_jit(self._params, latents)
    b, s, c = audio.shape
    spf = self._geometry.samples_per_frame
    return audio.reshape(b, s // spf, spf, c)

  def synthesise_with(self, params, latents: jax.Array) -> jax.Array:
    """Decoder with explicit params: (B, T, D) -> (B, T * spf, C) jnp audio.

    For callers that want the decoder weights as jit arguments (not baked-in
    constants) or want to differentiate with respect to them.
    """
    return self._model.apply({"params": params}, latents,
                             method=CodecModel.decode)

  # ---- constructors and files -----------------------------------------------
  @classmethod
  def init_random(cls, geometry: Geometry,
                  config: NeuralCodecConfig | None = None,
                  seed: int = 0) -> "NeuralCodec":
    """An untrained codec: random weights, random codebooks (for tests)."""
    params = init_params(geometry, config, seed)
    rng = seeded_rng(seed, "mrt_distill.codec.NeuralCodec.init_random")
    books = rng.standard_normal(
        (geometry.codec_rvq_depth, geometry.codebook_size,
         geometry.codec_latent_dim)).astype(np.float32)
    # Shrink level by level like a trained RVQ, so deeper levels refine.
    books *= (0.5**np.arange(geometry.codec_rvq_depth))[:, None, None]
    return cls(geometry, params, books, config)

  def save(self, path, dtype=np.float16, extra: Mapping[str, Any] | None = None
          ) -> pathlib.Path:
    """Write weights to `path` (.npz) and the sha256 sidecar next to it.

    Uses the project's checksummed format (`mrt_distill.checksummed`).

    Args:
      path: the .npz path; the sidecar goes to `sidecar_path(path)`.
      dtype: storage dtype of the network weights (float16 halves the file;
        codebooks are always float32 so that token assignments do not move).
      extra: json-able info recorded in the sidecar (training summary).

    Returns:
      The .npz path.
    """
    flat = traverse_util.flatten_dict(
        jax.tree_util.tree_map(np.asarray, self._params), sep="/")
    arrays = {f"params/{k}": np.asarray(v, dtype) for k, v in flat.items()}
    arrays["codebooks"] = self._codebooks.astype(np.float32)
    if self._latent_stats is not None:
      for k, v in self._latent_stats.items():
        arrays[f"latent_stats/{k}"] = np.asarray(v, np.float32)
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": "mrt_distill.NeuralCodec",
        "config": self._config.to_dict(),
        "geometry": dataclasses.asdict(self._geometry),
        "weights_dtype": np.dtype(dtype).name,
        "param_count": count_params(self._params),
        "rebuild": REBUILD_HINT,
    }
    if extra:
      meta["extra"] = dict(extra)
    return checksummed.save_npz(path, arrays, meta)

  @classmethod
  def load(cls, path, geometry: Geometry | None = None) -> "NeuralCodec":
    """Load weights written by `save`, checking their sha256 first.

    Args:
      path: the .npz file.
      geometry: expected geometry; default the one stored with the file.

    Raises:
      CodecChecksumError: the file or its sidecar is missing, unreadable or
        does not match the recorded checksum (the message names the file and
        `python tools/build_reference_world.py --install`).
      GeometryError: the stored geometry differs from `geometry`.
    """
    path = pathlib.Path(path)
    arrays, meta = checksummed.load_npz(path, REBUILD_HINT)
    if meta.get("kind") != "mrt_distill.NeuralCodec" or meta.get(
        "format_version") != FORMAT_VERSION:
      raise CodecChecksumError(
          f"{path} is not a NeuralCodec file of format {FORMAT_VERSION} "
          f"(kind {meta.get('kind')!r}, format {meta.get('format_version')}); "
          f"rebuild it with `{REBUILD_HINT}`")
    stored = Geometry(**meta["geometry"])
    if geometry is None:
      geometry = stored
    # Only the codec's own sizes must match (CODEC_FIELDS).
    elif diff := stored.differences(geometry, CODEC_FIELDS):
      raise GeometryError(
          f"{path} was trained for geometry {stored.name!r}, whose codec "
          f"sizes differ from the requested {geometry.name!r} "
          f"({'; '.join(diff)}); rebuild it with `{REBUILD_HINT}`")
    flat = {k[len("params/"):]: v for k, v in arrays.items()
            if k.startswith("params/")}
    params = traverse_util.unflatten_dict(flat, sep="/")
    stats = {k[len("latent_stats/"):]: v for k, v in arrays.items()
             if k.startswith("latent_stats/")} or None
    return cls(geometry, params, arrays["codebooks"],
               NeuralCodecConfig.from_dict(meta["config"]), stats)
