"""The distillation host loop: exact resume, config checks, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrt_distill import main as cli_main
from mrt_distill.distill import config_io, loop


def _tiny(steps: int, **overrides):
  cfg = config_io.load_config("reference_cpu:tiny")
  cfg.train.steps = steps
  cfg.train.log_every = 1
  cfg.train.eval_every = 1000  # eval compiles a second function; not here
  cfg.train.checkpoint_every = 2
  cfg.optim.decay_steps = 10
  for k, v in overrides.items():
    config_io.apply_overrides(cfg, [f"{k}={v!r}"])
  return cfg


def _metrics(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text(
  ).splitlines()]
  return {r["step"]: {k: v for k, v in r.items()
                      if k.startswith("loss/") or k == "grad_norm"}
          for r in rows if "loss/total" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An uninterrupted 5-step run, and a 3-step run continued to 5 in the
  same workdir (it resumes from the step-3 checkpoint)."""
  straight = tmp_path_factory.mktemp("straight")
  loop.train(_tiny(5), straight)
  resumed = tmp_path_factory.mktemp("resumed")
  summary, _, _ = loop.train(_tiny(3), resumed)
  assert summary["steps"] == 3
  summary, _, _ = loop.train(_tiny(5), resumed)
  assert summary["steps"] == 5
  return straight, resumed


def test_resumed_run_equals_uninterrupted_run(runs):
  straight, resumed = runs
  a, b = _metrics(straight), _metrics(resumed)
  assert sorted(a) == [1, 2, 3, 4, 5] and sorted(b) == [1, 2, 3, 4, 5]
  # Same data order (prompt iterator, rollout sessions, replay sampling)
  # and same per-step rngs: bitwise equal on CPU after the resume.
  for step in (4, 5):
    assert a[step] == b[step], step
  ckpts = sorted(int(p.name) for p in (resumed / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert ckpts[-1] == 5
  summary = json.loads((resumed / "train_summary.json").read_text())
  assert summary["stopped"] == "steps"
  png = resumed / "loss_curves.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_of_another_config_is_refused_and_kept(runs):
  _, resumed = runs
  before = sorted(p.name for p in (resumed / "checkpoints").iterdir())
  with pytest.raises(loop.CheckpointMismatchError,
                     match=r"another config.*rollout\.batch.*fresh --workdir"):
    loop.train(_tiny(7, **{"rollout.batch": 2}), resumed)
  assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == before


def test_config_overrides_and_errors():
  cfg = config_io.load_config("reference_cpu")
  config_io.apply_overrides(cfg, ["train.steps=7", "losses.spectral=0",
                                  "prompts.file=my.txt",
                                  "mesh_shape=(2, 1, 1)"])
  assert cfg.train.steps == 7 and cfg.losses.spectral == 0.0
  assert isinstance(cfg.losses.spectral, float)
  assert cfg.prompts.file == "my.txt" and cfg.mesh_shape == (2, 1, 1)
  with pytest.raises(ValueError, match=r"'train.stepz' does not exist; did "
                                       r"you mean train.steps"):
    config_io.apply_overrides(cfg, ["train.stepz=3"])
  with pytest.raises(ValueError, match=r"'train.steps' is a int \(7\); "
                                       r"'many' is a str"):
    config_io.apply_overrides(cfg, ["train.steps=many"])
  with pytest.raises(ValueError, match="must look like"):
    config_io.apply_overrides(cfg, ["train.steps"])
  with pytest.raises(ValueError, match=r"not found.*reference_cpu"):
    config_io.load_config("no_such_config")
  with pytest.raises(ValueError, match="unknown arg 'big'"):
    config_io.load_config("reference_cpu:big")


def test_distill_cli_reports_a_bad_key_in_one_line(capsys, tmp_path):
  rc = cli_main.main(["distill", "--workdir", str(tmp_path / "w"),
                      "--config.train.stepz=3"])
  err = capsys.readouterr().err
  assert rc == 1
  assert "config key 'train.stepz' does not exist" in err
  assert "Traceback" not in err
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("name,chips", [("mrt_base_v5e", 16),
                                        ("mrt_large_v6e", 64)])
def test_pod_configs_fit_their_slices(name, chips):
  import jax
  from mrt_distill.distill import student as S
  from mrt_distill.teacher.load import load_teacher_config

  cfg = config_io.load_config(name)
  d, f, t = cfg.mesh_shape
  assert d * f * t == chips
  for b in (cfg.train.batch, cfg.rollout.batch):
    assert b % (d * f) == 0
  tcfg = load_teacher_config(cfg.magenta_rt.gin)
  scfg = loop.student_config(cfg, tcfg)
  assert scfg.context_chunks == 5  # 10 s of 2 s chunks, cacheable
  shapes = jax.eval_shape(lambda k: S.init_student_params(scfg, k),
                          jax.random.key(0))
  train, frozen = S.split_params(shapes)
  frac = S.count(train) / (S.count(train) + S.count(frozen))
  assert 0.001 < frac < 0.05, frac
  with pytest.raises(ValueError, match="needs the real Magenta RT assets"):
    loop.load_world(cfg)


def test_bad_prompt_file_fails_fast_with_its_line(capsys, tmp_path):
  bad = tmp_path / "prompts.txt"
  bad.write_text("techno\n# a comment\nfunk:0.5, flute:lots\n")
  rc = cli_main.main(["distill", "--config", "reference_cpu:tiny",
                      "--workdir", str(tmp_path / "w"),
                      f"--config.prompts.file={bad}"])
  err = capsys.readouterr().err
  assert rc == 1
  assert "prompts.txt, line 3" in err and "flute:lots" in err
  assert not (tmp_path / "w").exists()
  assert bad.read_text().startswith("techno\n")  # the user's file is intact


def test_a_mesh_larger_than_the_machine_is_refused_before_any_work(tmp_path):
  cfg = _tiny(2)
  cfg.mesh_shape = (2, 1, 1)
  with pytest.raises(ValueError, match=r"needs 2 devices, only 1.*mesh_shape"):
    loop.train(cfg, tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_nan_rollouts_stop_the_run_and_keep_the_checkpoint(tmp_path,
                                                           monkeypatch):
  from mrt_distill.distill import rollout as R
  real_next = R.RolloutGenerator.next
  calls = {"n": 0}

  def poisoned(self):
    out = real_next(self)
    calls["n"] += 1
    # Calls 1-2 build the eval batch, 3-4 feed steps 1-2 (checkpointed at
    # step 2); from step 3 on every example carries NaN latents.
    if calls["n"] > 4:
      out["latents"] = out["latents"] * float("nan")
    return out

  monkeypatch.setattr(R.RolloutGenerator, "next", poisoned)
  cfg = _tiny(8, **{"train.max_nonfinite": 1, "rollout.replay_capacity": 4,
                    "rollout.updates_per_rollout": 1})
  with pytest.raises(loop.NonFiniteError, match=r"NaN/Inf.*last good "
                                                r"checkpoint"):
    loop.train(cfg, tmp_path / "w")
  kept = sorted(int(p.name) for p in (tmp_path / "w" / "checkpoints"
                                      ).iterdir() if p.name.isdigit())
  assert kept == [2]
  rows = _metrics(tmp_path / "w")
  assert all(np.isfinite(rows[s]["loss/total"]) for s in (1, 2))
  assert not np.isfinite(rows[3]["loss/total"])
