"""generate / serve / eval load students as carefully as distill resumes:
a damaged newest checkpoint falls back to the exported student.npz or the
checkpoint before it (saying which), a damaged student file is one error
naming the file and the fix, and a reader changes nothing on disk."""

from __future__ import annotations

import hashlib
import logging
import pathlib
import shutil

import jax
import numpy as np
import pytest

from mrt_distill import main as cli_main
from mrt_distill.serve import bundle as B


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny distill workdir: checkpoints at steps 1 and 2, student.npz."""
  work = tmp_path_factory.mktemp("run") / "w"
  rc = cli_main.main(["distill", "--config", "reference_cpu:tiny",
                      "--workdir", str(work), "--no-report",
                      "--config.train.steps=2", "--config.train.log_every=1",
                      "--config.train.eval_every=100",
                      "--config.train.checkpoint_every=1"])
  assert rc == 0
  assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["1", "2"]
  return work


def _copy(run, tmp_path, student=True) -> pathlib.Path:
  w = tmp_path / "w"
  shutil.copytree(run, w)
  if not student:
    (w / "student.npz").unlink()
  return w


def _damage(w: pathlib.Path, step: int) -> None:
  (w / "checkpoints" / str(step) / "state" / "manifest.ocdbt").unlink()


def _hashes(root: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _same(a, b) -> bool:
  x, y = _leaves(a.params), _leaves(b.params)
  return len(x) == len(y) and all(np.array_equal(p, q) for p, q in zip(x, y))


def test_damaged_newest_checkpoint_falls_back_to_the_exported_student(
    run, tmp_path, caplog):
  w = _copy(run, tmp_path)
  _damage(w, 2)
  before = _hashes(w)
  with caplog.at_level(logging.WARNING):
    b = B.load_student(str(w))
  assert b.source.startswith(f"{w / 'student.npz'} (fallback: the "
                             f"checkpoint(s) at step(s) 2 cannot be read")
  assert _same(b, B.load_student(str(w / "student.npz")))
  assert "the checkpoint at step 2 in" in caplog.text
  assert f"using the exported {w / 'student.npz'} (step 2)" in caplog.text
  assert _hashes(w) == before  # a reader moves and writes nothing


def test_without_the_export_it_falls_back_to_the_previous_checkpoint(
    run, tmp_path, caplog):
  w = _copy(run, tmp_path, student=False)
  _damage(w, 2)
  with caplog.at_level(logging.WARNING):
    b = B.load_student(str(w))
  assert b.source == f"{w}@1"
  assert (f"using the checkpoint at step 1 in {w} (unreadable: step(s) 2; "
          f"left in place)") in caplog.text
  # Step 1's parameters differ from the final ones.
  assert not _same(b, B.load_student(str(run)))


def test_workdir_at_step_loads_that_checkpoint_and_no_other(run, tmp_path):
  w = _copy(run, tmp_path, student=False)
  before = _hashes(w)
  one, two = B.load_student(f"{w}@1"), B.load_student(f"{w}@2")
  assert (one.source, two.source) == (f"{w}@1", f"{w}@2")
  assert _same(two, B.load_student(str(w)))  # the newest
  assert not _same(one, two)
  with pytest.raises(B.StudentLoadError, match=(
      r"has no checkpoint at step 7 \(kept: 1, 2\); give one of those, or "
      r"train with a larger --config.train.max_to_keep")):
    B.load_student(f"{w}@7")
  with pytest.raises(B.StudentLoadError, match=r"is not a distill workdir"):
    B.load_student(f"{tmp_path / 'nope'}@1")
  assert _hashes(w) == before  # a reader moves and writes nothing
  _damage(w, 1)  # a named checkpoint does not fall back to another
  with pytest.raises(B.StudentLoadError, match=(
      r"the checkpoint at step 1 in .*checkpoints cannot be read \(.*\); "
      r"give another step \(kept: 1, 2\) or the workdir alone")):
    B.load_student(f"{w}@1")
  assert B.load_student(f"{w}@2").source == f"{w}@2"


def test_nothing_readable_is_one_error_naming_every_step_and_the_fix(
    run, tmp_path):
  w = _copy(run, tmp_path, student=False)
  _damage(w, 2)
  _damage(w, 1)
  with pytest.raises(B.StudentLoadError, match=(
      r"no checkpoint in .*checkpoints can be read \(step 2: .*; step 1: "
      r".*\) and there is no student.npz\. Rerun `mrt-distill distill "
      r"--workdir .*` \(it sets damaged checkpoints aside")):
    B.load_student(str(w))


def test_a_damaged_config_json_uses_the_export(run, tmp_path, caplog):
  w = _copy(run, tmp_path)
  (w / "config.json").write_text('{"world": "random-ti')
  with caplog.at_level(logging.WARNING):
    b = B.load_student(str(w))
  assert b.source == str(w / "student.npz")
  assert "config.json cannot be read (JSONDecodeError" in caplog.text


def _bad_copies(run, tmp_path):
  data = (run / "student.npz").read_bytes()
  flipped = bytearray(data)
  flipped[len(data) // 2] ^= 0x01  # inside a parameter array
  return {"empty": b"", "truncated": data[:len(data) // 2],
          "bit-flipped": bytes(flipped)}


@pytest.mark.parametrize("damage", ["empty", "truncated", "bit-flipped"])
def test_a_damaged_student_file_is_one_error_naming_it_and_the_fix(
    run, tmp_path, damage, capsys, monkeypatch):
  w = _copy(run, tmp_path)
  (w / "student.npz").write_bytes(_bad_copies(run, tmp_path)[damage])
  with pytest.raises(B.StudentLoadError) as info:
    B.load_student(str(w / "student.npz"))
  msg = str(info.value)
  assert msg.startswith(f"{w / 'student.npz'} is damaged or not a student "
                        f"file written by export_student (")
  assert f"load its run instead (--checkpoint {w})" in msg
  # The same through a command: one line, exit status 1, no traceback.
  monkeypatch.chdir(tmp_path)
  rc = cli_main.main(["generate", "--checkpoint", str(w / "student.npz"),
                      "--seconds", "1", "--out", "x.wav"])
  err = capsys.readouterr().err
  assert rc == 1 and "Traceback" not in err
  assert f"mrt-distill generate: error: {w / 'student.npz'} is damaged" in err
  assert not (tmp_path / "x.wav").exists()
  # Its workdir still loads, from the checkpoints.
  assert B.load_student(str(w)).source == f"{w}@2"
