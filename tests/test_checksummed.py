"""Checksummed weight files: round trip, determinism, damage detection."""

import json

import numpy as np
import pytest

from mrt_distill import checksummed as ck

HINT = "python tools/build_reference_world.py --stage codec"


def _arrays():
  rng = np.random.default_rng(0)
  return {"a/kernel": rng.standard_normal((5, 3)).astype(np.float32),
          "codes": np.arange(7, dtype=np.int32)}


def test_round_trip_float16_storage(tmp_path):
  p = ck.save_npz(tmp_path / "w.npz", _arrays(), {"kind": "x"},
                  float_dtype=np.float16)
  side = json.loads(ck.sidecar(p).read_text())
  assert side["arrays"]["a/kernel"]["dtype"] == "float16"
  assert side["arrays"]["codes"]["dtype"] == "int32"  # ints untouched
  arrays, meta = ck.load_npz(p, HINT)
  assert meta == {"kind": "x"}
  assert arrays["a/kernel"].dtype == np.float32
  np.testing.assert_allclose(arrays["a/kernel"], _arrays()["a/kernel"],
                             rtol=1e-3, atol=1e-3)
  np.testing.assert_array_equal(arrays["codes"], np.arange(7))


def test_same_weights_same_bytes(tmp_path):
  a = ck.save_npz(tmp_path / "a.npz", _arrays())
  b = ck.save_npz(tmp_path / "b.npz", dict(reversed(list(_arrays().items()))))
  assert a.read_bytes() == b.read_bytes()


def test_corruption_names_file_and_fix(tmp_path):
  p = ck.save_npz(tmp_path / "w.npz", _arrays())
  raw = bytearray(p.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  p.write_bytes(bytes(raw))
  with pytest.raises(ck.ChecksumError, match=r"w\.npz is corrupted.*"
                     r"--stage codec"):
    ck.load_npz(p, HINT)


def test_missing_file_and_sidecar(tmp_path):
  with pytest.raises(ck.ChecksumError, match="missing.*--stage codec"):
    ck.load_npz(tmp_path / "none.npz", HINT)
  p = ck.save_npz(tmp_path / "w.npz", _arrays())
  ck.sidecar(p).unlink()
  with pytest.raises(ck.ChecksumError, match=r"w\.npz\.json"):
    ck.load_npz(p, HINT)
  p = ck.save_npz(tmp_path / "w.npz", _arrays())
  ck.sidecar(p).write_text("{not json")
  with pytest.raises(ck.ChecksumError, match="not valid JSON"):
    ck.load_npz(p, HINT)
