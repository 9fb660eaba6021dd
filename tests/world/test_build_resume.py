"""The reference-world build resumes: recipe check, stage checkpoints, damage,
a full disk, and bit-identical weights after an interruption (slow)."""

from __future__ import annotations

import errno
import hashlib
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mrt_distill.world.training import stage_checkpoints as SC

REPO = pathlib.Path(__file__).resolve().parents[2]


def _state(x: float):
  return {"w": np.full((3, 4), x, np.float32), "n": np.array(7, np.int32)}


# ---- recipe ------------------------------------------------------------------
def test_recipe_recorded_then_refused_when_changed(tmp_path):
  rec = {"seed": 0, "codec": {"steps": 10, "batch": 4}, "world": {"g": 25.0}}
  SC.check_recipe(tmp_path, rec)
  assert json.loads((tmp_path / "recipe.json").read_text()) == rec
  SC.check_recipe(tmp_path, rec)  # same recipe: resumes
  changed = {**rec, "codec": {"steps": 20, "batch": 4}}
  with pytest.raises(SC.RecipeMismatchError) as e:
    SC.check_recipe(tmp_path, changed)
  msg = str(e.value)
  assert "codec.steps: 10 -> 20" in msg and "batch" not in msg
  assert "--build-dir" in msg and "nothing" in msg
  assert json.loads((tmp_path / "recipe.json").read_text()) == rec


def test_recipe_diff_names_added_and_removed_settings():
  assert SC.recipe_diff({"a": 1, "b": {"c": (1, 2)}},
                        {"a": 1, "b": {"c": [1, 2]}, "d": 3}) == {
                            "d": (None, 3)}


def test_unreadable_recipe_is_named(tmp_path):
  (tmp_path / "recipe.json").write_text("{not json")
  with pytest.raises(SC.RecipeMismatchError, match="recipe.json cannot be"):
    SC.check_recipe(tmp_path, {"seed": 0})


# ---- stage checkpoints -------------------------------------------------------
def test_checkpoint_round_trip_and_newest_wins(tmp_path):
  ck = SC.StageCheckpoints(tmp_path / "codec", every_s=0.0)
  assert ck.restore(_state(0.0)) == (None, None, None)
  ck.save(5, _state(1.0), {"curve": [1]})
  ck.save(9, _state(2.0), {"curve": [1, 2], "rng": {"s": 2**70}})
  ck.close()
  state, meta, step = SC.StageCheckpoints(tmp_path / "codec").restore(
      _state(0.0))
  assert step == 9 and meta == {"curve": [1, 2], "rng": {"s": 2**70}}
  np.testing.assert_array_equal(state["w"], np.full((3, 4), 2.0))
  assert int(state["n"]) == 7


def test_stage_time_counts_on_from_the_restored_checkpoint(tmp_path,
                                                         monkeypatch):
  clock = [1000.0]
  monkeypatch.setattr(SC.time, "time", lambda: clock[0])
  ck = SC.StageCheckpoints(tmp_path / "teacher", every_s=0.0)
  clock[0] += 60.0
  ck.save(3, _state(1.0), {"curve": [1]})
  clock[0] += 25.0  # work after the newest checkpoint: lost when killed
  assert ck.elapsed() == 85.0
  ck.close()
  clock[0] += 3600.0  # the machine was off
  again = SC.StageCheckpoints(tmp_path / "teacher", every_s=0.0)
  _, meta, step = again.restore(_state(0.0))
  assert step == 3 and meta == {"curve": [1]}  # the count is not the trainer's
  clock[0] += 40.0
  assert again.elapsed() == 100.0  # 60 s to the checkpoint + 40 s since
  again.close()


