"""The audio codec interface (SpectroStream's role) and a minimal codec.

Shape letters: B batch, S audio samples, C channels, T codec frames,
K RVQ levels, V codebook size, D latent width.

Reference: reference/magenta_rt_v1.md §5.1. A codec maps stereo audio at the
geometry's sample rate to one latent vector per frame (T = ceil(S / spf),
spf = samples per frame), quantises each latent with a residual vector
quantiser (RVQ) of `codec_rvq_depth` levels, and decodes the sum of the first
K codebook rows back to audio. Decoding at partial depth is normal: v1 decodes
with K = target_levels.

`decode_latents` is the one path that distillation losses differentiate
through, so every implementation must write it in jax.numpy, with no numpy
round trip and no Python control flow on values.
"""

from __future__ import annotations

import abc
import hashlib
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill.geometry import Geometry, GeometryError

# Rows per distance block in `rvq_quantize`; bounds memory at rows * V floats.
_QUANTIZE_BLOCK_ROWS = 4096


# ---- seeded RVQ helpers (shared with the style model) ------------------------
def seeded_rng(seed: int, purpose: str) -> np.random.Generator:
  """A numpy Generator from (seed, purpose), stable across processes.

  Python's `hash` is salted per process, so the purpose string is hashed with
  hashlib to keep codebooks identical from run to run.
  """
  digest = hashlib.sha256(purpose.encode("utf-8")).digest()
  return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def seeded_rvq_codebooks(seed: int, purpose: str, depth: int, size: int,
                         dim: int, scale: float) -> np.ndarray:
  """Fixed random RVQ codebooks tuned to shrink the residual level by level.

  Codeword 0 of every level is the zero vector, so greedy quantisation can
  always "do nothing" and a level never increases the residual error. The
  other codewords are random directions whose length follows the residual we
  expect at that level: if the best of V random directions has cosine rho with
  the residual, the best step leaves sqrt(1 - rho^2) of it, so level l uses
  length scale * rho * (1 - rho^2)^(l / 2). Each codeword's length is then
  jittered by a log-uniform gain in [1/e, e] so that inputs louder or quieter
  than `scale` still find useful codewords (a little peak accuracy is traded
  for that robustness).

  Args:
    seed: integer seed.
    purpose: a label mixed into the seed so different users get different
      codebooks from the same integer seed.
    depth: number of levels L.
    size: codewords per level V (>= 2).
    dim: vector width D.
    scale: the typical norm of the vectors to be quantised.

  Returns:
    float32 (L, V, D) codebooks.
  """
  if size < 2:
    raise ValueError(f"an RVQ codebook needs >= 2 codewords, got {size}")
  rng = seeded_rng(seed, purpose)
  # float32 draws: v1 sizes (64 x 1023 x 256) take half the time.
  dirs = rng.standard_normal((depth, size - 1, dim), dtype=np.float32)
  dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
  rho = _expected_best_cosine(rng, dirs[0], probes=256)
  shrink = math.sqrt(max(1.0 - rho * rho, 1e-4))
  lengths = scale * rho * shrink ** np.arange(depth)
  gains = np.exp(rng.uniform(-1.0, 1.0, (depth, size - 1)))
  books = np.zeros((depth, size, dim), np.float64)
  books[:, 1:] = dirs * (lengths[:, None] * gains)[..., None]
  return books.astype(np.float32)


def _expected_best_cosine(rng, unit_dirs, probes):
  """Mean over random unit probes of the best cosine with `unit_dirs`."""
  p = rng.standard_normal((probes, unit_dirs.shape[-1]))
  p /= np.linalg.norm(p, axis=-1, keepdims=True)
  best = (p @ unit_dirs.T).max(axis=-1)
  return float(np.clip(best.mean(), 0.05, 0.95))


