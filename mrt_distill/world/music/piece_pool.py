"""Rendered reference-world pieces as training and held-out data.

Owns the self-refreshing, style-balanced pool of rendered pieces that the
style model and the style judge train on (`PiecePool`, random crops of
`PieceRecord`s), the held-out windows cut from pieces whose seeds
training never draws (`heldout_windows`, seeds from `HELDOUT_SEED_BASE`),
and the ground-truth renders generated audio is compared with
(`ground_truth`, seeds from `GT_SEED_BASE`).
Kept apart from either trainer because both draw from it, and the seed
split between training and held-out pieces must be one shared constant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mrt_distill.codec.base import seeded_rng
from mrt_distill.geometry import REFERENCE
from mrt_distill.world import music
from mrt_distill.world.music import render

# Training draws piece seeds below this (the codec's stream draws from all
# of [0, 1e9): `codec_data.TRAIN_SEED_LIMIT`); held-out pieces use seeds from
# it upwards, so train and held-out pieces never coincide.
HELDOUT_SEED_BASE = 1_000_000_000
# The ground truth that generated audio is judged against (`ground_truth`:
# the world's evaluation, the distill report, `mrt-distill eval`). Above
# every training seed, clear of the held-out (+0) and judges' held-out
# (+100_000) ranges; int32-safe.
GT_SEED_BASE = HELDOUT_SEED_BASE + 200_000


@dataclasses.dataclass(frozen=True)
class PieceRecord:
  """One rendered piece: style index into the pool's styles, descriptors,
  float32 mono audio (N,). (float16 would halve the memory, but its rounding
  noise is a train/test difference the networks can learn.)"""

  style_index: int
  seed: int
  descriptors: tuple[str, ...]
  audio: np.ndarray


class PiecePool:
  """A style-balanced pool of rendered pieces that refreshes itself.

  Args:
    seed: seeds which pieces are generated and which crops are drawn.
    pieces_per_style: pool slots per style.
    piece_seconds: length of each rendered piece (>= crop length).
    sample_rate: render rate.
    styles: styles to draw, in class-index order (default: `music.STYLES`
      in its dict order).
  """

  def __init__(self, seed: int, pieces_per_style: int, piece_seconds: float,
               sample_rate: int = REFERENCE.sample_rate,
               styles: Sequence[str] | None = None):
    self.styles = tuple(styles or music.STYLES)
    self.piece_seconds = float(piece_seconds)
    self.sample_rate = int(sample_rate)
    self._rng = seeded_rng(seed, "mrt_distill.world.PiecePool")
    self._slots: list[list[PieceRecord]] = [
        [self._new(i) for _ in range(pieces_per_style)]
        for i in range(len(self.styles))
    ]
    self.rendered = len(self.styles) * pieces_per_style

  def _new(self, style_index: int) -> PieceRecord:
    seed = int(self._rng.integers(HELDOUT_SEED_BASE))
    style = self.styles[style_index]
    piece = music.generate_piece(style, seed, self.piece_seconds)
    audio = render.render(piece, self.sample_rate, 1)[:, 0]
    return PieceRecord(style_index, seed, piece.descriptors,
                       audio.astype(np.float32))

  def refresh(self, count: int) -> None:
    """Replace `count` random slots by new pieces of the same style."""
    for _ in range(count):
      s = int(self._rng.integers(len(self.styles)))
      k = int(self._rng.integers(len(self._slots[s])))
      self._slots[s][k] = self._new(s)
      self.rendered += 1

  def sample(self, batch: int, crop: int
             ) -> tuple[np.ndarray, np.ndarray, list[PieceRecord]]:
    """A style-balanced batch of random crops.

    Returns:
      float32 audio (B, crop), int32 style indices (B,), the pieces.
    """
    styles = self._rng.integers(len(self.styles), size=batch)
    out = np.empty((batch, crop), np.float32)
    pieces = []
    for b, s in enumerate(styles):
      rec = self._slots[s][int(self._rng.integers(len(self._slots[s])))]
      n = rec.audio.shape[0]
      if n < crop:
        raise ValueError(
            f"pieces of {n} samples are shorter than the {crop}-sample crop")
      start = int(self._rng.integers(n - crop + 1))
      out[b] = rec.audio[start:start + crop]
      pieces.append(rec)
    return out, styles.astype(np.int32), pieces

  @property
  def rng(self) -> np.random.Generator:
    return self._rng


def ground_truth(style: str, pieces: int, seconds: float, sample_rate: int,
                 offset: int = 0, bar_grid_hz: float | None = None
                 ) -> np.ndarray:
  """-> float32 (pieces, S, 1) renders with held-out seeds."""
  return np.stack([
      render.render(music.generate_piece(style, GT_SEED_BASE + offset + i,
                                         seconds, bar_grid_hz=bar_grid_hz),
                    sample_rate, 1)
      for i in range(pieces)])


def heldout_windows(styles: Sequence[str], pieces_per_style: int,
                    piece_seconds: float, window: int, hop: int,
                    sample_rate: int = REFERENCE.sample_rate,
                    seed_base: int = HELDOUT_SEED_BASE
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
  """Windows of held-out pieces (seeds seed_base + k, never used in training).

  Returns:
    float32 windows (W, window), int32 style index (W,), int32 piece index
    (W,) (unique across styles), and each piece's descriptors (indexed by
    piece index), in style-major, piece, time order.
  """
  wins, labels, owners, descriptors = [], [], [], []
  for s, style in enumerate(styles):
    for k in range(pieces_per_style):
      piece = music.generate_piece(style, seed_base + k, piece_seconds)
      audio = render.render(piece, sample_rate, 1)[:, 0]
      descriptors.append(piece.descriptors)
      for start in range(0, audio.shape[0] - window + 1, hop):
        wins.append(audio[start:start + window])
        labels.append(s)
        owners.append(len(descriptors) - 1)
  return (np.stack(wins).astype(np.float32), np.asarray(labels, np.int32),
          np.asarray(owners, np.int32), descriptors)
