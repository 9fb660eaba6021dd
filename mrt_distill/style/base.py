"""The style model interface (MusicCoCa's role) and a minimal style model.

Shape letters: B batch, N audio samples, C channels, S style embedding width,
L style RVQ levels, V style codebook size.

Reference: reference/magenta_rt_v1.md §5.2. A style model maps text or audio
to one S-dim embedding per item, and `tokenize` quantises an embedding with a
greedy L2 residual VQ of `style_rvq_depth` levels. The LM only sees the first
`style_levels` of those levels (see `mrt_distill.style.mixing.style_tokens`).
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Sequence

import numpy as np

from mrt_distill.codec.base import rvq_quantize
from mrt_distill.codec.base import seeded_rng
from mrt_distill.codec.base import seeded_rvq_codebooks
from mrt_distill.geometry import Geometry


class StyleModel(abc.ABC):
  """Text/audio -> style embeddings -> style RVQ codes, for one Geometry."""

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
    """float32 (style_rvq_depth, V, S) quantiser codebooks."""

  @abc.abstractmethod
  def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
    """One text or a list of texts -> float32 (B, S)."""

  @abc.abstractmethod
  def embed_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N,), (N, C) or (B, N, C) float audio -> float32 (B, S)."""

  # ---- shared behaviour -----------------------------------------------------
  def embed(self, x, sample_rate: int | None = None) -> np.ndarray:
    """Dispatch on the input, mirroring MusicCoCa's `embed`.

    Args:
      x: a str -> (S,); a list of str -> (B, S); audio (N,) or (N, C) ->
        (S,); batched audio (B, N, C) -> (B, S).
      sample_rate: required for audio.

    Returns:
      float32 embeddings as above.
    """
    if isinstance(x, str):
      return self.embed_text(x)[0]
    if isinstance(x, (list, tuple)) and x and all(isinstance(t, str)
                                                  for t in x):
      return self.embed_text(list(x))
    if sample_rate is None:
      raise ValueError(
          "embed(audio) needs sample_rate=...; for text pass a str or a list "
          "of str")
    x = np.asarray(x)
    emb = self.embed_audio(x, sample_rate)
    return emb if x.ndim == 3 else emb[0]

  def tokenize(self, embeddings: np.ndarray,
               num_levels: int | None = None) -> np.ndarray:
    """Greedy L2 RVQ: (..., S) -> int32 (..., K), K = style_rvq_depth default.
    """
    g = self._geometry
    emb = np.asarray(embeddings)
    if emb.ndim == 0 or emb.shape[-1] != g.style_embed_dim:
      raise ValueError(
          f"style embeddings of shape {emb.shape}: the last axis must be "
          f"style_embed_dim={g.style_embed_dim} (geometry {g.name!r})")
    if not np.all(np.isfinite(emb)):
      raise ValueError("style embeddings contain NaN or inf")
    k = g.style_rvq_depth if num_levels is None else num_levels
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= g.style_rvq_depth:
      raise ValueError(
          f"num_levels={num_levels!r}: the style quantiser has "
          f"{g.style_rvq_depth} levels; pass 1..{g.style_rvq_depth}")
    return rvq_quantize(emb, self.codebooks, int(k))


# ---- input checks shared by style models -------------------------------------
def check_texts(texts) -> list[str]:
  """A str or a non-empty sequence of non-empty str -> list[str]."""
  if isinstance(texts, str):
    texts = [texts]
  if not isinstance(texts, (list, tuple)) or not texts:
    raise ValueError(
        f"texts must be a str or a non-empty list of str, got {texts!r}")
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise ValueError(f"texts[{i}] is {type(t).__name__}, expected str")
    if not t.strip():
      raise ValueError(
          f"texts[{i}] is empty; drop it, or give it weight 0 in a prompt mix")
  return list(texts)


def check_style_audio(audio, sample_rate) -> np.ndarray:
  """Validate audio and return float32 mono (B, N)."""
  if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
    raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
  audio = np.asarray(audio)
  if not np.issubdtype(audio.dtype, np.floating):
    raise ValueError(
        f"audio has dtype {audio.dtype}: expected float samples in [-1, 1]; "
        "convert integer PCM first, e.g. audio / 32768.0")
  if audio.ndim == 1:
    audio = audio[:, None]
  if audio.ndim == 2:
    if audio.shape[0] == 0:
      raise ValueError(f"audio of shape {audio.shape} has no samples")
    if audio.shape[1] > audio.shape[0]:
      raise ValueError(
          f"audio of shape {audio.shape} has more channels than samples; it "
          "looks like (C, N): transpose to (N, C)")
    audio = audio[None]
  if audio.ndim != 3:
    raise ValueError(
        f"audio of shape {audio.shape}: expected (N,), (N, C) or (B, N, C)")
  if audio.shape[1] == 0:
    raise ValueError(f"audio of shape {audio.shape} has no samples")
  if not np.all(np.isfinite(audio)):
    raise ValueError("audio contains NaN or inf samples")
  # MusicCoCa's default mono strategy is the channel average.
  return audio.mean(axis=2).astype(np.float32)


