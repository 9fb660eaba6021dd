"""Tests for mrt_distill.geometry: v1 sizes, id layout and id <-> code maps.

Reference: reference/magenta_rt_v1.md §1.1-§1.2.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from mrt_distill import geometry as geo
from mrt_distill.geometry import (MASK_ID, MRT_V1, PAD_ID, TINY, Geometry,
                                  GeometryError)


# ---- derived sizes -----------------------------------------------------------
def test_mrt_v1_derived_sizes_match_spec():
  g = MRT_V1
  assert g.encoder_length == 1006  # 250 frames x 4 levels + 6 style tokens
  assert g.decoder_length == 800  # 50 frames x 16 levels
  assert g.codec_offset == 2
  assert g.codec_vocab == 16 * 1024
  assert g.style_offset == 17410
  assert g.vocab_size == 23554
  assert g.vocab_size_pretrained == 29698
  assert g.padded_vocab_size == 29824
  assert g.padded_vocab_size % 128 == 0
  assert g.samples_per_frame == 1920
  assert g.chunk_samples == 96000
  assert g.context_samples == 480000
  assert g.crossfade_samples == 1920
  assert g.context_chunks == 5
  assert g.chunk_seconds == pytest.approx(2.0)
  assert (PAD_ID, MASK_ID) == (0, 1)


def test_describe_includes_derived_sizes():
  d = MRT_V1.describe()
  assert d["encoder_length"] == 1006
  assert d["padded_vocab_size"] == 29824
  assert d["style_offset"] == 17410
  assert d["sample_rate"] == 48000


def test_tiny_layout_is_consistent():
  g = TINY
  assert g.encoder_length == g.context_frames * g.context_levels + g.style_levels
  assert g.style_offset == g.codec_offset + g.target_levels * g.codebook_size \
      + g.reserved_block
  assert g.padded_vocab_size >= g.vocab_size_pretrained > g.vocab_size
  assert g.padded_vocab_size % g.vocab_multiple == 0
  assert g.padded_vocab_size - g.vocab_size_pretrained < g.vocab_multiple


def test_padded_vocab_exact_multiple_is_not_rounded_up():
  # style_offset = 2 + 2*8 + 14 = 32, pretrained = 32 + 4*8 = 64.
  g = TINY.replace(name="exact", target_levels=2, context_levels=2,
                   codebook_size=8, reserved_block=14, style_rvq_depth=4,
                   style_levels=2, style_codebook_size=8, vocab_multiple=64)
  assert g.vocab_size_pretrained == 64
  assert g.padded_vocab_size == 64


def test_get_geometry_and_unknown_name():
  assert geo.get_geometry("mrt_v1") is MRT_V1
  assert geo.get_geometry("tiny") is TINY
  with pytest.raises(GeometryError, match="known"):
    geo.get_geometry("nope")


def test_geometry_is_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    MRT_V1.chunk_frames = 10  # type: ignore[misc]


# ---- codec ids ----------------------------------------------------------------
@pytest.mark.parametrize("g", [MRT_V1, TINY], ids=lambda g: g.name)
def test_codec_round_trip(g):
  rng = np.random.default_rng(0)
  codes = rng.integers(0, g.codebook_size, (3, 7, g.target_levels))
  ids = g.codec_to_ids(codes)
  assert ids.dtype == np.int32 and ids.shape == codes.shape
  np.testing.assert_array_equal(g.ids_to_codec(ids), codes)
  # Every id lies in its level's range, below the style block.
  lv = np.arange(g.target_levels)
  lo = g.codec_offset + g.codebook_size * lv
  assert np.all(ids >= lo) and np.all(ids < lo + g.codebook_size)
  assert ids.max() < g.style_offset
  assert g.count_stray_ids(ids) == 0


@pytest.mark.parametrize("g", [MRT_V1, TINY], ids=lambda g: g.name)
def test_codec_round_trip_partial_levels(g):
  rng = np.random.default_rng(1)
  codes = rng.integers(0, g.codebook_size, (5, g.context_levels))
  np.testing.assert_array_equal(g.ids_to_codec(g.codec_to_ids(codes)), codes)


def test_codec_id_formula_exact():
  g = MRT_V1
  codes = np.zeros((16,), np.int64)
  for k in range(16):
    for c in (0, 1, 511, 1023):
      codes[:] = 0
      codes[k] = c
      assert g.codec_to_ids(codes)[k] == 2 + 1024 * k + c
  # Extremes of the codec block.
  assert g.codec_to_ids(np.array([0]))[0] == 2
  full = g.codec_to_ids(np.full((16,), 1023))
  assert full[-1] == 16385
  np.testing.assert_array_equal(full, 2 + 1024 * np.arange(16) + 1023)


def test_style_ids_round_trip_and_formula():
  g = MRT_V1
  rng = np.random.default_rng(2)
  codes = rng.integers(0, 1024, (4, 12))
  ids = g.style_to_ids(codes)
  np.testing.assert_array_equal(ids, 17410 + 1024 * np.arange(12) + codes)
  np.testing.assert_array_equal(g.ids_to_style(ids), codes)
  six = g.style_to_ids(codes[:, :6])
  assert six.min() >= 17410 and six.max() < g.vocab_size  # 23554
  assert ids.max() < g.vocab_size_pretrained  # 29698
  assert g.style_to_ids(np.array([0]))[0] == 17410


def test_tiny_style_round_trip():
  g = TINY
  codes = np.arange(g.style_rvq_depth * 3).reshape(3, g.style_rvq_depth) % \
      g.style_codebook_size
  np.testing.assert_array_equal(g.ids_to_style(g.style_to_ids(codes)), codes)


@pytest.mark.parametrize("bad", [-1, 1024])
def test_out_of_range_codes_raise(bad):
  codes = np.zeros((2, 16), np.int32)
  codes[1, 3] = bad
  with pytest.raises(GeometryError, match=r"\[0, 1024\)"):
    MRT_V1.codec_to_ids(codes)
  with pytest.raises(GeometryError, match=r"\[0, 1024\)"):
    MRT_V1.style_to_ids(codes[:, :6])


def test_too_many_levels_raise():
  with pytest.raises(GeometryError, match=r"1\.\.16"):
    MRT_V1.codec_to_ids(np.zeros((3, 17), np.int32))
  with pytest.raises(GeometryError, match=r"1\.\.12"):
    MRT_V1.style_to_ids(np.zeros((3, 13), np.int32))
  with pytest.raises(GeometryError, match=r"1\.\.16"):
    MRT_V1.ids_to_codec(np.full((3, 17), 2, np.int32))


def test_float_codes_raise():
  with pytest.raises(GeometryError, match="integer"):
    MRT_V1.codec_to_ids(np.zeros((2, 16), np.float32))
  with pytest.raises(GeometryError, match="integer"):
    MRT_V1.ids_to_codec(np.zeros((2, 16), np.float32))


def test_safe_raises_on_stray_ids():
  g = MRT_V1
  ids = g.codec_to_ids(np.full((2, 16), 5))
  ids[0, 0] = MASK_ID
  with pytest.raises(GeometryError, match="outside"):
    g.ids_to_codec(ids, safe=True)
  ids = g.codec_to_ids(np.full((2, 16), 5))
  ids[1, 2] = 2 + 1024 * 3 + 7  # a level-3 id at level 2
  with pytest.raises(GeometryError, match="outside"):
    g.ids_to_codec(ids)


def test_unsafe_folds_and_counts_strays():
  g = MRT_V1
  codes = np.random.default_rng(3).integers(0, 1024, (3, 16))
  ids = g.codec_to_ids(codes)
  ids[0, 0] = PAD_ID
  ids[0, 5] = MASK_ID
  ids[1, 2] = 2 + 1024 * 3 + 7  # another level's range: folds to code 7
  ids[2, 15] = 17410 + 9  # a style id at level 15: (17410+9-2) % 1024
  assert g.count_stray_ids(ids) == 4
  with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    out = g.ids_to_codec(ids, safe=False)
  assert any("folded" in str(x.message) for x in w)
  expected = codes.copy()
  expected[0, 0] = 0
  expected[0, 5] = 0
  expected[1, 2] = 7
  expected[2, 15] = (17410 + 9 - 2) % 1024
  np.testing.assert_array_equal(out, expected)
  assert out.dtype == np.int32
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    np.testing.assert_array_equal(g.ids_to_codec(ids, safe=False, warn=False),
                                  expected)


def test_count_stray_ids_zero_and_all():
  g = TINY
  ids = g.codec_to_ids(np.zeros((4, g.target_levels), np.int32))
  assert g.count_stray_ids(ids) == 0
  assert g.count_stray_ids(np.full((4, g.target_levels), MASK_ID)) == \
      4 * g.target_levels


# ---- invalid geometries -------------------------------------------------------
def test_context_not_multiple_of_chunk_raises():
  with pytest.raises(GeometryError, match="multiple of chunk_frames"):
    MRT_V1.replace(context_frames=260)


def test_sample_rate_not_multiple_of_frame_rate_raises():
  with pytest.raises(GeometryError, match="frame_rate"):
    MRT_V1.replace(sample_rate=48_010, frame_rate=25 * 3)
  with pytest.raises(GeometryError, match="not a multiple of frame_rate"):
    Geometry(name="bad", sample_rate=44_101)


def test_context_levels_above_target_levels_raises():
  with pytest.raises(GeometryError, match="context_levels"):
    MRT_V1.replace(context_levels=17)


@pytest.mark.parametrize("kw,needle", [
    (dict(target_levels=65), "codec_rvq_depth"),
    (dict(style_levels=13), "style_rvq_depth"),
    (dict(codec_offset=1), "PAD and MASK"),
    (dict(chunk_frames=0), "chunk_frames"),
    (dict(chunk_frames=2.0), "must be an int"),
    (dict(crossfade_frames=51), "crossfade_frames"),
])
def test_other_invalid_geometries_raise(kw, needle):
  with pytest.raises(GeometryError, match=needle):
    MRT_V1.replace(**kw)


def test_geometry_error_is_value_error():
  assert issubclass(GeometryError, ValueError)
