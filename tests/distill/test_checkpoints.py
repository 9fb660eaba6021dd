"""The teacher identity a student's checkpoints and files carry."""

from __future__ import annotations

import ml_collections
import pytest

from mrt_distill.distill import checkpoints
from mrt_distill.distill.config_io import load_config
from mrt_distill.world.runtime import teacher_identity


def test_teacher_identity_per_world():
  from mrt_distill.checksummed import sha256_file
  from mrt_distill.world.runtime import assets
  ref = load_config("reference_cpu")
  # The recorded sha256 is the shipped file's real one (read, not hashed).
  assert assets.recorded_sha256("teacher") == sha256_file(
      assets.path("teacher"))
  assert teacher_identity(ref) == (
      "reference teacher.npz sha256 "
      + assets.recorded_sha256("teacher")[:16])
  tiny = load_config("reference_cpu:tiny")
  tiny.seed = 5
  assert teacher_identity(tiny) == "random-tiny seed 5"
  mrt = ml_collections.ConfigDict({
      "world": "magenta_rt", "seed": 0,
      "magenta_rt": {"teacher": "/mnt/mrt/teachers/base"}})
  assert teacher_identity(mrt) == (
      "magenta_rt /mnt/mrt/teachers/base")


def test_check_teacher_accepts_same_and_unrecorded_refuses_other():
  cfg = load_config("reference_cpu:tiny")
  checkpoints.check_teacher("random-tiny seed 0", cfg, "x", "fix")
  checkpoints.check_teacher(None, cfg, "x", "fix")  # older files
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"^a file was distilled from another teacher "
                           r"\(random-tiny seed 1\) than this world's "
                           r"\(random-tiny seed 0\).*; do this$"):
    checkpoints.check_teacher("random-tiny seed 1", cfg, "a file", "do this")
