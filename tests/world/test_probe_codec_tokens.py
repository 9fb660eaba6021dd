"""The codec-token stability probe (world/training/codec_tokens.py, printed by
tools/probe_codec_tokens.py) behind the
reference teacher's diagnosis (docs/benchmarks.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrt_distill.world.training import codec_tokens

import probe_codec_tokens as probe  # tools/ is on pytest's path (pytest.ini)


def test_level_stats_is_the_mean_agreement_per_level():
  a = [np.array([[1, 2], [3, 4]]), np.array([[5, 6]])]
  b = [np.array([[1, 0], [3, 0]]), np.array([[0, 6]])]
  # piece 1: level 0 agrees 2/2, level 1 0/2; piece 2: 0/1 and 1/1.
  np.testing.assert_allclose(codec_tokens.level_stats(a, b), [0.5, 0.5])


def test_probe_on_the_shipped_codec():
  from mrt_distill.world.runtime import assets
  codec = assets.load_codec()
  r = codec_tokens.token_stability(codec, pieces=1, seconds=6.0, styles=["techno", "reggae"])
  k = codec.geometry.target_levels
  assert r["levels"] == k and [s["style"] for s in r["per_style"]] == [
      "techno", "reggae"]
  # The encoder is frame-equivariant: a whole-frame delay gives exactly the
  # same tokens one frame later (the probe's alignment is right).
  assert r["mean"]["shift_frame"] == [1.0] * k
  for row in r["per_style"]:
    assert all(0.0 < c < 1.0 for c in row["chance"])
    assert all(0.0 < h <= math.log(codec.geometry.codebook_size) + 1e-6
               for h in row["entropy"])
    assert all(0.0 <= x <= 1.0 for x in row["shift_half"] + row["lag_bar"])
  # A half-frame delay moves some level-0 tokens, never all (the shipped
  # codec's threshold: tests/world/test_codec_stability.py).
  assert 0.0 < r["mean"]["shift_half"][0] < 1.0
  md = probe.markdown(r)
  assert md.count("\n") == 6 and "| shift_half |" in md


def test_sampling_sweep_grid_parses_and_names_bad_items():
  import sweep_teacher_sampling as sweep
  assert sweep.parse_grid("3,1.0,40; 6,0.8,20;") == [
      dict(guidance_weight=3.0, temperature=1.0, top_k=40),
      dict(guidance_weight=6.0, temperature=0.8, top_k=20)]
  assert len(sweep.parse_grid(sweep.DEFAULT_GRID)) == 8
  with pytest.raises(ValueError, match="'3,1.0': expected 'guidance"):
    sweep.parse_grid("3,1.0")


def test_chroma_agreement_sees_pitch_not_level():
  """1 for the same audio at any level; low for the same rhythm a tritone
  away (what a codec that drops the pitch writes); 0 for silence."""
  sr = 16000
  t = np.arange(2 * sr) / sr
  env = (np.sin(2 * np.pi * 2 * t) > 0).astype(np.float32)  # 2 Hz gating
  a = env * np.sin(2 * np.pi * 440.0 * t)
  b = env * np.sin(2 * np.pi * 440.0 * 2 ** (6 / 12) * t)
  assert codec_tokens.chroma_agreement(a, 0.3 * a, sr) == pytest.approx(
      1.0, abs=1e-5)
  assert codec_tokens.chroma_agreement(a, b, sr) < 0.3
  assert codec_tokens.chroma_agreement(a, np.zeros_like(a), sr) == 0.0


def test_reconstruction_fidelity_of_the_shipped_codec():
  """More levels keep more: SNR and chroma agreement rise from 1 to 4
  levels, and 4 levels keep most of the pitch (shipped codec)."""
  from mrt_distill.world.runtime import assets
  r = codec_tokens.reconstruction_fidelity(
      assets.load_codec(), pieces=1, seconds=4.0, levels=(1, 4),
      styles=["jazz_piano_trio", "ambient_pads"])
  m = r["mean"]
  assert r["levels"] == [1, 4] and set(r["per_style"]) == {
      "jazz_piano_trio", "ambient_pads"}
  assert m["snr_db_4"] > m["snr_db_1"]
  assert m["chroma_4"] > m["chroma_1"] and m["chroma_4"] > 0.5
