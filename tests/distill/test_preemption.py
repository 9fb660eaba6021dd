"""Preemption: a distill run killed at any moment resumes to the same bits.

Pods are preempted without warning (SIGKILL, a host lost), and a disk can
fill up or a host crash in the middle of a checkpoint write. What must hold:

  * the rerun of the same command continues from the newest complete
    checkpoint, and every step after it (the steps lost since that
    checkpoint included) gives bitwise the metrics, data order and weights
    of a run that was never interrupted;
  * a damaged newest checkpoint is skipped for the one before it, with a
    warning naming its step, and its files are kept (moved aside), never
    deleted; an unfinished orbax write (a tmp folder) is ignored and left.

The fast tests drive `checkpoints.resume` on real orbax checkpoints of a
small tree. The slow ones run the real `mrt-distill distill` command in
subprocesses (SIGKILL or SIGTERM at a seeded random step, a damaged
checkpoint) and share a persistent XLA compilation cache, so only the first
run pays for compiling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from mrt_distill.distill import checkpoints, config_io


def tree_hashes(root: pathlib.Path) -> dict[str, str]:
  """{relative path: sha256} of every file under root (folders included as
  entries, so a new empty folder counts as a change)."""
  out = {}
  for p in sorted(root.rglob("*")):
    rel = str(p.relative_to(root))
    out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file()
                else "<dir>")
  return out


# ---- checkpoints.resume on real orbax checkpoints (fast) ---------------------
def _config(**overrides):
  cfg = config_io.load_config("reference_cpu:tiny")
  config_io.apply_overrides(cfg, [f"{k}={v!r}" for k, v in overrides.items()])
  return cfg


def _write_checkpoints(workdir: pathlib.Path, steps, cfg):
  mngr = ocp.CheckpointManager(
      (workdir / "checkpoints").absolute(),
      options=ocp.CheckpointManagerOptions(create=True,
                                           enable_async_checkpointing=False))
  for s in steps:
    tree = {"w": np.full((4, 3), float(s), np.float32),
            "b": np.arange(3, dtype=np.int32) + s}
    mngr.save(s, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree),
        meta=ocp.args.JsonSave({"fingerprint": config_io.shape_fingerprint(
            cfg)})), force=True)
  mngr.wait_until_finished()
  mngr.close()


def _resume(workdir: pathlib.Path, cfg):
  """checkpoints.resume with the real meta read and fingerprint check; the
  state item stands in for the train state."""
  mngr = checkpoints.manager(workdir, cfg)

  def restore_one(step):
    checkpoints.check_fingerprint(checkpoints.read_meta(mngr, step), cfg,
                                  step, mngr.directory)
    return mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]

  try:
    return checkpoints.resume(mngr, workdir, restore_one), mngr.all_steps()
  finally:
    mngr.close()


def _damage(step_dir: pathlib.Path) -> str:
  """Deletes the state item's OCDBT manifest (as a crash before the data
  reached the disk would), -> its relative path."""
  victim = step_dir / "state" / "manifest.ocdbt"
  victim.unlink()
  return str(victim.relative_to(step_dir))


def test_damaged_newest_checkpoint_falls_back_and_is_kept(tmp_path, caplog):
  cfg = _config()
  _write_checkpoints(tmp_path, [3, 6], cfg)
  lost = _damage(tmp_path / "checkpoints" / "6")
  before = tree_hashes(tmp_path / "checkpoints" / "6")
  with caplog.at_level(logging.WARNING, logger="mrt_distill.distill"):
    (restored, step), steps_after = _resume(tmp_path, cfg)
  assert step == 3 and float(restored["w"][0, 0]) == 3.0
  assert steps_after == [3]  # step 6 can be saved again
  moved = tmp_path / checkpoints.UNREADABLE_DIR / "6"
  assert tree_hashes(moved) == before  # every remaining byte kept
  assert lost not in before
  text = caplog.text
  assert "the checkpoint at step 6" in text and "cannot be read" in text
  assert ("skipped the unreadable checkpoint(s) at step(s) 6 and resumed "
          "from step 3") in text


def test_unfinished_write_is_ignored_and_left(tmp_path, caplog):
  cfg = _config()
  _write_checkpoints(tmp_path, [3, 6], cfg)
  ckpts = tmp_path / "checkpoints"
  # A run killed between orbax's write and its final rename.
  (ckpts / "6").rename(ckpts / "6.orbax-checkpoint-tmp-1763700000000000")
  before = tree_hashes(tmp_path)
  with caplog.at_level(logging.WARNING, logger="mrt_distill.distill"):
    (restored, step), _ = _resume(tmp_path, cfg)
  assert step == 3 and int(restored["b"][0]) == 3
  assert tree_hashes(tmp_path) == before
  assert ("ignoring the unfinished checkpoint write for step 6" in caplog.text
          and "resuming from step 3" in caplog.text)


def test_no_readable_checkpoint_is_an_error_that_moves_nothing(tmp_path):
  cfg = _config()
  _write_checkpoints(tmp_path, [3, 6], cfg)
  for s in (3, 6):
    _damage(tmp_path / "checkpoints" / str(s))
  before = tree_hashes(tmp_path)
  with pytest.raises(checkpoints.CheckpointUnreadableError,
                     match=r"no checkpoint in .* can be read \(step 6: .*; "
                           r"step 3: .*left in place.*fresh --workdir"):
    _resume(tmp_path, cfg)
  assert tree_hashes(tmp_path) == before


def test_checkpoint_of_another_config_is_refused_not_skipped(tmp_path):
  _write_checkpoints(tmp_path, [3, 6], _config(**{"rollout.batch": 2}))
  before = tree_hashes(tmp_path)
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"step 6 .*another config.*rollout\.batch"):
    _resume(tmp_path, _config())
  with pytest.raises(checkpoints.CheckpointMismatchError, match="step 6"):
    checkpoints.check_resume_config(tmp_path, _config())  # the pre-build check
  checkpoints.check_resume_config(tmp_path, _config(**{"rollout.batch": 2}))
  assert tree_hashes(tmp_path) == before


# ---- the real command, killed and rerun (slow) ----------------------------------
STEPS = 12
RUN_ARGS = ("--config", "reference_cpu:tiny", "--no-report",
            f"--config.train.steps={STEPS}", "--config.train.log_every=1",
            "--config.train.checkpoint_every=3",
            "--config.train.eval_every=1000",
            f"--config.optim.decay_steps={STEPS}",
            # A wall-clock stop would make the step count load-dependent.
            "--config.train.time_budget_minutes=120.0")
KILL_SEED = 20260522  # -> step 5: two steps past the step-3 checkpoint


@pytest.fixture(scope="module")
def jax_env(tmp_path_factory):
  """Subprocess environment: CPU only, and one persistent compilation
  cache for every run of the session (min size/time 0: cache everything)."""
  cache = tmp_path_factory.getbasetemp() / "jax_compile_cache"
  cache.mkdir(exist_ok=True)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  return env


def _start(workdir: pathlib.Path, env, log_path: pathlib.Path):
  return subprocess.Popen(
      [sys.executable, "-m", "mrt_distill.main", "distill",
       "--workdir", str(workdir), *RUN_ARGS],
      env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def _run(workdir, env, log_path, timeout=900) -> str:
  proc = _start(workdir, env, log_path)
  assert proc.wait(timeout=timeout) == 0, log_path.read_text()[-3000:]
  return log_path.read_text()


def _rows(workdir: pathlib.Path) -> list[dict]:
  """metrics.jsonl rows without the wall-clock perf/* fields."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  return [{k: v for k, v in json.loads(line).items()
           if not k.startswith("perf/")}
          for line in path.read_text().splitlines() if line.strip()]


def _by_step(rows) -> dict[tuple[int, bool], dict]:
  return {(r["step"], any(k.startswith("eval/") for k in r)): r
          for r in rows}


def _finished_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit())


def _checkpoint(workdir: pathlib.Path, step: int):
  d = workdir / "checkpoints" / str(step)
  state = ocp.PyTreeCheckpointer().restore((d / "state").absolute())
  meta = json.loads((d / "meta" / "metadata").read_text())
  return state, meta


def _assert_same_config(a: pathlib.Path, b: pathlib.Path):
  """Guards the comparisons: a config edited between two runs would show up
  as a (misleading) metrics difference."""
  assert (a / "config.json").read_text() == (b / "config.json").read_text()


def _assert_same_checkpoint(a: pathlib.Path, b: pathlib.Path, step: int):
  import jax
  (sa, ma), (sb, mb) = _checkpoint(a, step), _checkpoint(b, step)
  # Data order: prompt iterator, rollout sessions and RNG, replay buffer.
  assert ma == mb
  la, ta = jax.tree_util.tree_flatten_with_path(sa)
  lb, tb = jax.tree_util.tree_flatten_with_path(sb)
  assert ta == tb
  for (path, x), (_, y) in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape, path
    assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, jax_env):
  """The uninterrupted run (it also fills the compilation cache)."""
  root = tmp_path_factory.mktemp("straight")
  t0 = time.perf_counter()
  _run(root / "w", jax_env, root / "log.txt")
  print(f"straight run: {time.perf_counter() - t0:.0f} s")
  return root / "w"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_sigkill_at_a_random_step_then_rerun_is_bitwise_uninterrupted(
    straight, jax_env, tmp_path):
  want = _by_step(_rows(straight))
  assert sorted(want) == [(s, False) for s in range(1, STEPS + 1)] + [
      (STEPS, True)]
  kill_at = random.Random(KILL_SEED).randint(4, STEPS - 4)
  work = tmp_path / "w"
  proc = _start(work, jax_env, tmp_path / "killed.txt")
  deadline = time.monotonic() + 900
  while proc.poll() is None and time.monotonic() < deadline:
    rows = _rows(work)
    if rows and rows[-1]["step"] >= kill_at:
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.005)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, (
      f"the run ended before step {kill_at} was seen: "
      f"{(tmp_path / 'killed.txt').read_text()[-2000:]}")
  killed_rows = _rows(work)
  _assert_same_config(straight, work)
  reached = killed_rows[-1]["step"]
  assert kill_at <= reached < STEPS
  assert not (work / "train_summary.json").exists()
  # Steps before the kill already match the uninterrupted run.
  for r in killed_rows:
    assert r == want[(r["step"], False)], r["step"]
  finished = _finished_steps(work)
  restore_point = max(finished) if finished else 0
  assert restore_point <= reached

  log = _run(work, jax_env, tmp_path / "resumed.txt")
  if restore_point:
    assert (f"resumed from the checkpoint at step {restore_point} "
            in log), log[-2000:]
  if reached > restore_point:
    assert (f"metrics.jsonl: dropped {reached - restore_point} rows logged "
            f"after step {restore_point}") in log, log[-2000:]
  # The rows the killed run logged after its last checkpoint were dropped at
  # resume and logged again: one row per step, and every step (the lost ones
  # (restore_point, reached] included) and the final eval bitwise equal to
  # the uninterrupted run's, in the same order.
  assert _rows(work) == _rows(straight)
  _assert_same_checkpoint(straight, work, STEPS)
  print(f"killed at step {reached} (aimed at {kill_at}); restored from "
        f"{restore_point}; recomputed {reached - restore_point} lost steps")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_sigterm_checkpoints_at_the_next_step_and_the_rerun_continues(
    straight, jax_env, tmp_path):
  """A preemption notice: the run checkpoints the step it is on, exits 0,
  and loses nothing."""
  term_at = random.Random(KILL_SEED + 4).randint(4, STEPS - 4)  # -> 6
  work = tmp_path / "w"
  proc = _start(work, jax_env, tmp_path / "stopped.txt")
  deadline = time.monotonic() + 900
  while proc.poll() is None and time.monotonic() < deadline:
    rows = _rows(work)
    if rows and rows[-1]["step"] >= term_at:
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.005)
  assert proc.wait(timeout=600) == 0
  log = (tmp_path / "stopped.txt").read_text()
  assert "stopped by SIGTERM after a checkpoint; rerun the same command" in log
  _assert_same_config(straight, work)
  summary = json.loads((work / "train_summary.json").read_text())
  stopped_at = summary["steps"]
  assert summary["stopped"] == "sigterm" and term_at <= stopped_at < STEPS
  assert max(_finished_steps(work)) == stopped_at  # nothing to redo
  n_rows = len(_rows(work))
  assert _rows(work)[-1]["step"] == stopped_at

  log = _run(work, jax_env, tmp_path / "resumed.txt")
  assert f"resumed from the checkpoint at step {stopped_at} " in log
  want = _by_step(_rows(straight))
  got = _by_step(_rows(work)[n_rows:])
  assert sorted(got) == sorted(k for k in want if k[0] > stopped_at)
  for key, row in got.items():
    assert row == want[key], key
  assert _rows(work) == _rows(straight)  # nothing logged twice
  _assert_same_checkpoint(straight, work, STEPS)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_damaged_newest_checkpoint_resumes_from_the_previous_one(
    straight, jax_env, tmp_path):
  work = tmp_path / "w"
  shutil.copytree(straight, work)
  finished = _finished_steps(work)
  newest, previous = finished[-1], finished[-2]
  assert (newest, previous) == (STEPS, STEPS - 3)
  _damage(work / "checkpoints" / str(newest))
  kept = tree_hashes(work / "checkpoints" / str(newest))
  log = _run(work, jax_env, tmp_path / "log.txt")
  assert f"the checkpoint at step {newest} in" in log
  assert (f"skipped the unreadable checkpoint(s) at step(s) {newest} and "
          f"resumed from step {previous}") in log
  assert tree_hashes(work / checkpoints.UNREADABLE_DIR / str(newest)) == kept
  _assert_same_config(straight, work)
  # Rows after the previous checkpoint were dropped and logged again.
  assert f"dropped 4 rows logged after step {previous}" in log
  assert _rows(work) == _rows(straight)
  _assert_same_checkpoint(straight, work, STEPS)


def test_fingerprint_reads_keys_newer_than_the_checkpoint_as_their_default():
  """A checkpoint written before `optim.ema` was fingerprinted resumes into
  a config without a parameter average, and is refused -- naming the key --
  by one that keeps an average (another optimizer-state tree)."""
  cfg = _config()
  old = dict(config_io.shape_fingerprint(cfg))
  del old["optim.ema"]
  old["sha"] = "written-before"
  checkpoints.check_fingerprint({"fingerprint": old}, cfg, 3, "ckpts")
  on = _config(**{"optim.ema_decay": 0.99})
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"'optim.ema': \(False, True\)"):
    checkpoints.check_fingerprint({"fingerprint": old}, on, 3, "ckpts")
  # The decay itself changes no shape: another nonzero decay resumes.
  other = _config(**{"optim.ema_decay": 0.9})
  checkpoints.check_fingerprint(
      {"fingerprint": config_io.shape_fingerprint(on)}, other, 3, "ckpts")