def test_damaged_newest_checkpoint_falls_back_and_is_kept(tmp_path):
  ck = SC.StageCheckpoints(tmp_path / "teacher", every_s=0.0, keep=3)
  ck.save(5, _state(1.0), {"at": 5})
  ck.save(9, _state(2.0), {"at": 9})
  ck.close()
  newest = tmp_path / "teacher" / "checkpoints" / "9"
  files = [p for p in newest.rglob("*") if p.is_file()]
  damaged = {}
  for p in files:  # truncate every file of the newest step: a crash mid-write
    p.write_bytes(p.read_bytes()[:3])
    damaged[p.relative_to(newest)] = p.read_bytes()
  state, meta, step = SC.StageCheckpoints(tmp_path / "teacher").restore(
      _state(0.0))
  assert step == 5 and meta == {"at": 5}
  np.testing.assert_array_equal(state["w"], np.full((3, 4), 1.0))
  aside = tmp_path / "teacher" / "checkpoints_unreadable" / "9"
  assert {p.relative_to(aside): p.read_bytes()
          for p in aside.rglob("*") if p.is_file()} == damaged


def test_no_readable_checkpoint_is_an_error_naming_the_folder(tmp_path):
  ck = SC.StageCheckpoints(tmp_path / "codec", every_s=0.0)
  ck.save(3, _state(1.0), {})
  ck.close()
  for p in (tmp_path / "codec" / "checkpoints" / "3").rglob("*"):
    if p.is_file():
      p.write_bytes(b"")
  with pytest.raises(SC.StageUnreadableError,
                     match=r"no checkpoint in .* can be read.*move .*codec"):
    SC.StageCheckpoints(tmp_path / "codec").restore(_state(0.0))


def test_disk_full_names_the_folder_and_keeps_the_last_good(tmp_path,
                                                           monkeypatch):
  ck = SC.StageCheckpoints(tmp_path / "codec", every_s=0.0)
  ck.save(4, _state(1.0), {"at": 4})

  def full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(ck._mngr, "save", full)
  with pytest.raises(SC.BuildDiskFullError) as e:
    ck.save(8, _state(2.0), {"at": 8})
  assert "disk filled while saving step 8" in e.value.strerror
  assert "resumes from step 4, which is intact" in e.value.strerror
  monkeypatch.undo()
  ck.close()
  _, meta, step = SC.StageCheckpoints(tmp_path / "codec").restore(_state(0.0))
  assert (step, meta) == (4, {"at": 4})


def test_other_save_errors_are_not_called_disk_full(tmp_path, monkeypatch):
  ck = SC.StageCheckpoints(tmp_path / "codec", every_s=0.0)
  monkeypatch.setattr(ck._mngr, "save",
                      lambda *a, **k: (_ for _ in ()).throw(
                          PermissionError(errno.EACCES, "denied")))
  with pytest.raises(PermissionError):
    ck.save(1, _state(1.0), {})


def test_done_marker_tracks_the_outputs(tmp_path):
  out = tmp_path / "codec.npz"
  out.write_bytes(b"weights")
  assert not SC.is_done(tmp_path / "codec")
  SC.mark_done(tmp_path / "codec", {"codec": out}, {"seconds": 1.0})
  assert SC.is_done(tmp_path / "codec")
  out.write_bytes(b"other weights")  # replaced since: not done any more
  assert not SC.is_done(tmp_path / "codec")


def test_build_dir_default_is_outside_the_checkout(monkeypatch):
  monkeypatch.delenv("MRT_WORLD_BUILD_DIR", raising=False)
  d = SC.build_dir()
  assert REPO not in d.parents and d.name == "world_build"
  monkeypatch.setenv("MRT_WORLD_BUILD_DIR", "/tmp/some_build")
  assert SC.build_dir() == pathlib.Path("/tmp/some_build")


# ---- the build tool ----------------------------------------------------------
def _build(*args) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, str(REPO / "tools" / "build_reference_world.py"),
       "--quick", *args], capture_output=True, text=True, cwd=REPO,
      timeout=900)


def _sha(p: pathlib.Path) -> str:
  return hashlib.sha256(p.read_bytes()).hexdigest()


