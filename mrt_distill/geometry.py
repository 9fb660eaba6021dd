"""One geometry object: every size of the token world, in one place.

Magenta RT v1 (reference/magenta_rt_v1.md §1): 48 kHz stereo, 25 Hz frames,
2 s chunks (50 frames), 10 s context (250 frames), 4 coarse RVQ levels in the
encoder context, 16 levels generated, 1024-entry codebooks, 6 of 12 MusicCoCa
style levels.

Vocabulary layout (one shared id space for encoder inputs and decoder targets):

  0                      PAD (also decoder BOS)
  1                      MASK (missing context, dropped style)
  codec_offset ...       codec ids: codec_offset + codebook_size * level + code
  ... reserved_block     ids the v1 code labels "unused" (kept for layout parity)
  style_offset ...       style ids: style_offset + style_codebook_size * level + code
  vocab_size             style_offset + style_levels * style_codebook_size
  vocab_size_pretrained  style_offset + style_rvq_depth * style_codebook_size
  embedding rows         vocab_size_pretrained rounded up to vocab_multiple

Tokens are laid out frame-major, level-minor everywhere (`[f0L0, f0L1, ...]`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

PAD_ID = 0
MASK_ID = 1


class GeometryError(ValueError):
  """A geometry is inconsistent, or an array does not fit the geometry."""


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Every size of a Magenta-RT-style token world. Validated on construction."""

  name: str = "mrt_v1"
  # Audio.
  sample_rate: int = 48_000
  channels: int = 2
  frame_rate: int = 25
  # Streaming lengths, in codec frames.
  chunk_frames: int = 50
  context_frames: int = 250
  crossfade_frames: int = 1
  # Codec (SpectroStream in v1).
  codec_rvq_depth: int = 64  # levels the codec has
  context_levels: int = 4  # coarse levels the encoder sees per context frame
  target_levels: int = 16  # levels the decoder writes per frame
  codebook_size: int = 1024
  codec_latent_dim: int = 256
  # Style model (MusicCoCa in v1).
  style_embed_dim: int = 768
  style_rvq_depth: int = 12  # levels the style quantiser has
  style_levels: int = 6  # levels the encoder sees
  style_codebook_size: int = 1024
  # Vocabulary layout.
  codec_offset: int = 2
  reserved_block: int = 1024  # the v1 "unused" ids between codec and style
  vocab_multiple: int = 128

  def __post_init__(self):
    def need(cond, msg):
      if not cond:
        raise GeometryError(f"Geometry {self.name!r}: {msg}")

    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if f.name in ("name",):
        continue
      need(isinstance(v, int) and not isinstance(v, bool),
           f"{f.name} must be an int, got {v!r}")
      if f.name not in ("reserved_block",):
        need(v > 0, f"{f.name} must be > 0, got {v}")
    need(self.reserved_block >= 0, "reserved_block must be >= 0")
    need(self.sample_rate % self.frame_rate == 0,
         f"sample_rate {self.sample_rate} is not a multiple of frame_rate "
         f"{self.frame_rate}: a frame must be a whole number of samples")
    need(self.context_frames % self.chunk_frames == 0,
         f"context_frames {self.context_frames} must be a multiple of "
         f"chunk_frames {self.chunk_frames} (as in Magenta RT)")
    need(self.crossfade_frames <= self.chunk_frames,
         "crossfade_frames must not exceed chunk_frames")
    need(self.context_levels <= self.target_levels,
         f"context_levels {self.context_levels} > target_levels "
         f"{self.target_levels}: the context is made of generated frames")
    need(self.target_levels <= self.codec_rvq_depth,
         f"target_levels {self.target_levels} > codec_rvq_depth "
         f"{self.codec_rvq_depth}")
    need(self.style_levels <= self.style_rvq_depth,
         f"style_levels {self.style_levels} > style_rvq_depth "
         f"{self.style_rvq_depth}")
    need(self.codec_offset >= 2, "codec_offset must leave room for PAD and MASK")

  # ---- derived sizes -------------------------------------------------------
  @property
  def samples_per_frame(self) -> int:
    return self.sample_rate // self.frame_rate

  @property
  def chunk_samples(self) -> int:
    return self.chunk_frames * self.samples_per_frame

  @property
  def context_samples(self) -> int:
    return self.context_frames * self.samples_per_frame

  @property
  def crossfade_samples(self) -> int:
    return self.crossfade_frames * self.samples_per_frame

  @property
  def chunk_seconds(self) -> float:
    return self.chunk_frames / self.frame_rate

  @property
  def context_chunks(self) -> int:
    return self.context_frames // self.chunk_frames

  @property
  def encoder_length(self) -> int:
    """Encoder tokens: context frames x coarse levels, then style tokens."""
    return self.context_frames * self.context_levels + self.style_levels

  @property
  def decoder_length(self) -> int:
    """Decoder tokens per chunk: chunk frames x target levels."""
    return self.chunk_frames * self.target_levels

  @property
  def codec_vocab(self) -> int:
    return self.target_levels * self.codebook_size

  @property
  def style_offset(self) -> int:
    return self.codec_offset + self.codec_vocab + self.reserved_block

  @property
  def vocab_size(self) -> int:
    return self.style_offset + self.style_levels * self.style_codebook_size

  @property
  def vocab_size_pretrained(self) -> int:
    return self.style_offset + self.style_rvq_depth * self.style_codebook_size

  @property
  def padded_vocab_size(self) -> int:
    """Embedding/logit rows (t5x rounds the vocab up to a multiple of 128)."""
    m = self.vocab_multiple
    return int(math.ceil(self.vocab_size_pretrained / m) * m)

  def replace(self, **kw) -> "Geometry":
    return dataclasses.replace(self, **kw)

  def differences(self, other: "Geometry", fields=None) -> list[str]:
    """`field: mine != theirs` for each field (default all but the name)
    where the two geometries disagree."""
    names = fields or [f.name for f in dataclasses.fields(self)
                       if f.name != "name"]
    return [f"{n}: {getattr(self, n)!r} != {getattr(other, n)!r}"
            for n in names if getattr(self, n) != getattr(other, n)]

  def describe(self) -> dict:
    d = dataclasses.asdict(self)
    for p in ("samples_per_frame", "chunk_samples", "encoder_length",
              "decoder_length", "style_offset", "vocab_size",
              "vocab_size_pretrained", "padded_vocab_size"):
      d[p] = getattr(self, p)
    return d

  # ---- RVQ code <-> LM id mappings ----------------------------------------
  def codec_to_ids(self, codes: np.ndarray) -> np.ndarray:
    """RVQ codes (..., K) -> LM ids. Level = position along the last axis.

    Codes must lie in [0, codebook_size) and K <= target_levels.
    """
    codes = np.asarray(codes)
    self._check_codes(codes, self.codebook_size, self.target_levels, "codec")
    lv = np.arange(codes.shape[-1], dtype=np.int64)
    return (self.codec_offset + self.codebook_size * lv + codes).astype(np.int32)

  def ids_to_codec(self, ids: np.ndarray, safe: bool = True,
                   warn: bool = True) -> np.ndarray:
    """LM ids (..., K) -> RVQ codes (..., K).

    safe=True raises when an id is outside its level's range. safe=False folds
    it into the level (subtract offset, clamp at 0, mod codebook size) as v1
    generation does, so a sampled PAD/MASK becomes code 0; it warns unless
    warn=False (streaming callers count strays with `count_stray_ids`).
    """
    ids = np.asarray(ids)
    return self._ids_to_codes(ids, self.codec_offset, self.codebook_size,
                              self.target_levels, safe, "codec", warn)

  def count_stray_ids(self, ids: np.ndarray) -> int:
    """Number of codec ids (..., K) outside their level's range."""
    ids = np.asarray(ids, np.int64)
    rel = ids - self.codec_offset - self.codebook_size * np.arange(
        ids.shape[-1])
    return int(((rel < 0) | (rel >= self.codebook_size)).sum())

  def style_to_ids(self, codes: np.ndarray) -> np.ndarray:
    """Style RVQ codes (..., L) -> LM ids, L <= style_rvq_depth."""
    codes = np.asarray(codes)
    self._check_codes(codes, self.style_codebook_size, self.style_rvq_depth,
                      "style")
    lv = np.arange(codes.shape[-1], dtype=np.int64)
    return (self.style_offset + self.style_codebook_size * lv + codes).astype(
        np.int32)

  def ids_to_style(self, ids: np.ndarray, safe: bool = True) -> np.ndarray:
    ids = np.asarray(ids)
    return self._ids_to_codes(ids, self.style_offset, self.style_codebook_size,
                              self.style_rvq_depth, safe, "style")

  def _check_codes(self, codes, size, max_levels, what):
    if not np.issubdtype(codes.dtype, np.integer):
      raise GeometryError(
          f"{what} codes must be integers, got dtype {codes.dtype}")
    if codes.ndim == 0 or codes.shape[-1] > max_levels:
      raise GeometryError(
          f"{what} codes of shape {codes.shape}: the last axis holds RVQ "
          f"levels and must be 1..{max_levels} long for geometry {self.name!r}")
    if codes.size and (codes.min() < 0 or codes.max() >= size):
      bad = codes[(codes < 0) | (codes >= size)]
      raise GeometryError(
          f"{what} codes out of range [0, {size}): found {bad.ravel()[:5]} "
          f"(geometry {self.name!r}; -1 marks 'no audio' only in stream state)")

  def _ids_to_codes(self, ids, offset, size, max_levels, safe, what,
                    warn=True):
    if not np.issubdtype(ids.dtype, np.integer):
      raise GeometryError(f"{what} ids must be integers, got {ids.dtype}")
    if ids.ndim == 0 or ids.shape[-1] > max_levels:
      raise GeometryError(
          f"{what} ids of shape {ids.shape}: the last axis must hold "
          f"1..{max_levels} levels")
    lv = np.arange(ids.shape[-1], dtype=np.int64)
    rel = ids.astype(np.int64) - offset - size * lv
    bad = (rel < 0) | (rel >= size)
    if bad.any():
      msg = (f"{int(bad.sum())} {what} id(s) lie outside their level's range "
             f"(first: {ids[bad].ravel()[:5]}); offset {offset}, "
             f"{size} codes per level")
      if safe:
        raise GeometryError(msg)
      if warn:
        warnings.warn(msg + "; folded into range", stacklevel=3)
    codes = np.maximum(ids.astype(np.int64) - offset, 0) % size
    return codes.astype(np.int32)


