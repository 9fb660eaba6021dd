"""tools/check_real_teacher.py on a fake t5x checkpoint in the real v1
geometry (a tiny-width teacher, mrt_distill/interop/fake_assets.py's gin):
import, cached decode vs full teacher-forced recompute, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrt_distill.interop.fake_assets import FAKE_TEACHER_GIN
from mrt_distill.teacher import t5x_format
from mrt_distill.teacher.load import load_teacher_config
from mrt_distill.teacher.model import numpy_init_params

import check_real_teacher as tool  # tools/ is on pytest's path (pytest.ini)


def _write_fake_t5x(root, gin):
  """A zstd, 2-shard t5x checkpoint of a random teacher for `gin`, with
  Adafactor-shaped slots -> (checkpoint root, number of slot tensors)."""
  params = numpy_init_params(load_teacher_config(gin), 0)
  flat = t5x_format.flatten(params)
  slots = {k + (".v_row" if v.ndim == 2 else ".v"):
           np.ones(v.shape[:1], np.float32) for k, v in flat.items()}
  t5x_format.write_t5x_checkpoint(
      root / "llm" / "checkpoint_1860000", params, 1_860_000,
      param_states=t5x_format.unflatten(slots), compress="zstd", shards=2)
  return root / "llm", len(slots)


@pytest.fixture(scope="module")
def fake_t5x(tmp_path_factory):
  """(checkpoint root, gin, n slot tensors) of the tiny teacher (geometry
  tiny: fast enough for the default suite)."""
  root, n = _write_fake_t5x(tmp_path_factory.mktemp("fake_t5x"), "tiny")
  return root, "tiny", n


def _check_report(root, gin, n_slots, pad, capsys):
  rc = tool.main([str(root), "--gin", str(gin), "--frames", "1", "--pad",
                  str(pad), "--json"])
  out = capsys.readouterr().out
  assert rc == 0, out
  r = json.loads(out)
  assert r["ok"] is True
  assert r["step"] == 1_860_000 and r["checkpoint"].endswith(
      "checkpoint_1860000")
  assert r["frames"] == 1 and r["pad"] == pad
  assert r["tokens"] == load_teacher_config(gin).geometry.target_levels
  assert r["token_agreement"] == 1.0 and r["first_disagreement"] is None
  assert r["max_abs_logit_diff"] <= 1e-5 and r["logit_scale"] > 1.0
  assert r["stored_dtypes"] == {"float32": r["tensors"]}
  assert r["dropped_optimizer_slots"]["tensors"] == n_slots
  assert r["activation_dtype"] == "float32"


def test_reports_agreement_on_a_fake_checkpoint(fake_t5x, capsys):
  root, gin, n_slots = fake_t5x
  _check_report(root, gin, n_slots, 5, capsys)


@pytest.mark.slow  # ~35 s on 2 shared cores: v1's full lengths (1006 + 800)
def test_reports_agreement_at_the_v1_geometry(tmp_path, capsys):
  """The fake Magenta RT teacher of interop/fake_assets.py (v1 geometry,
  tiny widths) as a t5x checkpoint."""
  gin = tmp_path / "teacher_fake_mrt_v1.gin"
  gin.write_text(FAKE_TEACHER_GIN)
  root, n = _write_fake_t5x(tmp_path, gin)
  _check_report(root, gin, n, 7, capsys)


def test_text_report_and_a_mismatch_exits_1(fake_t5x, capsys, monkeypatch):
  root, gin, _ = fake_t5x
  from mrt_distill.teacher import decode
  real = decode.reference_decode

  def off_by_one(*a, **kw):  # a recompute that disagrees at token 3
    out = real(*a, **kw)
    out.reshape(-1)[3] += 1
    return out

  monkeypatch.setattr(decode, "reference_decode", off_by_one)
  rc = tool.main([str(root), "--gin", str(gin), "--frames", "2"])
  out = capsys.readouterr().out
  assert rc == 1
  n = 2 * load_teacher_config(gin).geometry.target_levels
  assert (f"tokens       cached vs recomputed agree on {(n - 1) / n:.4f} "
          "(first disagreement at token 3)") in out
  assert out.rstrip().splitlines()[-1].startswith("MISMATCH")


def test_not_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
  rc = tool.main([str(tmp_path / "nope"), "--gin", "base"])
  err = capsys.readouterr().err
  assert rc == 1
  assert err.startswith("check_real_teacher: error: t5x checkpoint path ")
  assert "does not exist" in err and len(err.strip().splitlines()) == 1
