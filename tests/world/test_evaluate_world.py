"""Helpers of the reference-world evaluation (the judge windows and
Fréchet distances in runtime/judges.py), on synthetic inputs."""

import numpy as np
import pytest

from mrt_distill.world.runtime import judges
from mrt_distill.world.training import evaluate_world as ew


def test_hopped_windows_counts_and_values():
  clips = np.arange(2 * 10, dtype=np.float32).reshape(2, 10)
  w = judges.hopped_windows(clips, window=4, hop=3)
  # Starts 0, 3, 6 per clip.
  assert w.shape == (6, 4)
  np.testing.assert_array_equal(w[1], [3, 4, 5, 6])
  np.testing.assert_array_equal(w[3], [10, 11, 12, 13])


def test_hopped_windows_too_short():
  with pytest.raises(ValueError, match="shorter than the judge window"):
    judges.hopped_windows(np.zeros((1, 3), np.float32), window=4, hop=1)


def test_fd_or_none():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((40, 3))
  assert judges.fd_or_none(a[:3], a) is None  # fewer than E + 1 = 4 windows
  assert judges.fd_or_none(a, a) == pytest.approx(0.0, abs=1e-8)
  assert judges.fd_or_none(a, a + 2.0) == pytest.approx(12.0, rel=1e-6)


def test_stream_teacher_embedding_override():
  """An explicit style embedding streams exactly as the prompt it equals,
  and another embedding streams something else (the conditioning probe,
  tools/probe_teacher_conditioning.py, relies on both)."""
  from mrt_distill.style import mixing
  from mrt_distill.world.runtime import load_world
  world = load_world("reference")
  emb = mixing.embed_prompt_mix(world.style_model, "techno")
  a = ew.stream_teacher(world, "techno", 2, 1.0, seed=0)
  b = ew.stream_teacher(world, "not used", 2, 1.0, seed=0, embedding=emb)
  assert a.shape == (2, world.geometry.sample_rate, 1)
  np.testing.assert_array_equal(a, b)
  other = mixing.embed_prompt_mix(world.style_model, "string_ensemble")
  c = ew.stream_teacher(world, "techno", 2, 1.0, seed=0, embedding=other)
  assert not np.array_equal(a, c)


def test_rhythm_figures_against_ground_truth():
  """Teacher == ground truth gives ratio 1; a steady tone has no onsets;
  a click track at the style's tempo agrees, at twice the tempo too
  (octave errors allowed), and a steady tone does not."""
  from mrt_distill.world.training.evaluate_world import _rhythm
  sr = 16000
  t = np.arange(6 * sr) / sr
  low, high = 122, 134  # techno
  clicks = np.zeros_like(t)
  beat = 60.0 / 128
  for k in range(int(6 / beat)):
    i = int(k * beat * sr)
    clicks[i:i + 200] = np.hanning(200)
  gt = np.stack([clicks, clicks])[..., None].astype(np.float32)
  tone = np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2)[..., None]
  same = _rhythm(gt, gt, "techno", sr)
  assert same["onsets_ratio"] == 1.0 and same["flux_ratio"] == 1.0
  assert same["ground_truth_onsets_per_s"] == pytest.approx(128 / 60, rel=0.2)
  assert same["teacher_tempo_agreement"] == 1.0
  flat = _rhythm(tone.astype(np.float32), gt, "techno", sr)
  assert flat["teacher_onsets_per_s"] <= 0.5
  assert flat["flux_ratio"] < 0.2
  assert flat["teacher_tempo_agreement"] == 0.0
  assert low < 128 < high


def test_reference_world_page_from_the_build_files(tmp_path):
  """docs/reference_world.md is written from the build's JSON files: stage
  times with their total, the codec-token table and its 20 ms figure, and
  each style's Fréchet distance as a multiple of its floor."""
  import json
  from mrt_distill.world.training.evaluate_world import write_markdown
  (tmp_path / "build_timings.json").write_text(json.dumps(
      {"quick": False, "seconds": {"codec": 3000.0, "teacher": 5400.0}}))
  row = {"style": "techno", "teacher_accuracy": 0.75,
         "ground_truth_accuracy": 1.0, "codec_ceiling_accuracy": 0.875,
         "fd_teacher_vs_gt": 6.0, "fd_gt_floor": 1.5}
  tokens = {"levels": 2, "pieces_per_style": 3, "seconds": 16.0,
            "mean": {"shift_frame": [1.0, 1.0], "shift_half": [0.63, 0.64],
                     "lag_bar": [0.57, 0.5], "chance": [0.16, 0.15],
                     "entropy": [2.9, 3.0]}}
  (tmp_path / "report.json").write_text(json.dumps({
      "seconds_per_stream": 10, "sampling": {}, "target_levels": 4,
      "teacher_accuracy_mean": 0.75, "ground_truth_accuracy_mean": 1.0,
      "codec_ceiling_accuracy_mean": 0.875, "per_style": [row],
      "codec_tokens": tokens}))
  out = tmp_path / "world.md"
  text = write_markdown(tmp_path, out, "python tools/build_reference_world.py")
  assert out.read_text() == text
  assert "| codec | 50.0 |" in text and "| **total** | **140.0** |" in text
  assert "| shift_half | 0.63 | 0.64 |" in text
  assert "| lag_bar | 0.57 | 0.50 |" in text
  assert "A 20 ms delay changes 37% of level-0 tokens" in text
  assert "| techno | 0.75 | 1.00 | 0.88 | 6.0 | 1.5 | 4.0 |" in text
