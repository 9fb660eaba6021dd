"""tools/pool_reports.py: pooled teacher-vs-student figures over runs."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import pool_reports  # tools/ is on pytest's path (pytest.ini)

PROMPTS = ("techno", "jazz", "funk", "reggae")


def _write(workdir: pathlib.Path, ta, sa, tf, sf, prompts=PROMPTS):
  workdir.mkdir(parents=True)
  rows = [dict(prompt=p, teacher_accuracy=a, student_accuracy=b,
               teacher_fd=c, student_fd=d)
          for p, a, b, c, d in zip(prompts, ta, sa, tf, sf)]
  (workdir / "report.json").write_text(json.dumps({"rows": rows}))
  return workdir


def test_pooled_means_ratios_and_intervals(tmp_path, capsys):
  a = _write(tmp_path / "s0", [1, 1, 0, 0], [1, 0.5, 0, 0],
             [10, 20, 30, 40], [20, 20, 30, 50])
  b = _write(tmp_path / "s1", [1, 0, 1, 0], [1, 0, 0.5, 0.5],
             [10, 10, 10, 10], [15, 15, 15, 15])
  out = pool_reports.pool([a, b])
  s0, pooled = out["runs"][str(a)], out["pooled"]
  assert s0["pairs"] == 4 and pooled["pairs"] == 8
  np.testing.assert_allclose(s0["accuracy_ratio"], 0.375 / 0.5)
  np.testing.assert_allclose(s0["fd_ratio"], 120 / 100)
  np.testing.assert_allclose(pooled["teacher_accuracy"], 4 / 8)
  np.testing.assert_allclose(pooled["student_accuracy"], 3.5 / 8)
  np.testing.assert_allclose(pooled["accuracy_ratio"], 3.5 / 4)
  np.testing.assert_allclose(pooled["fd_ratio"], 180 / 140)
  lo, hi = pooled["accuracy_ratio_ci90"]
  assert lo <= pooled["accuracy_ratio"] <= hi and lo < hi
  assert pool_reports.main([str(a), str(b)]) == 0
  table = capsys.readouterr().out
  assert "| **pooled** | 0.500 | 0.438 | 0.88 (" in table
  assert pool_reports.main([str(a), "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["pooled"]["pairs"] == 4


def test_refuses_missing_reports_and_other_prompt_sets(tmp_path, capsys):
  a = _write(tmp_path / "a", [1] * 4, [1] * 4, [1] * 4, [1] * 4)
  (tmp_path / "norep").mkdir()
  assert pool_reports.main([str(a), str(tmp_path / "norep")]) == 2
  assert "report.json does not exist" in capsys.readouterr().err
  b = _write(tmp_path / "b", [1] * 4, [1] * 4, [1] * 4, [1] * 4,
             prompts=("x", "y", "z", "w"))
  with pytest.raises(ValueError, match="other held-out prompts"):
    pool_reports.pool([a, b])
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "report.json").write_text("{}")
  with pytest.raises(ValueError, match="not a distillation report"):
    pool_reports.pool([tmp_path / "bad"])


def test_pooled_intervals_are_90_percent_intervals(tmp_path):
  """Pooled over 400 (run, prompt) pairs with the teacher at 1 and the
  student at 1 on half of them, the bootstrap ratio is Binomial(400, 1/2) /
  400: the tool's intervals must be its 5th-95th percentiles (0.46-0.54),
  which an 80% (0.4675-0.5325) or 99% (0.435-0.565) interval misses."""
  from scipy import stats
  prompts = [f"p{i}" for i in range(10)]
  dirs = [_write(tmp_path / f"s{r}", [1.0] * 10, [1.0, 0.0] * 5,
                 [1.0] * 10, [0.0, 1.0] * 5, prompts=prompts)
          for r in range(40)]
  pooled = pool_reports.pool(dirs)["pooled"]
  assert pooled["pairs"] == 400
  want = stats.binom.ppf([0.05, 0.95], 400, 0.5) / 400
  np.testing.assert_allclose(want, [0.46, 0.54])
  np.testing.assert_allclose(pooled["accuracy_ratio_ci90"], want, atol=0.004)
  np.testing.assert_allclose(pooled["fd_ratio_ci90"], want, atol=0.004)
