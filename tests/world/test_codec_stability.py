"""The levers for stable codec tokens: bar-grid tempi, coarse levels that see
only the shift-trained latent dimensions, and a resumable crop stream."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

from mrt_distill.geometry import REFERENCE
from mrt_distill.world import music
from mrt_distill.world.training.codec_codebooks import (kmeans_rvq,
                                                      level_dim_masks)
from mrt_distill.world.training.codec_data import CropSampler
from mrt_distill.world.training.train_codec import TrainHParams, shift_ratio


@pytest.mark.parametrize("style", sorted(music.STYLES))
def test_bar_grid_tempo_gives_whole_frames_per_bar(style):
  fr = REFERENCE.frame_rate
  for seed in range(3):
    piece = music.generate_piece(style, seed, 4.0, bar_grid_hz=fr)
    frames_per_bar = 240.0 * fr / piece.tempo_bpm
    assert abs(frames_per_bar - round(frames_per_bar)) < 1e-9
    lo, hi = music.STYLES[style].tempo_range
    # Within the style's range, up to one frame's worth of rounding.
    assert 240.0 * fr / (240.0 * fr / lo + 1) <= piece.tempo_bpm
    assert piece.tempo_bpm <= 240.0 * fr / (240.0 * fr / hi - 1)


def test_default_tempo_is_a_whole_bpm_as_before():
  # The default draws as it always did: the shipped world's pieces stay.
  piece = music.generate_piece("techno", 3, 4.0)
  assert piece.tempo_bpm == 132.0


def test_coarse_levels_live_in_the_coarse_dimensions():
  rng = np.random.default_rng(0)
  z = rng.standard_normal((600, 8)).astype(np.float32)
  masks = level_dim_masks(4, 8, coarse_levels=2, coarse_dims=3)
  assert masks.tolist()[0] == [1, 1, 1, 0, 0, 0, 0, 0]
  assert masks[2:].all()
  books = kmeans_rvq(z, 4, 16, 4, np.random.default_rng(1), masks)
  assert np.all(books[:2, :, 3:] == 0)
  assert np.abs(books[:2, :, :3]).sum() > 0 and np.abs(books[2:, :, 3:]).sum(
  ) > 0
  # Coarse codes then depend on the coarse dimensions only.
  def level0(x):
    d = np.sum(books[0]**2, -1)[None] - 2 * x @ books[0].T
    return d.argmin(-1)
  z2 = z.copy()
  z2[:, 3:] = rng.standard_normal((600, 5))
  np.testing.assert_array_equal(level0(z), level0(z2))
  assert not level_dim_masks(4, 8, 2, 0).min() == 0  # 0: all levels see all


def test_shift_term_relative_to_temporal_variation_cannot_collapse():
  """A latent z = c + eps m(t) (a constant plus what follows the music)
  whose phase-dependent part is a fixed fraction of m: relative to the
  latents' energy, shrinking eps (a latent that stops following the music)
  lowers the shift term towards 0 -- the collapse the energy form trained
  into the coarse levels; relative to the variation in time it does not.
  And a latent identical under the shift scores 0 either way."""
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  c = rng.normal(size=(2, 1, 8)) * 3.0
  m = rng.normal(size=(2, 20, 8))
  jitter = 0.3 * rng.normal(size=(2, 20, 8))
  ratio = lambda eps, norm: float(shift_ratio(
      jnp.asarray(c + eps * m), jnp.asarray(c + eps * (m + jitter)), norm))
  e1, e01 = ratio(1.0, "energy"), ratio(0.1, "energy")
  t1, t01 = ratio(1.0, "temporal"), ratio(0.1, "temporal")
  assert e01 < 0.02 * e1
  assert abs(t01 / t1 - 1.0) < 1e-3 and t1 > 0.05
  same = jnp.asarray(c + m)
  for norm in ("energy", "temporal"):
    assert float(shift_ratio(same, same, norm)) == 0.0
  with pytest.raises(ValueError, match="shift_norm 'time': give 'energy' or "
                     "'temporal'"):
    shift_ratio(same, same, "time")
  with pytest.raises(ValueError, match="shift_norm 'time'"):
    TrainHParams(shift_norm="time")


def test_crop_stream_resumes_exactly():
  hp = dataclasses.replace(TrainHParams(), pool_size=3, piece_seconds=2.0)
  spf = REFERENCE.samples_per_frame
  a = CropSampler(5, REFERENCE, 2, 10 * spf, hp, ("techno", "funk"),
                  bar_grid_hz=25.0)
  a.next()
  state = a.get_state()
  want = [a.next() for _ in range(3)]
  b = CropSampler(6, REFERENCE, 2, 10 * spf, hp, ("techno", "funk"),
                  bar_grid_hz=25.0)
  b.set_state(state)
  got = [b.next() for _ in range(3)]
  for w, g in zip(want, got):
    np.testing.assert_array_equal(w, g)


def test_fewer_coarse_codes_are_parked_on_code_0_and_never_chosen():
  import jax.numpy as jnp
  from mrt_distill.codec.neural import rvq_encode_jnp
  from mrt_distill.world.training.codec_codebooks import limit_levels
  rng = np.random.default_rng(0)
  z = rng.standard_normal((500, 6)).astype(np.float32)
  masks = level_dim_masks(3, 6, coarse_levels=2, coarse_dims=4, split=True)
  assert masks[0].tolist() == [1, 1, 0, 0, 0, 0]
  assert masks[1].tolist() == [0, 0, 1, 1, 0, 0]
  books = kmeans_rvq(z, 3, 16, 4, np.random.default_rng(1), masks,
                     (4, 4, 16))
  np.testing.assert_array_equal(books[0, 4:], np.repeat(books[0, :1], 12, 0))
  codes, _, _ = rvq_encode_jnp(jnp.asarray(z), jnp.asarray(books))
  codes = np.asarray(codes)
  assert codes[:2].max() == 3 and codes[2].max() > 3
  # A product quantiser: level 1's code depends on dims 2:4 only.
  z2 = z.copy()
  z2[:, :2] += 0.3
  np.testing.assert_array_equal(
      np.asarray(rvq_encode_jnp(jnp.asarray(z2), jnp.asarray(books))[0])[1],
      codes[1])
  # After an EMA step moved them, the parked codes go back on code 0.
  vq = {"books": jnp.asarray(books) + 1.0, "idle": jnp.full((3, 16), 40)}
  code_masks = jnp.arange(16)[None] < jnp.asarray([4, 4, 16])[:, None]
  out = limit_levels(vq, jnp.asarray(masks), code_masks)
  np.testing.assert_array_equal(out["books"][0, 7], out["books"][0, 0])
  assert float(out["books"][0, 0, 3]) == 0.0  # outside level 0's slice
  assert int(out["idle"][0, 9]) == 0 and int(out["idle"][0, 1]) == 40


_RECIPE = (pathlib.Path(__file__).resolve().parents[2] / "mrt_distill" /
           "assets" / "reference" / "build_recipe.json")


@pytest.mark.xfail(not _RECIPE.exists(), strict=True,
                   reason="the shipped codec predates the stable-token recipe "
                          "(issue 19): a 20 ms delay changes 86% of its "
                          "level-0 tokens. Once a world built by "
                          "tools/build_reference_world.py --install is in "
                          "place (build_recipe.json beside the weights) the "
                          "test runs and must pass.")
def test_shipped_codec_coarse_tokens_are_stable_to_a_20ms_shift():
  """Issue 19's threshold: at most 40% of level-0 tokens change when the
  audio is delayed by half a frame (probe_codec_tokens, bar-grid pieces)."""
  from mrt_distill.world.runtime import assets
  from mrt_distill.world.training.codec_tokens import token_stability
  codec = assets.load_codec()
  report = token_stability(codec, pieces=1, seconds=8.0,
                       bar_grid_hz=codec.geometry.frame_rate)
  assert report["mean"]["shift_half"][0] >= 0.6
  assert report["mean"]["lag_bar"][0] > 2 * report["mean"]["chance"][0]
