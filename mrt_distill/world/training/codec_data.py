"""Training and held-out audio for the codec trainer (`train_codec`).

Owns the split of piece seeds: training pieces use seeds in
[0, TRAIN_SEED_LIMIT), held-out evaluation pieces use seeds from
EVAL_SEED_BASE up, so evaluation never hears a training piece. Keeping both
sides of the split in one module keeps that guarantee in one place.

Shape letters as in `train_codec`: B batch, S samples, C channels.
"""

from __future__ import annotations

from typing import Protocol
from typing import Sequence

import numpy as np

from mrt_distill.geometry import Geometry
from mrt_distill.world import music
from mrt_distill.world.music import render as render_lib


class CropSettings(Protocol):
  """What `CropSampler` reads of `train_codec.TrainHParams` (named here so
  that this module does not import its trainer)."""
  gain_db: tuple[float, float]
  piece_seconds: float
  pool_size: int
  refresh_per_step: int


TRAIN_SEED_LIMIT = 1_000_000_000
EVAL_SEED_BASE = 2_000_000_000


class CropSampler:
  """Deterministic stream of (B, S, C) training crops from rendered pieces.

  Args:
    seed: stream seed.
    geometry: sample rate and channels.
    batch: B.
    crop_samples: S (a multiple of samples per frame).
    hp: pool and augmentation settings.
    styles: styles to draw from (all by default).
    bar_grid_hz: `music.generate_piece`'s tempo option (None: whole BPM).
  """

  def __init__(self, seed: int, geometry: Geometry, batch: int,
               crop_samples: int, hp: CropSettings,
               styles: Sequence[str] | None = None,
               bar_grid_hz: float | None = None):
    self._rng = np.random.default_rng([int(seed), 0xC0DEC])
    self._g = geometry
    self._batch = batch
    self._crop = crop_samples
    self._hp = hp
    self._styles = tuple(sorted(music.STYLES) if styles is None else styles)
    # Pieces at least two crops long, so crops of one piece can differ.
    self._piece_seconds = max(hp.piece_seconds,
                              2.0 * crop_samples / geometry.sample_rate)
    self._bar_grid_hz = bar_grid_hz
    # (style, seed) of each pool slot: what `get_state` records, since
    # re-rendering a piece is deterministic and far smaller than its audio.
    self._ids: list[tuple[str, int]] = []
    self._pool = []
    for _ in range(hp.pool_size):
      self._ids.append(self._draw_id())
      self._pool.append(self._render(*self._ids[-1]))
    self._cursor = 0
    self.pieces_rendered = hp.pool_size

  def _draw_id(self) -> tuple[str, int]:
    style = self._styles[int(self._rng.integers(len(self._styles)))]
    return style, int(self._rng.integers(TRAIN_SEED_LIMIT))

  def _render(self, style: str, seed: int) -> np.ndarray:
    piece = music.generate_piece(style, seed, self._piece_seconds,
                                 bar_grid_hz=self._bar_grid_hz)
    return render_lib.render(piece, self._g.sample_rate, self._g.channels)

  def get_state(self) -> dict:
    """JSON: the generator state and the pool's pieces, by (style, seed)."""
    return {"rng": self._rng.bit_generator.state, "cursor": self._cursor,
            "pool": [[s, n] for s, n in self._ids],
            "pieces_rendered": self.pieces_rendered}

  def set_state(self, state: dict) -> None:
    """Continues the stream exactly where `get_state` was taken (the pool
    is re-rendered from its (style, seed) ids)."""
    self._rng.bit_generator.state = state["rng"]
    self._cursor = int(state["cursor"])
    self._ids = [(str(s), int(n)) for s, n in state["pool"]]
    self._pool = [self._render(s, n) for s, n in self._ids]
    self.pieces_rendered = int(state["pieces_rendered"])

  def next(self) -> np.ndarray:
    """The next batch: float32 (B, S, C)."""
    for _ in range(self._hp.refresh_per_step):
      self._ids[self._cursor] = self._draw_id()
      self._pool[self._cursor] = self._render(*self._ids[self._cursor])
      self._cursor = (self._cursor + 1) % len(self._pool)
      self.pieces_rendered += 1
    lo, hi = self._hp.gain_db
    out = np.empty((self._batch, self._crop, self._g.channels), np.float32)
    for b in range(self._batch):
      # Re-draw (near-)silent crops: spectral convergence divides by the
      # target's energy, and silence teaches nothing.
      for _ in range(8):
        audio = self._pool[int(self._rng.integers(len(self._pool)))]
        start = int(self._rng.integers(0, len(audio) - self._crop + 1))
        crop = audio[start:start + self._crop]
        if np.sqrt(np.mean(crop**2)) > 1e-3:
          break
      gain = 10.0**(self._rng.uniform(lo, hi) / 20.0)
      out[b] = crop * gain
    return out


def eval_pieces(geometry: Geometry, seconds: float,
                pieces_per_style: int = 1,
                styles: Sequence[str] | None = None):
  """Held-out audio: list of (style, seed, (S, C) audio), seeds >= base."""
  styles = tuple(sorted(music.STYLES) if styles is None else styles)
  out = []
  for i, style in enumerate(styles):
    for j in range(pieces_per_style):
      seed = EVAL_SEED_BASE + 1000 * i + j
      piece = music.generate_piece(style, seed, seconds)
      out.append((style, seed, render_lib.render(piece, geometry.sample_rate,
                                                 geometry.channels)))
  return out
