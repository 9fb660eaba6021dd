"""tools/sweep_student_sampling.py: the student's serve-time knobs judged."""

from __future__ import annotations

import numpy as np
import pytest

import sweep_student_sampling as sweep  # tools/ is on pytest's path (pytest.ini)


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


# slow: teacher and student streams, judged (about 37 s on 2 cores);
# .ci/run runs it with the other slow checks.
@pytest.mark.slow
def test_sweep_on_the_shipped_student():
  r = sweep.sweep("reference", [0.0, 1.0], [1.0], samples=1, seconds=4.0,
                  gt_pieces=1, styles=["funk"], long_minutes=2 / 60,
                  long_window=2.0, log=lambda *a, **k: None)
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
    assert 0.0 <= row["long"]["noise_fraction"] <= 1.0
    assert len(row["long"]["flatness"]) == 1  # one 2 s window of 2 s
  assert r["long_form"]["styles"] == list(sweep.LONG_STYLES)
  # Guidance changes what the student writes.
  assert r["rows"][0]["rms"] != r["rows"][1]["rms"]
  assert "| 1 | 1 |" in sweep.table(r)


def test_long_form_figures_flag_noise_windows_and_not_a_tone():
  """Per window: flatness, the noise flag (> 0.3, the harness's) and RMS.
  A stream that turns from a tone into noise half way is flagged in its
  second window only; a window longer than the streams is refused."""
  sr = 8000
  t = np.arange(4 * sr) / sr
  tone = 0.1 * np.sin(2 * np.pi * 440 * t)
  drift = tone.copy()
  drift[2 * sr:] = np.random.default_rng(1).normal(0, 0.1, 2 * sr)
  audio = np.stack([tone, drift])[:, :, None]
  f = sweep.long_form_figures(audio, sr, window_seconds=2.0)
  assert f["noise_fraction"] == 0.25  # 1 of 4 windows
  assert len(f["flatness"]) == len(f["rms_db"]) == 2
  assert f["flatness"][1] > f["flatness"][0] + 0.1
  np.testing.assert_allclose(f["rms_db"][0], 20 * np.log10(0.1 / np.sqrt(2)),
                             atol=0.1)
  with pytest.raises(ValueError, match="shorter than one 5 s window"):
    sweep.long_form_figures(audio, sr, window_seconds=5.0)


def test_long_form_needs_a_whole_window():
  with pytest.raises(SystemExit, match="--long-minutes 0.5 must be 0"):
    sweep.main(["--long-minutes", "0.5"])