# ---- a minimal deterministic style model -------------------------------------
_WORD = re.compile(r"\w+", re.UNICODE)
# Log-spaced analysis bands, in Hz, fixed so embeddings do not depend on the
# sample rate for content below both Nyquist frequencies.
_BAND_EDGES_HZ = np.geomspace(40.0, 8000.0, 25)
_FRAME_SECONDS = 0.064


class MinimalStyleModel(StyleModel):
  """Deterministic text and audio embeddings with word-level structure.

  Text: lowercase, split into words; each word gets a fixed random vector
  seeded by sha256(seed, word), and the embedding is the normalised mean of
  the word vectors. Prompts that share words therefore have correlated
  embeddings, and mixing behaves like a bag-of-words blend.

  Audio: channel average, 64 ms Hann frames, log energy in 24 log-spaced
  bands (40 Hz - 8 kHz); features are the time-mean spectral shape (log
  energies minus their band mean) and the time-std of each band, projected
  by a fixed seeded matrix and normalised. A constant bias feature keeps
  silence at a fixed, non-zero embedding.

  All embeddings are unit-norm (MusicCoCa's are not; norms near 28 are
  reported), and the seeded RVQ codebooks are tuned for unit norm.

  Args:
    geometry: the token geometry (style_embed_dim, style_rvq_depth, ...).
    seed: seeds word vectors, audio projection and codebooks.
  """

  def __init__(self, geometry: Geometry, seed: int = 0):
    super().__init__(geometry)
    self._seed = int(seed)
    g = geometry
    self._codebooks = seeded_rvq_codebooks(
        self._seed, "mrt_distill.style.MinimalStyleModel.codebooks",
        g.style_rvq_depth, g.style_codebook_size, g.style_embed_dim, 1.0)
    num_bands = len(_BAND_EDGES_HZ) - 1
    rng = seeded_rng(self._seed, "mrt_distill.style.MinimalStyleModel.audio")
    self._audio_proj = rng.standard_normal(
        (1 + 2 * num_bands, g.style_embed_dim)).astype(np.float32)

  @property
  def codebooks(self) -> np.ndarray:
    return self._codebooks

  def word_vector(self, word: str) -> np.ndarray:
    """The fixed float32 (S,) vector of one (lowercase) word."""
    digest = hashlib.sha256(f"{self._seed}\0{word}".encode("utf-8")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "little"))
    return rng.standard_normal(self._geometry.style_embed_dim).astype(
        np.float32)

  def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
    """One text or a list of texts -> float32 (B, S), unit-norm rows."""
    out = [self._embed_one_text(t) for t in check_texts(texts)]
    return np.stack(out).astype(np.float32)

  def _embed_one_text(self, text: str) -> np.ndarray:
    text = text.strip().lower()
    # A text with no word characters (e.g. "!!!") still gets its own vector.
    words = _WORD.findall(text) or [text]
    vec = np.mean([self.word_vector(w) for w in words], axis=0)
    return _unit(vec)

  def embed_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N,), (N, C) or (B, N, C) audio -> float32 (B, S), unit-norm rows."""
    mono = check_style_audio(audio, sample_rate)
    feats = np.stack([_band_features(x, int(sample_rate)) for x in mono])
    return np.stack([_unit(f @ self._audio_proj) for f in feats]).astype(
        np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
  return v / max(float(np.linalg.norm(v)), 1e-12)


def _band_features(x: np.ndarray, sample_rate: int) -> np.ndarray:
  """Mono (N,) -> (1 + 2 * bands,) [bias, mean spectral shape, band std]."""
  n_fft = max(16, int(round(_FRAME_SECONDS * sample_rate)))
  hop = n_fft // 2
  if len(x) < n_fft:
    x = np.pad(x, (0, n_fft - len(x)))
  num_frames = 1 + (len(x) - n_fft) // hop
  idx = np.arange(n_fft)[None, :] + hop * np.arange(num_frames)[:, None]
  spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=-1)) ** 2
  freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
  band = np.digitize(freqs, _BAND_EDGES_HZ) - 1  # -1 / len: outside bands
  num_bands = len(_BAND_EDGES_HZ) - 1
  log_e = np.zeros((num_frames, num_bands))
  # Bands with no FFT bin (too narrow, or above Nyquist) stay at zero shape
  # and zero spread, so they carry no rate-dependent constant.
  valid = np.array([np.any(band == b) for b in range(num_bands)])
  if not valid.any():  # A sample rate too low to reach 40 Hz - 8 kHz.
    return np.concatenate([[1.0], np.zeros(2 * num_bands)]).astype(np.float32)
  for b in np.flatnonzero(valid):
    log_e[:, b] = np.log(spec[:, band == b].mean(axis=-1) + 1e-10)
  centred = log_e - log_e[:, valid].mean(axis=-1, keepdims=True)
  shape = np.where(valid, centred.mean(axis=0), 0.0)
  spread = np.where(valid, log_e.std(axis=0), 0.0)
  return np.concatenate([[1.0], shape, spread]).astype(np.float32)