def test_build_refuses_a_changed_stage_recipe(tmp_path):
  import build_reference_world as tool
  rec = tool.stage_recipe(tool.recipe(True, 0), "codec", None)
  assert rec["settings"] == tool.QUICK["codec"] and rec["inputs"] == {}
  old = {**rec, "settings": {**rec["settings"], "steps": 99}}
  (tmp_path / "codec").mkdir()
  (tmp_path / "codec" / "recipe.json").write_text(json.dumps(old))
  r = _build("--build-dir", str(tmp_path), "--stage", "codec")
  assert r.returncode == 2, r.stderr[-2000:]
  assert "stage codec" in r.stderr and "another recipe" in r.stderr
  assert "settings.steps: 99 -> 30" in r.stderr
  assert sorted(p.name for p in (tmp_path / "codec").iterdir()) == [
      "recipe.json"]


@pytest.mark.slow
def test_interrupted_codec_stage_resumes_to_identical_weights(tmp_path):
  """--quick codec stage: stopped after step 12 and rerun == one run."""
  whole, parts = tmp_path / "whole", tmp_path / "parts"
  r = _build("--build-dir", str(whole), "--stage", "codec")
  assert r.returncode == 0, r.stderr[-2000:]
  r = _build("--build-dir", str(parts), "--stage", "codec",
             "--stop-after-steps", "12")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "paused at step 12" in r.stderr
  assert not (parts / "assets" / "codec.npz").exists()
  r = _build("--build-dir", str(parts), "--stage", "codec")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resumed from the checkpoint at step 12" in r.stderr
  assert _sha(parts / "assets" / "codec.npz") == _sha(
      whole / "assets" / "codec.npz")
  r = _build("--build-dir", str(parts), "--stage", "codec")
  assert r.returncode == 0 and "stage codec: done" in r.stderr


@pytest.mark.slow
def test_interrupted_teacher_stage_resumes_to_identical_weights(tmp_path):
  """--quick teacher stage (on the shipped codec and style model): stopped
  after step 12 and rerun == one run."""
  from mrt_distill.world.runtime import assets as A
  out = {}
  for name, stop in (("whole", None), ("parts", "12")):
    dest = tmp_path / name / "assets"
    dest.mkdir(parents=True)
    for f in list(A.ASSET_DIR.glob("codec.npz*")) + list(
        A.ASSET_DIR.glob("style.npz*")):
      shutil.copy(f, dest)
    args = ["--build-dir", str(tmp_path / name), "--assets", str(dest),
            "--stage", "teacher"]
    if stop:
      r = _build(*args, "--stop-after-steps", stop)
      assert r.returncode == 0, r.stderr[-2000:]
      assert "paused at step 12" in r.stderr
      assert not (dest / "teacher.npz").exists()
    r = _build(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    if stop:
      assert "resumed from the checkpoint at step 12" in r.stderr
    out[name] = _sha(dest / "teacher.npz")
  assert out["whole"] == out["parts"]


def test_teacher_recipe_names_the_weights_it_reads():
  """A rebuilt codec changes the teacher's recipe: its checkpoints, trained
  on the old codec's tokens, are then refused instead of resumed."""
  import build_reference_world as tool

  class Assets:
    MissingAssetError = FileNotFoundError
    ASSET_DIR = "/nowhere"
    shas = {"codec": "c1", "style": "s1"}

    @classmethod
    def recorded_sha256(cls, name):
      if name not in cls.shas:
        raise FileNotFoundError(name)
      return cls.shas[name]

  rec = tool.recipe(False, 0)
  a = tool.stage_recipe(rec, "teacher", Assets)
  assert a["inputs"] == {"codec": "c1", "style": "s1"}
  assert a["settings"] == tool.FULL["teacher"] and a["world"] == tool.WORLD
  Assets.shas = {"codec": "c2", "style": "s1"}
  assert SC.recipe_diff(a, tool.stage_recipe(rec, "teacher", Assets)) == {
      "inputs.codec": ("c1", "c2")}
  Assets.shas = {"style": "s1"}
  with pytest.raises(SystemExit, match="reads the codec weights, which are "
                     "not built"):
    tool.stage_recipe(rec, "teacher", Assets)