def rvq_quantize(x: np.ndarray, codebooks: np.ndarray,
                 num_levels: int) -> np.ndarray:
  """Greedy residual VQ: at each level take the L2-nearest codeword.

  Args:
    x: (..., D) float vectors.
    codebooks: (L, V, D) codebooks, L >= num_levels.
    num_levels: K, how many levels to emit.

  Returns:
    int32 (..., K) codes.
  """
  # float32 throughout: float64 copies of v1-sized codebooks (64 x 1024 x
  # 256) would dominate the run time.
  x = np.asarray(x, np.float32)
  lead = x.shape[:-1]
  residual = x.reshape(-1, x.shape[-1]).copy()
  codes = np.zeros((residual.shape[0], num_levels), np.int32)
  for level in range(num_levels):
    book = np.asarray(codebooks[level], np.float32)
    book_sq = np.sum(book * book, axis=-1)
    for start in range(0, residual.shape[0], _QUANTIZE_BLOCK_ROWS):
      r = residual[start:start + _QUANTIZE_BLOCK_ROWS]
      # |r - c|^2 = |r|^2 - 2 r.c + |c|^2; |r|^2 is constant per row.
      dist = book_sq[None, :] - 2.0 * (r @ book.T)
      idx = np.argmin(dist, axis=-1)
      codes[start:start + len(r), level] = idx
      residual[start:start + len(r)] = r - book[idx]
  return codes.reshape(*lead, num_levels)


