"""The distillation host loop: exact resume, config checks, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrt_distill import main as cli_main
from mrt_distill.distill import checkpoints, config_io, loop, metric_writer
from mrt_distill.world.runtime import load_world


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
  with pytest.raises(checkpoints.CheckpointMismatchError,
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
  with pytest.raises(ValueError, match=r"'train.steps' is an int \(7\); "
                                       r"'many' is a str: give an int"):
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
  # The coupled token head writes 16 x 1024 code logits per frame at v1
  # sizes and reads 16 x 256 noise dims (token_out + noise_in: ~3% of the
  # model); LoRA and the other heads ~5%. Measured 0.076 (base) / 0.082
  # (large); the uncoupled latent head was under 0.05.
  assert 0.001 < frac < 0.10, frac
  with pytest.raises(ValueError, match="needs the real Magenta RT assets"):
    load_world(cfg)


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


@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_nan_rollouts_stop_the_run_and_keep_the_checkpoint(
    tmp_path, monkeypatch, capsys, caplog):
  import hashlib
  import logging

  import jax
  import orbax.checkpoint as ocp
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

  def digest(step_dir):
    return {str(p.relative_to(step_dir)): hashlib.sha256(
        p.read_bytes()).hexdigest() for p in sorted(step_dir.rglob("*"))
            if p.is_file()}

  saved = {}
  real_save = checkpoints.save

  def recording_save(mngr, state, run, step, it_state):
    real_save(mngr, state, run, step, it_state)
    saved[step] = digest(workdir / "checkpoints" / str(step))

  monkeypatch.setattr(R.RolloutGenerator, "next", poisoned)
  monkeypatch.setattr(checkpoints, "save", recording_save)
  workdir = tmp_path / "w"
  overrides = {"train.steps": 8, "train.log_every": 1,
               "train.eval_every": 1000, "train.checkpoint_every": 2,
               "optim.decay_steps": 10, "train.max_nonfinite": 1,
               "rollout.replay_capacity": 4,
               "rollout.updates_per_rollout": 1,
               # The latent head reads the poisoned latents (a token head
               # trains on the codes alone).
               "student.coupled": False, "student.token_head": False,
               "student.token_feedback": False, "student.imle_samples": 4}
  with caplog.at_level(logging.WARNING, logger="mrt_distill.distill"):
    rc = cli_main.main(["distill", "--config", "reference_cpu:tiny",
                        "--workdir", str(workdir), "--no-report",
                        *(f"--config.{k}={v!r}" for k, v in overrides.items())])
  err = capsys.readouterr().err
  assert rc == 1 and "Traceback" not in err
  # The step and the offending terms, per skipped step and in the error.
  warned = [r.getMessage() for r in caplog.records
            if "update skipped" in r.getMessage()]
  assert len(warned) == 2, warned
  assert warned[0].startswith("step 3: update skipped: non-finite ")
  assert warned[1].startswith("step 4: update skipped: non-finite ")
  for term in ("loss/latent=nan", "loss/consistency=nan", "loss/total=nan"):
    assert term in warned[0]
  assert "[1 skipped so far, max_nonfinite=1]" in warned[0]
  assert err.startswith("mrt-distill distill: error: stopped at step 4: 2 "
                        "steps had NaN/Inf losses or gradients "
                        "(max_nonfinite=1; latest: step 4: update skipped: "
                        "non-finite ")
  assert "the last good checkpoint (step 2)" in err
  # The last good checkpoint: the only one, byte for byte as written, and
  # finite with no skipped update recorded in it.
  kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit())
  assert kept == [2] and sorted(saved) == [2]
  assert digest(workdir / "checkpoints" / "2") == saved[2]
  state = ocp.PyTreeCheckpointer().restore(
      (workdir / "checkpoints" / "2" / "state").absolute())
  leaves = [np.asarray(x) for x in jax.tree.leaves(state["params"])]
  assert leaves and all(np.isfinite(x).all() for x in leaves)
  rows = _metrics(workdir)
  assert all(np.isfinite(rows[s]["loss/total"]) for s in (1, 2))
  assert not np.isfinite(rows[3]["loss/total"])


def test_a_skipped_update_names_its_step_and_terms():
  from mrt_distill.distill.losses import LossWeights
  nan, inf = float("nan"), float("inf")
  m = {"loss/latent": 0.3, "loss/onset": nan, "loss/spectral": inf,
       "loss/total": nan, "grad_norm": nan, "nonfinite": 1.0}
  msg = loop.describe_nonfinite(7, m, LossWeights())
  assert msg == ("step 7: update skipped: non-finite loss/onset=nan, "
                 "loss/spectral=inf, loss/total=nan")
  # A NaN in a term of weight 0 never reaches the loss: named apart.
  msg = loop.describe_nonfinite(7, m, LossWeights(onset=0.0))
  assert msg == ("step 7: update skipped: non-finite loss/spectral=inf, "
                 "loss/total=nan (also loss/onset=nan, weight 0, ignored)")
  # Finite terms, NaN gradients (a sqrt at 0 inside a term).
  m = {"loss/latent": 0.3, "loss/total": 0.3, "grad_norm": nan}
  assert loop.describe_nonfinite(2, m, LossWeights()) == (
      "step 2: update skipped: non-finite gradients (grad_norm=nan) with "
      "every weighted loss term finite")


def test_metric_writer_drops_rows_logged_after_the_resume_checkpoint(tmp_path):
  """A run killed after its last checkpoint logged steps the resumed run
  logs again: the writer keeps one row per step (curves drawn once)."""
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": s, "loss/total": float(s)} for s in range(1, 6)]
  rows.insert(3, {"step": 3, "eval/loss/total": 0.5})
  text = "".join(json.dumps(r) + "\n" for r in rows)
  path.write_text(text)
  metric_writer.MetricWriter(tmp_path, resume_step=5).close()
  assert path.read_text() == text  # nothing after step 5: untouched
  writer = metric_writer.MetricWriter(tmp_path, resume_step=3)
  writer.write(4, {"loss/total": 4.0})
  writer.close()
  got = [json.loads(l) for l in path.read_text().splitlines()]
  assert got == rows[:4] + [{"step": 4, "loss/total": 4.0}]
  assert not path.with_name("metrics.jsonl.tmp").exists()
