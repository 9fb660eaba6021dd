"""tools/sweep_student_sampling.py: the student's serve-time knobs judged."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

_PATH = (pathlib.Path(__file__).resolve().parents[2] / "tools"
         / "sweep_student_sampling.py")
_spec = importlib.util.spec_from_file_location("sweep_student_sampling",
                                               _PATH)
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def test_bad_knob_lists_are_named():
  with pytest.raises(SystemExit, match="--weights 'a,1': give comma"):
    sweep._floats("a,1", "weights")
  with pytest.raises(SystemExit, match="temperatures > 0"):
    sweep.main(["--temperatures", "0"])


def test_music_figures_tell_clicks_from_a_steady_tone():
  sr = 16000
  t = np.arange(2 * sr) / sr
  tone = 0.1 * np.sin(2 * np.pi * 440 * t)
  clicks = tone.copy()
  clicks[::sr // 4] = 0.9  # four clicks a second
  chunk, fade = sr // 4, 64
  figures = lambda x: sweep.music_figures(x[None, :, None], sr, chunk, fade)
  steady, hits = figures(tone), figures(clicks)
  assert hits["onsets_per_s"] > steady["onsets_per_s"] + 2
  assert hits["flux"] > steady["flux"]
  np.testing.assert_allclose(steady["rms"], 0.1 / np.sqrt(2), rtol=1e-3)
  # Seams: a tone that jumps to another pitch at every chunk start vs the
  # steady tone (ratio ~1); noise is flat, a tone is not.
  freq = np.where((np.arange(len(t)) // chunk) % 2, 440.0, 660.0)
  jumps = figures(0.1 * np.sin(2 * np.pi * freq * t))
  assert jumps["boundary"] > 3 and 0.5 < steady["boundary"] < 1.5
  noise = figures(np.random.default_rng(0).normal(0, 0.1, len(t)))
  assert noise["flatness"] > 0.3 > 0.05 > steady["flatness"]


def test_sweep_on_the_shipped_student():
  r = sweep.sweep("reference", [0.0, 1.0], [1.0], samples=1, seconds=4.0,
                  gt_pieces=1, styles=["funk"], log=lambda *a, **k: None)
  assert [(row["cfg_weight"], row["token_temperature"]) for row in r["rows"]
          ] == [(0.0, 1.0), (1.0, 1.0)]
  t = r["teacher"]
  for row in r["rows"]:
    assert 0.0 <= row["accuracy"] <= 1.0 and row["rms"] > 0
    np.testing.assert_allclose(row["onsets_per_s_ratio"],
                               row["onsets_per_s"] / t["onsets_per_s"])
    np.testing.assert_allclose(row["rms_db_vs_teacher"],
                               20 * np.log10(row["rms"] / t["rms"]))
    np.testing.assert_allclose(row["boundary_ratio"],
                               row["boundary"] / t["boundary"])
  # Guidance changes what the student writes.
  assert r["rows"][0]["rms"] != r["rows"][1]["rms"]
  assert "| 1 | 1 |" in sweep.table(r)