def rvq_dequantize(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
  """Sum of the chosen codewords of the first K levels: (..., K) -> (..., D)."""
  codes = np.asarray(codes)
  out = np.zeros(codes.shape[:-1] + (codebooks.shape[-1],), np.float64)
  for level in range(codes.shape[-1]):
    out += codebooks[level][codes[..., level]]
  return out.astype(np.float32)


# ---- the interface -----------------------------------------------------------
class Codec(abc.ABC):
  """Audio <-> RVQ codes for one Geometry.

  Subclasses provide `codebooks`, `_analyse` (numpy, framed audio to latents)
  and `_synthesise` (jax.numpy, latents to framed audio). This base class does
  input checking, padding, resampling, quantisation and batching.
  """

  def __init__(self, geometry: Geometry):
    if not isinstance(geometry, Geometry):
      raise TypeError(f"geometry must be a Geometry, got {type(geometry)}")
    self._geometry = geometry

  @property
  def geometry(self) -> Geometry:
    return self._geometry

  # ---- what a subclass provides ---------------------------------------------
  @property
  @abc.abstractmethod
  def codebooks(self) -> np.ndarray:
    """float32 (codec_rvq_depth, V, D) RVQ codebooks."""

  @abc.abstractmethod
  def _analyse(self, frames: np.ndarray) -> np.ndarray:
    """(B, T, spf, C) float32 audio frames -> (B, T, D) float32 latents."""

  @abc.abstractmethod
  def _synthesise(self, latents: jax.Array) -> jax.Array:
    """(B, T, D) latents -> (B, T, spf, C) frames. Must be jnp-traceable."""

  # ---- public API -----------------------------------------------------------
  def encode(self, audio: np.ndarray, sample_rate: int, *,
             resample: bool = False,
             num_levels: int | None = None) -> np.ndarray:
    """Audio -> RVQ codes.

    Args:
      audio: (S, C) or (B, S, C) float audio in [-1, 1].
      sample_rate: rate of `audio` in Hz.
      resample: resample to the geometry's rate when `sample_rate` differs
        (otherwise that is an error).
      num_levels: K levels to emit; default all codec_rvq_depth.

    Returns:
      int32 (T, K) or (B, T, K) codes, T = ceil(S / samples_per_frame).
    """
    latents = self.encode_latents(audio, sample_rate, resample=resample)
    codes = self.quantize(latents, num_levels)
    return codes[0] if np.ndim(audio) == 2 else codes

  def decode(self, codes: np.ndarray) -> np.ndarray:
    """RVQ codes -> audio, from the sum of the first K codebooks.

    Args:
      codes: int (T, K) or (B, T, K), 1 <= K <= codec_rvq_depth.

    Returns:
      float32 (T * spf, C) or (B, T * spf, C) audio.
    """
    codes = np.asarray(codes)
    if codes.ndim not in (2, 3):
      raise ValueError(
          f"codes of shape {codes.shape}: expected (T, K) or (B, T, K) "
          "(frames, then RVQ levels); add or remove a batch axis")
    latents = self.dequantize(codes)
    return np.asarray(self.decode_latents(jnp.asarray(latents)))

  def encode_latents(self, audio: np.ndarray, sample_rate: int | None = None,
                     *, resample: bool = False) -> np.ndarray:
    """Audio -> unquantised latents.

    Args:
      audio: (S, C) or (B, S, C) float audio.
      sample_rate: rate of `audio`; None means the geometry's rate.
      resample: resample when the rate differs (otherwise an error).

    Returns:
      float32 (B, T, D) latents (a batch axis of 1 is added to (S, C) input).
    """
    rate = self._geometry.sample_rate if sample_rate is None else sample_rate
    batch = self._check_audio(audio, rate, resample)
    spf = self._geometry.samples_per_frame
    num_frames = -(-batch.shape[1] // spf)
    # Zero-pad the tail so the last partial frame still gets a latent.
    pad = num_frames * spf - batch.shape[1]
    batch = np.pad(batch, ((0, 0), (0, pad), (0, 0)))
    frames = batch.reshape(batch.shape[0], num_frames, spf, batch.shape[2])
    return np.asarray(self._analyse(frames), np.float32)

  def quantize(self, latents: np.ndarray,
               num_levels: int | None = None) -> np.ndarray:
    """Greedy RVQ: (..., D) latents -> int32 (..., K) codes."""
    latents = np.asarray(latents)
    depth = self._geometry.codec_rvq_depth
    k = depth if num_levels is None else num_levels
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= depth:
      raise ValueError(
          f"num_levels={num_levels!r}: this codec has {depth} RVQ levels "
          f"(geometry {self._geometry.name!r}); pass 1..{depth}")
    width = self.codebooks.shape[-1]
    if latents.ndim == 0 or latents.shape[-1] != width:
      raise ValueError(
          f"latents of shape {latents.shape}: the last axis must be the "
          f"latent width D={width}")
    if not np.all(np.isfinite(latents)):
      raise ValueError("latents contain NaN or inf; check the encoder input")
    return rvq_quantize(latents, self.codebooks, int(k))

  def dequantize(self, codes: np.ndarray) -> np.ndarray:
    """int (..., K) codes -> float32 (..., D) latents (sum of K codewords)."""
    codes = np.asarray(codes)
    # GeometryError is a ValueError; its message names shape and range.
    self._geometry._check_codes(  # pylint: disable=protected-access
        codes, self.codebooks.shape[1], self._geometry.codec_rvq_depth,
        "codec")
    return rvq_dequantize(codes, self.codebooks)

  def decode_latents(self, latents: jax.Array) -> jax.Array:
    """Latents -> audio, as a pure jax function (safe under jit and grad).

    Args:
      latents: (B, T, D) or (T, D) float latents (numpy or jax).

    Returns:
      float32 (B, T * spf, C) or (T * spf, C) jax audio.
    """
    width = self.codebooks.shape[-1]
    if latents.ndim not in (2, 3) or latents.shape[-1] != width:
      raise ValueError(
          f"latents of shape {latents.shape}: expected (B, T, D) or (T, D) "
          f"with D={width}")
    unbatched = latents.ndim == 2
    z = jnp.asarray(latents, jnp.float32)
    z = z[None] if unbatched else z
    frames = self._synthesise(z)
    b, t, spf, c = frames.shape
    audio = frames.reshape(b, t * spf, c)
    return audio[0] if unbatched else audio

  def encode_latents_jnp(self, audio: jax.Array) -> jax.Array:
    """Audio -> unquantised latents as a pure jax function (safe under jit).

    The traceable twin of `encode_latents`, for encoders inside a jitted
    step (audio injection in `serve/chunk_step.py`). No value checks, no
    resampling, no padding: give whole frames at the codec's rate.

    Args:
      audio: float (B, T * spf, C) audio.

    Returns:
      float32 (B, T, D) jax latents (`encode_latents` up to float32
      rounding).
    """
    g = self._geometry
    spf = g.samples_per_frame
    if (audio.ndim != 3 or audio.shape[1] % spf
        or audio.shape[2] != g.channels):
      raise ValueError(
          f"audio of shape {audio.shape}: expected (B, T * {spf}, "
          f"{g.channels}), whole frames of {spf} samples at {g.sample_rate} "
          f"Hz (geometry {g.name!r})")
    b, s, c = audio.shape
    frames = jnp.asarray(audio, jnp.float32).reshape(b, s // spf, spf, c)
    return self._analyse_jnp(frames)

  def _analyse_jnp(self, frames: jax.Array) -> jax.Array:
    """(B, T, spf, C) audio frames -> (B, T, D) latents, jnp-traceable.

    Codecs whose analysis only exists in numpy (or outside jax) keep this
    default; everything else works, only audio injection needs it.
    """
    raise NotImplementedError(
        f"{type(self).__name__} has no traceable encoder (_analyse_jnp), "
        "which audio injection needs; implement it in jax.numpy")

  # ---- input checks ---------------------------------------------------------
  def _check_audio(self, audio, sample_rate, resample) -> np.ndarray:
    """Validate and normalise audio to float32 (B, S, C) at the codec rate."""
    g = self._geometry
    audio = np.asarray(audio)
    if audio.ndim not in (2, 3):
      hint = (" (mono? use audio[:, None])" if audio.ndim == 1 else "")
      raise ValueError(
          f"audio of shape {audio.shape}: expected (S, C) or (B, S, C) "
          f"(samples, channels){hint}")
    if not np.issubdtype(audio.dtype, np.floating):
      raise ValueError(
          f"audio has dtype {audio.dtype}: expected float samples in [-1, 1]; "
          "convert integer PCM first, e.g. audio / 32768.0")
    batch = audio if audio.ndim == 3 else audio[None]
    if batch.shape[1] == 0:
      raise ValueError(f"audio of shape {audio.shape} has no samples")
    batch = self._fix_channels(batch, audio.shape)
    if not np.all(np.isfinite(batch)):
      raise ValueError("audio contains NaN or inf samples")
    if sample_rate != g.sample_rate:
      if not resample:
        raise ValueError(
            f"audio sample rate {sample_rate} Hz does not match the codec's "
            f"{g.sample_rate} Hz (geometry {g.name!r}); resample it first or "
            "pass resample=True")
      batch = _resample(batch, sample_rate, g.sample_rate)
    return batch.astype(np.float32)

  def _fix_channels(self, batch, shape):
    want = self._geometry.channels
    have = batch.shape[2]
    if have == want:
      return batch
    if have == 1:
      warnings.warn(
          f"mono audio given to a {want}-channel codec; duplicating the "
          "channel", stacklevel=4)
      return np.repeat(batch, want, axis=2)
    hint = ""
    if batch.shape[1] == want or batch.shape[1] < have:
      hint = "; it looks like (C, S): transpose to (S, C)"
    raise ValueError(
        f"audio of shape {shape} has {have} channels; the codec expects "
        f"{want} (geometry {self._geometry.name!r}){hint}")


def _resample(batch: np.ndarray, src: int, dst: int) -> np.ndarray:
  """Resample (B, S, C) audio along the sample axis with librosa (soxr)."""
  import librosa  # Imported lazily: it is slow to import and rarely needed.

  if src <= 0:
    raise ValueError(f"sample_rate must be > 0, got {src}")
  return librosa.resample(
      np.asarray(batch, np.float32), orig_sr=src, target_sr=dst, axis=1)


# ---- a minimal real codec ----------------------------------------------------
def dct_basis(num_samples: int, num_coeffs: int) -> np.ndarray:
  """Orthonormal DCT-II basis: (num_samples, num_coeffs), lowest first."""
  n = np.arange(num_samples)[:, None]
  k = np.arange(num_coeffs)[None, :]
  basis = np.cos(np.pi * (n + 0.5) * k / num_samples)
  basis *= np.sqrt(2.0 / num_samples)
  basis[:, 0] /= np.sqrt(2.0)
  return basis


class MinimalCodec(Codec):
  """A small, deterministic, genuinely invertible-on-its-band codec for tests.

  Analysis keeps the lowest DCT coefficients of each frame: latent j is DCT
  coefficient j // C of channel j % C, so D = codec_latent_dim coefficients
  are shared evenly across channels. The projection P (spf * C, D) has
  orthonormal columns, so synthesis is its transpose, and audio inside the
  band (the first ~D / C DCT bins per frame) reconstructs exactly from
  unquantised latents. The RVQ codebooks are fixed and seeded (see
  `seeded_rvq_codebooks`), sized for audio of RMS `audio_rms`.

  Args:
    geometry: the token geometry.
    seed: codebook seed; same seed and geometry give the same codec.
    audio_rms: the loudness the codebooks are tuned for.
  """

  def __init__(self, geometry: Geometry, seed: int = 0,
               audio_rms: float = 0.1):
    super().__init__(geometry)
    g = geometry
    spf, chans, width = g.samples_per_frame, g.channels, g.codec_latent_dim
    if width > spf * chans:
      raise GeometryError(
          f"codec_latent_dim {width} exceeds samples per frame x channels "
          f"({spf} x {chans}); a linear frame codec cannot have more latents "
          "than samples")
    self._seed = seed
    self._projection = self._build_projection(spf, chans, width)
    # Audio of RMS a fully inside the band has latent norm a * sqrt(spf * C).
    scale = audio_rms * math.sqrt(spf * chans)
    self._codebooks = seeded_rvq_codebooks(
        seed, "mrt_distill.codec.MinimalCodec", g.codec_rvq_depth,
        g.codebook_size, width, scale)
    self._synthesis = jnp.asarray(self._projection.T, jnp.float32)
    self._analysis = jnp.asarray(self._projection, jnp.float32)

  @staticmethod
  def _build_projection(spf, chans, width):
    """(spf * C, D) with orthonormal columns; rows index (sample, channel)."""
    per_chan = -(-width // chans)
    basis = dct_basis(spf, per_chan)
    proj = np.zeros((spf, chans, width))
    for j in range(width):
      proj[:, j % chans, j] = basis[:, j // chans]
    return proj.reshape(spf * chans, width)

  @property
  def codebooks(self) -> np.ndarray:
    return self._codebooks

  @property
  def projection(self) -> np.ndarray:
    """float64 (spf * C, D) analysis matrix (its transpose synthesises)."""
    return self._projection

  def _analyse(self, frames):
    b, t, spf, c = frames.shape
    flat = frames.reshape(b, t, spf * c).astype(np.float64)
    return (flat @ self._projection).astype(np.float32)

  def _analyse_jnp(self, frames):
    b, t, spf, c = frames.shape
    return jnp.matmul(frames.reshape(b, t, spf * c), self._analysis,
                      precision=jax.lax.Precision.HIGHEST)

  def _synthesise(self, latents):
    b, t, _ = latents.shape
    spf, c = self._geometry.samples_per_frame, self._geometry.channels
    # HIGHEST keeps float32 accuracy on accelerators that default to TF32.
    flat = jnp.matmul(latents, self._synthesis,
                      precision=jax.lax.Precision.HIGHEST)
    return flat.reshape(b, t, spf, c)
