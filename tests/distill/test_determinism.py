"""Same seed, same config -> the same student, bit for bit, across processes.

Resume-equality tests (test_loop.py, test_preemption.py) compare runs that
share one compiled program or one compilation cache. This one starts two
independent `mrt-distill distill` processes at once, each compiling from
scratch, with different PYTHONHASHSEED values (so nothing may depend on set
or dict-of-str iteration order) and competing for the same cores (so nothing
may depend on thread timing), and requires identical weights, optimizer
state, data order and metrics. What breaks determinism on GPU/TPU, and the
knobs that restore it, are in docs/determinism.md.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

STEPS = 3
ARGS = ("--config", "reference_cpu:tiny", "--no-report",
        f"--config.train.steps={STEPS}", "--config.train.log_every=1",
        f"--config.train.checkpoint_every={STEPS}",
        "--config.train.eval_every=1000",
        "--config.train.time_budget_minutes=120.0")


def _state(workdir: pathlib.Path):
  d = workdir / "checkpoints" / str(STEPS)
  state = ocp.PyTreeCheckpointer().restore((d / "state").absolute())
  meta = json.loads((d / "meta" / "metadata").read_text())
  return state, meta


def _metrics(workdir: pathlib.Path):
  return [{k: v for k, v in json.loads(line).items()
           if not k.startswith("perf/")}
          for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_two_processes_give_bitwise_identical_students(tmp_path):
  import jax
  procs = []
  for i, hash_seed in enumerate(("0", "4242")):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONHASHSEED=hash_seed)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    log = (tmp_path / f"log{i}.txt").open("w")
    procs.append(subprocess.Popen(  # --no-cache: each compiles its own
        [sys.executable, "-m", "mrt_distill.main", "--no-cache", "distill",
         "--workdir", str(tmp_path / f"w{i}"), *ARGS],
        env=env, stdout=log, stderr=subprocess.STDOUT))
  for i, p in enumerate(procs):
    assert p.wait(timeout=1200) == 0, (tmp_path / f"log{i}.txt").read_text(
    )[-3000:]
  (sa, ma), (sb, mb) = _state(tmp_path / "w0"), _state(tmp_path / "w1")
  assert ma == mb  # prompt iterator, rollout sessions and RNG, replay
  la, ta = jax.tree_util.tree_flatten_with_path(sa)
  lb, tb = jax.tree_util.tree_flatten_with_path(sb)
  assert ta == tb
  trained = 0
  for (path, x), (_, y) in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape, path
    assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)
    trained += x.size
  assert int(np.asarray(sa["step"])) == STEPS and trained > 1000
  # Updates happened (Adam moments are nonzero): a run that trained nothing
  # would pass trivially.
  moments = [np.asarray(x) for x in jax.tree.leaves(sa["opt_state"])
             if np.asarray(x).ndim > 0]
  assert any(np.abs(x).max() > 0 for x in moments)
  assert _metrics(tmp_path / "w0") == _metrics(tmp_path / "w1")
