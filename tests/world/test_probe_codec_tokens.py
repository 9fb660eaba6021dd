"""The codec-token stability probe (world/training/codec_tokens.py, printed by
tools/probe_codec_tokens.py) behind the
reference teacher's diagnosis (docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import math
import pathlib

import numpy as np
import pytest

from mrt_distill.world.training import codec_tokens

_PATH = (pathlib.Path(__file__).resolve().parents[2] / "tools"
         / "probe_codec_tokens.py")
_spec = importlib.util.spec_from_file_location("probe_codec_tokens", _PATH)
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


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
  path = _PATH.with_name("sweep_teacher_sampling.py")
  spec = importlib.util.spec_from_file_location("sweep_sampling", path)
  sweep = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(sweep)
  assert sweep.parse_grid("3,1.0,40; 6,0.8,20;") == [
      dict(guidance_weight=3.0, temperature=1.0, top_k=40),
      dict(guidance_weight=6.0, temperature=0.8, top_k=20)]
  assert len(sweep.parse_grid(sweep.DEFAULT_GRID)) == 8
  with pytest.raises(ValueError, match="'3,1.0': expected 'guidance"):
    sweep.parse_grid("3,1.0")
