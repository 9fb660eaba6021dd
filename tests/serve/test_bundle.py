"""Loading a trained student for serving: the distill CLI's student.npz and
its workdir load to the same parameters; a student of another geometry is
refused naming the tensor and the fix."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from mrt_distill import main as cli_main
from mrt_distill.distill import student as S
from mrt_distill.serve import bundle as B


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  work = tmp_path_factory.mktemp("run")
  rc = cli_main.main(["distill", "--config", "reference_cpu:tiny",
                      "--workdir", str(work), "--no-report",
                      "--config.train.steps=2", "--config.train.log_every=1",
                      "--config.train.eval_every=100"])
  assert rc == 0
  return work


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_cli_exports_a_student_that_loads_like_its_workdir(trained):
  path = trained / "student.npz"
  assert path.is_file()
  from_file, from_dir = B.load_student(str(path)), B.load_student(str(trained))
  assert from_dir.source.endswith("@2")
  a, b = _leaves(from_file.params), _leaves(from_dir.params)
  assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
  # Training moved the trainable part away from a fresh student's.
  fresh = B.load_student("random-tiny")
  t_new, _ = S.split_params(from_file.params)
  t_old, _ = S.split_params(fresh.params)
  assert any(not np.array_equal(x, y)
             for x, y in zip(_leaves(t_new), _leaves(t_old)))
  with np.load(path) as z:
    meta = json.loads(z["__meta__"].tobytes().decode())
  assert meta["format"] == B.FORMAT and meta["metrics"]["steps"] == 2
  assert meta["config"]["world"] == "random-tiny"
  # The teacher is referenced, by identity: the same world and seed load.
  assert meta["teacher"] == "random-tiny seed 0"


def test_a_student_or_workdir_of_another_teacher_is_refused(trained, tmp_path):
  """Same shapes, other base weights: the LoRA factors would be merged into
  a teacher they were not trained against, so both forms are refused."""
  b = B.load_student(str(trained / "student.npz"))
  trainable, _ = S.split_params(b.params)
  cfg = b.config
  cfg.seed = 7  # random-tiny draws its teacher from the seed
  other = B.export_student(cfg, trainable, tmp_path / "other.npz")
  cfg.seed = 0
  with np.load(other) as z:
    meta = json.loads(z["__meta__"].tobytes().decode())
  meta["config"]["seed"] = 0  # the file now claims teacher seed 0's config
  np.savez(other, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8),
           **{k: v for k, v in np.load(other).items() if k != "__meta__"})
  with pytest.raises(B.StudentLoadError,
                     match=r"another teacher \(random-tiny seed 7\) than "
                           r"this world's \(random-tiny seed 0\)"):
    B.load_student(str(other))


def test_a_student_of_another_shape_is_refused(trained, tmp_path):
  b = B.load_student(str(trained / "student.npz"))
  trainable, _ = S.split_params(b.params)
  cfg = b.config
  cfg.student.lora_rank = 3  # the file's LoRA factors have rank 2
  bad = B.export_student(cfg, trainable, tmp_path / "bad.npz")
  with pytest.raises(B.StudentLoadError,
                     match=r"does not fit .* LoRA rank 3.*lora_.*file"):
    B.load_student(str(bad))


def test_missing_and_foreign_files_name_the_fix(tmp_path):
  with pytest.raises(B.StudentLoadError, match="not found: give one of"):
    B.load_student(str(tmp_path / "nope.npz"))
  junk = tmp_path / "junk.npz"
  np.savez(junk, x=np.zeros(2))
  with pytest.raises(B.StudentLoadError, match="not a student file"):
    B.load_student(str(junk))