MRT_V1 = Geometry()

# Small geometry for unit tests: every structural feature of v1 (masking,
# levels, offsets, reserved block, rounding) at toy sizes.
TINY = Geometry(
    name="tiny",
    sample_rate=8000,
    channels=1,
    frame_rate=25,
    chunk_frames=4,
    context_frames=8,
    crossfade_frames=1,
    codec_rvq_depth=6,
    context_levels=2,
    target_levels=4,
    codebook_size=16,
    codec_latent_dim=8,
    style_embed_dim=12,
    style_rvq_depth=4,
    style_levels=2,
    style_codebook_size=16,
    reserved_block=16,
    vocab_multiple=128,
)

# The reference world (issue: trained small codec / style model / teacher):
# Magenta RT's structure at a size a 2-core CPU can train and stream. 16 kHz
# mono, 25 Hz frames, 1 s chunks, 4 s context (4 chunks), 2 coarse levels of
# context, 8 levels generated, 256-entry codebooks, 2 of 4 style levels.
REFERENCE = Geometry(
    name="reference",
    sample_rate=16_000,
    channels=1,
    frame_rate=25,
    chunk_frames=25,
    context_frames=100,
    crossfade_frames=1,
    codec_rvq_depth=12,
    context_levels=2,
    target_levels=4,
    codebook_size=256,
    codec_latent_dim=64,
    style_embed_dim=128,
    style_rvq_depth=4,
    style_levels=2,
    style_codebook_size=64,
    reserved_block=256,
    vocab_multiple=128,
)

GEOMETRIES = {"mrt_v1": MRT_V1, "tiny": TINY, "reference": REFERENCE}


def get_geometry(name: str) -> Geometry:
  try:
    return GEOMETRIES[name]
  except KeyError:
    raise GeometryError(
        f"unknown geometry {name!r}; known: {sorted(GEOMETRIES)}") from None


def register_geometry(geom: Geometry) -> Geometry:
  GEOMETRIES[geom.name] = geom
  return geom
