"""The host loop of `mrt-distill distill`: build, resume, train, checkpoint.

  prompts (grain) -> teacher rollouts -> replay buffer -> sharded train step
  -> orbax checkpoints (student state, step, rollout, replay, prompt
  iterator; the teacher is referenced by name, never copied) -> report.

Resume is automatic: a workdir with checkpoints continues from the newest
one, and the data order continues exactly (prompt iterator, rollout sessions
and RNGs, replay buffer are all in the checkpoint), so a resumed run's
metrics equal an uninterrupted run's on CPU, after SIGTERM (a checkpoint at
the next step) or SIGKILL (the steps since the last checkpoint are redone
identically). A newest checkpoint that cannot be read is skipped, with a
warning naming its step, for the one before it, and moved aside rather than
deleted; a checkpoint of another config is refused before the slow build.
All of that lives in `checkpoints.py`; the metrics log in `metric_writer.py`.

NaN/Inf: the train step skips such updates and counts them; the loop names
each skipped step and its non-finite loss terms (`describe_nonfinite`) and
stops after `train.max_nonfinite`, leaving the last checkpoint intact.
"""

from __future__ import annotations

import json
import logging
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill import atomic
from mrt_distill import distributed
from mrt_distill.distill import checkpoints
from mrt_distill.distill import limits
from mrt_distill.distill import prompt_source
from mrt_distill.distill import prompts as P
from mrt_distill.distill import student as S
from mrt_distill.distill.subchunks import split_examples
from mrt_distill.distill import train_step as T
from mrt_distill.distill import workdir as workdirs
from mrt_distill.distill.losses import LossWeights, NoiseSchedule
from mrt_distill.distill.metric_writer import MetricWriter
from mrt_distill.distill.plots import plot_loss_curves
from mrt_distill.distill.rollout import ReplayBuffer, RolloutGenerator
from mrt_distill.distill.run import Run
from mrt_distill.distill.stream import StudentStreamer

log = logging.getLogger("mrt_distill.distill")

# Re-exported from checkpoints.py, where they live, for `loop.<name>` users.
CheckpointMismatchError = checkpoints.CheckpointMismatchError
CheckpointUnreadableError = checkpoints.CheckpointUnreadableError
UNREADABLE_DIR = checkpoints.UNREADABLE_DIR
check_resume_config = checkpoints.check_resume_config


class NonFiniteError(RuntimeError):
  """Too many steps with NaN/Inf losses or gradients."""


# ---- prompts -------------------------------------------------------------------
def builtin_prompts(seed: int, transition_pairs: int, transition_chunks: int,
                    mix_pairs: int):
  """(train records, held-out prompts) from the reference world's words.

  Training: every style word with one of its own descriptor words, tempo or
  mood words ("dark techno"), two-style weighted mixes and A -> B
  transitions. Held out: the bare style names (what the report scores).
  """
  from mrt_distill.world import music
  from mrt_distill.world.music import descriptors

  plain = []
  for name, style in music.STYLES.items():
    for word in (style.words[1:] + descriptors.TEMPO_WORDS
                 + descriptors.MOOD_WORDS):
      plain.append(P.PromptRecord(f"{word} {name}"))
  rng = np.random.default_rng(seed)
  names = list(music.STYLES)
  mixes = []
  for _ in range(mix_pairs):
    a, b = rng.choice(len(names), 2, replace=False)
    w = float(np.round(rng.uniform(0.2, 0.8), 2))
    mixes.append(P.PromptRecord(f"{names[a]}:1.0, {names[b]}:{w}"))
  trans = P.make_transitions(plain, transition_pairs, transition_chunks,
                             seed) if transition_pairs else []
  return plain + mixes + trans, list(names)


# ---- building blocks -------------------------------------------------------------
def student_config(config, teacher_cfg) -> S.StudentConfig:
  s = config.student
  return S.StudentConfig(
      teacher=teacher_cfg, lora_rank=int(s.lora_rank),
      head_init_scale=float(s.get("head_init_scale", 0.0)),
      style_bias_init=float(s.get("style_bias_init", 0.0)),
      style_in_zero_init=bool(s.get("style_in_zero_init", False)),
      chunk_frames=int(s.get("chunk_frames", 0)),
      coupled=bool(s.get("coupled", False)),
      token_head=bool(s.get("token_head", False)),
      token_feedback=bool(s.get("token_feedback", False)),
      frame_state=bool(s.get("frame_state", False)),
      head_layers=s.get("head_layers", 1),
      pick_temperature=s.get("pick_temperature", 1.0),
      noise=NoiseSchedule(sigma_min=s.sigma_min, sigma_max=s.sigma_max,
                          sigma_data=s.sigma_data, num_scales=s.num_scales))


def own_picks_from(config) -> str:
  """student.own_picks_from, "forced" for configs written before it."""
  return str(config.student.get("own_picks_from", "forced"))


def imle_select(config) -> str:
  """student.imle_select, "latent" for configs written before it existed."""
  return str(config.student.get("imle_select", "latent"))


def style_embedder(world, weights: LossWeights):
  """The differentiable style-model audio tower for the `style` loss term,
  or None when the term is off.

  Raises:
    ValueError: the term is on but the world's style model has no JAX audio
      tower (MusicCoCa is a TF SavedModel here), or it reads audio at
      another rate than the codec writes.
  """
  if not weights.style:
    return None
  sm = world.style_model
  if not hasattr(sm, "audio_embedder"):
    raise ValueError(
        f"losses.style={weights.style} needs a style model with a "
        f"differentiable JAX audio tower; {type(sm).__name__} has none. Set "
        f"--config.losses.style=0")
  rate = sm.audio_embedder_sample_rate
  if rate != world.geometry.sample_rate:
    raise ValueError(
        f"losses.style: the style model reads {rate} Hz audio but the codec "
        f"writes {world.geometry.sample_rate} Hz; set "
        f"--config.losses.style=0")
  return sm.audio_embedder()


def _mesh_shape(config) -> tuple[int, int, int]:
  d, f, t = (int(x) for x in config.mesh_shape)
  if d == -1:
    n = len(jax.devices())
    if n % (f * t):
      raise ValueError(f"{n} devices do not divide into fsdp x tensor = "
                       f"{f} x {t}")
    d = n // (f * t)
  return d, f, t


# ---- the run -------------------------------------------------------------------------
def build(config, workdir: pathlib.Path):
  """-> (Run, TrainState, jitted step)."""
  # Prompts first: a bad prompt file fails before anything slow happens.
  p = config.prompts
  if p.file:
    records = prompt_source.load_prompt_source(p.file,
                                   default_transition_chunks=p.transition_chunks)
    held_out = list(dict.fromkeys(r.start for r in records))[:10]
  else:
    records, held_out = builtin_prompts(int(config.seed), p.transition_pairs,
                                        p.transition_chunks, p.mix_pairs)
  mesh = T.make_mesh(_mesh_shape(config))
  T.check_batch_divides(int(config.train.batch), mesh)
  # Config mistakes before the world loads (seconds on CPU, minutes on pods).
  optimizer = T.make_optimizer(config.optim)
  weights = LossWeights(**config.losses.to_dict())
  T.check_energy_draws(weights, int(config.student.imle_samples))
  T.check_imle_select(imle_select(config))
  T.check_own_picks_from(own_picks_from(config))
  T.check_coupled_draws(bool(config.student.get("coupled", False)),
                        int(config.student.imle_samples))
  T.check_token_kl(weights, bool(config.student.get("token_head", False)))
  from mrt_distill.world.runtime import load_world
  world = load_world(config)  # the one way to a world (world/runtime/load.py)
  style_embed = style_embedder(world, weights)
  g = world.geometry
  scfg = student_config(config, world.teacher_cfg)
  scaler = S.LatentScaler.for_codec(world.codec, scfg.noise.sigma_data)
  model = S.StudentModel(scfg, books=S.TokenBooks.for_codec(
      world.codec, g, scaler) if scfg.token_head else None)
  key = jax.random.PRNGKey(int(config.seed))
  full = S.from_teacher(scfg, world.teacher_params, key)
  trainable, frozen = S.split_params(full)
  n_train, n_all = S.count(trainable), S.count(full)
  specs = S.student_partition_spec(scfg)
  t_specs, f_specs = S.split_params(specs)
  t_sh = T.param_shardings(t_specs, mesh)
  f_sh = T.param_shardings(f_specs, mesh)
  trainable = jax.device_put(trainable, t_sh)
  frozen = jax.device_put(frozen, f_sh)
  state = T.init_state(trainable, frozen, optimizer)
  state_sh = T.state_shardings(state, t_sh, f_sh, mesh)
  state = jax.device_put(state, state_sh)
  step_fn = T.jit_train_step(
      T.make_train_step(model, optimizer, codec=world.codec, scaler=scaler,
                        weights=weights,
                        style_drop_prob=float(config.student.style_drop_prob),
                        imle_samples=int(config.student.imle_samples),
                        style_embed=style_embed,
                        imle_select=imle_select(config),
                        feedback_noise=float(
                            config.student.get("feedback_noise", 0.0)),
                        own_picks=float(
                            config.student.get("own_picks", 0.0)),
                        own_picks_from=own_picks_from(config)),
      state_sh, mesh, coupled=scfg.coupled,
      soft_tokens=bool(weights.token_kl))

  dataset = P.prompt_dataset(records, seed=int(config.seed),
                             process_index=jax.process_index(),
                             process_count=jax.process_count())
  prompt_iter = iter(dataset)
  system = world.teacher_system(**config.sampling.to_dict())
  r = config.rollout
  rollout = RolloutGenerator(system, prompt_iter, batch=int(r.batch),
                             session_chunks=int(r.session_chunks),
                             seed=int(config.seed),
                             on_policy_prob=float(r.on_policy_prob),
                             coupled=scfg.coupled,
                             teacher_log_probs=bool(weights.token_kl))
  replay = ReplayBuffer(int(r.replay_capacity), int(config.seed) + 1)
  run = Run(config, world, model, scaler, mesh, rollout, replay, dataset,
            prompt_iter, held_out, weights, n_train / n_all, style_embed)
  log.info("student: %s trainable of %s parameters (%.2f%%), LoRA rank %d; "
           "geometry %s; mesh %s", f"{n_train:,}", f"{n_all:,}",
           100 * n_train / n_all, scfg.lora_rank, g.name, dict(mesh.shape))
  return run, state, step_fn


def _host_metrics(metrics) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def describe_nonfinite(step: int, metrics: dict[str, float],
                       weights: LossWeights) -> str:
  """Why a step's update was skipped, from that step's metrics: the loss
  terms that were NaN/Inf (terms with weight 0 never reach the loss and are
  named apart), or the gradients when every term was finite (e.g. a sqrt
  at 0 inside a term)."""
  def weight(key):
    name = key[len("loss/"):]
    return 1.0 if name == "total" else float(getattr(weights, name, 1.0))

  bad = sorted((k for k, v in metrics.items()
                if k.startswith("loss/") and not np.isfinite(v)),
               key=lambda k: (k == "loss/total", k))
  counted = [f"{k}={metrics[k]}" for k in bad if weight(k)]
  ignored = [f"{k}={metrics[k]}" for k in bad if not weight(k)]
  if counted:
    what = f"non-finite {', '.join(counted)}"
  else:
    what = (f"non-finite gradients (grad_norm={metrics.get('grad_norm')}) "
            f"with every weighted loss term finite")
  if ignored:
    what += f" (also {', '.join(ignored)}, weight 0, ignored)"
  return f"step {step}: update skipped: {what}"


def _batch(run: Run, examples: dict[str, np.ndarray], sharded: bool = True):
  """Host examples -> global arrays. Sharded: `examples` are this process's
  rows of the global batch (all of it on one process)."""
  sh = T.batch_sharding(run.mesh) if sharded else T.replicated(run.mesh)
  keys = T.batch_keys(run.model.cfg.coupled, bool(run.weights.token_kl))
  if sharded:
    return distributed.global_batch(
        {k: np.asarray(examples[k]) for k in keys}, sh)
  return {k: jax.device_put(jnp.asarray(examples[k]), sh) for k in keys}


def _eval_batch(run: Run):
  """A fixed batch from held-out prompts: cold starts and second chunks."""
  records = iter([P.PromptRecord(p).to_dict() for p in run.held_out] * 4)
  gen = RolloutGenerator(run.rollout.system, records,
                         batch=min(run.rollout.batch, len(run.held_out)),
                         session_chunks=2, seed=int(run.config.seed) + 99,
                         coupled=run.model.cfg.coupled,
                         teacher_log_probs=bool(run.weights.token_kl))
  a, b = (_student_examples(run, gen.next()) for _ in range(2))
  return _batch(run, {k: np.concatenate([a[k], b[k]]) for k in a},
                sharded=False)


def _student_examples(run: Run, examples: dict[str, np.ndarray]):
  """Rollout examples at the student's chunk length (subchunks.py)."""
  return split_examples(examples, run.world.geometry,
                        run.model.cfg.geometry)


def _stop_reason(sigterm: bool, over_budget: bool) -> int:
  """0 go on, 1 SIGTERM, 2 time budget -- agreed by every process (the
  largest wins), since a process that stops alone deadlocks the others in
  the next collective."""
  reason = 1 if sigterm else 2 if over_budget else 0
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    reason = int(np.max(multihost_utils.process_allgather(np.int32(reason))))
  return reason


def train(config, workdir, claim=None) -> dict:
  """Runs (or resumes) a distillation; returns the summary dict.

  claim: the workdir's `workdir.claim` when the caller holds it (the CLI
  does, over the export and report too); by default claimed for this call.
  A workdir that is not new, empty or a run, or is in use, is refused
  before anything is written (workdir.py)."""
  workdir = pathlib.Path(workdir)
  limits.check(config)  # a bad number before any write or load
  if claim is None:
    with workdirs.claim(workdir, main=distributed.is_main()) as c:
      return train(config, workdir, claim=c)
  t_start = time.perf_counter()
  checkpoints.check_resume_config(workdir, config)  # before the slow build
  run, state, step_fn = build(config, workdir)
  if (config.rollout.on_policy_prob > 0 and run.model.cfg.geometry.chunk_frames
      != run.world.geometry.chunk_frames):  # a refusal: before any write
    raise ValueError(
        "rollout.on_policy_prob > 0 needs the student to write whole "
        "teacher chunks: set student.chunk_frames=0 or on_policy_prob=0")
  claim.start()
  mngr = checkpoints.manager(workdir, config)
  try:
    restored, latest = checkpoints.resume(
        mngr, workdir, lambda s: checkpoints.restore(mngr, state, run, s))
  except BaseException:
    mngr.close()
    raise
  if restored is not None:
    state = restored
    log.info("resumed from the checkpoint at step %d in %s", latest,
             mngr.directory)
  # After the resume: a refused workdir keeps the config.json it had.
  if distributed.is_main():
    atomic.write_text(workdir / "config.json",
                      config.to_json_best_effort(indent=2))

  eval_batch = _eval_batch(run)
  eval_fn = jax.jit(lambda st, b: T.compute_losses(
      run.model, S.merge_params(T.served_params(st), st.frozen), b,
      jax.random.PRNGKey(0), codec=run.world.codec, scaler=run.scaler,
      weights=run.weights, style_embed=run.style_embed,
      imle_samples=int(config.student.imle_samples),
      imle_select=imle_select(config))[1])
  holder = {"state": state}
  if config.rollout.on_policy_prob > 0:
    # Built once (its jitted chunk compiles once); the params follow the
    # training. The student plays with its serving guidance.
    streamer = StudentStreamer(run.model, None, run.world.codec,
                               run.world.style_model, run.scaler,
                               cfg_weight=float(config.student.cfg_weight))

    def student_codes(ctx_ids, style_ids, style_emb):
      s = holder["state"]
      streamer.params = S.merge_params(s.params, s.frozen)
      key = jax.random.fold_in(jax.random.PRNGKey(7), run.rollout.calls)
      return streamer.codes_for(ctx_ids, style_ids, style_emb, key)
    run.rollout.student_fn = student_codes

  stop = {"signal": None}

  def on_sigterm(signum, _frame):
    stop["signal"] = signum  # checkpoint at the next step boundary

  old_handler = signal.signal(signal.SIGTERM, on_sigterm)
  writer = MetricWriter(workdir, resume_step=int(state.step))
  tc = config.train
  steps, budget = int(tc.steps), float(tc.time_budget_minutes) * 60
  # This process's share of the global batch (all of it on one process).
  start, stop_row = distributed.local_slice(int(tc.batch),
                                            T.batch_sharding(run.mesh))
  local_rows = stop_row - start
  upr = int(config.rollout.updates_per_rollout)
  base_key = jax.random.PRNGKey(int(config.seed) + 17)
  step = int(state.step)
  first = step
  t_loop = time.perf_counter()
  rollout_s, chunks = 0.0, 0
  last: dict[str, float] = {}
  stopped = "steps"
  # Each step's metrics stay on device until the next log line; then one
  # transfer brings them all, so a skipped update is reported with its own
  # step and terms without a host sync per step.
  pending: list[tuple[int, Any]] = []
  skipped = int(jax.device_get(T.nonfinite_count(state.opt_state)))
  last_skip = ""
  try:
    while step < steps:
      if step % upr == 0 or run.replay.size == 0:
        t0 = time.perf_counter()
        run.replay.add(_student_examples(run, run.rollout.next()))
        rollout_s += time.perf_counter() - t0
        chunks += run.rollout.batch
      batch = _batch(run, run.replay.sample(local_rows))
      rng = jax.random.fold_in(base_key, step)
      state, metrics = step_fn(state, batch, rng)
      holder["state"] = state
      step += 1
      pending.append((step, metrics))
      if step % int(tc.log_every) == 0 or step == steps:
        for s, m in jax.device_get(pending):
          m = {k: float(v) for k, v in m.items()}
          if m["nonfinite"] > skipped:
            last_skip = describe_nonfinite(s, m, run.weights)
            log.warning("%s [%d skipped so far, max_nonfinite=%s]",
                        last_skip, int(m["nonfinite"]), tc.max_nonfinite)
          skipped = int(m["nonfinite"])
        pending = []
        last = _host_metrics(metrics)
        el = time.perf_counter() - t_loop
        rate = (step - first) / el
        last.update({"perf/steps_per_s": rate,
                     "perf/rollout_chunks_per_s": chunks / max(rollout_s,
                                                               1e-9)})
        writer.write(step, last)
        terms = " ".join(f"{k[5:]} {v:.4f}" for k, v in last.items()
                         if k.startswith("loss/") and k != "loss/total")
        log.info("step %d/%d | loss %.4f (%s) | %.2f steps/s, rollout %.1f "
                 "chunks/s | ETA %.0f s", step, steps, last["loss/total"],
                 terms, rate, last["perf/rollout_chunks_per_s"],
                 (steps - step) / max(rate, 1e-9))
        if last["nonfinite"] > int(tc.max_nonfinite):
          good = mngr.latest_step()
          kept = (f"the last good checkpoint (step {good}) in "
                  f"{mngr.directory} is intact (skipped updates never reach "
                  f"the parameters) and a rerun resumes from it"
                  if good is not None else "no checkpoint was written yet")
          raise NonFiniteError(
              f"stopped at step {step}: {int(last['nonfinite'])} steps had "
              f"NaN/Inf losses or gradients (max_nonfinite="
              f"{tc.max_nonfinite}; latest: {last_skip or 'in an earlier run'}"
              f"); {kept}. Lower optim.learning_rate or check the inputs")
      if step % int(tc.eval_every) == 0 or step == steps:
        ev = {f"eval/{k}": v for k, v in _host_metrics(
            eval_fn(state, eval_batch)).items()}
        writer.write(step, ev)
        last.update(ev)
        log.info("eval at step %d (held-out prompts): loss %.4f", step,
                 ev["eval/loss/total"])
      if step % int(tc.checkpoint_every) == 0 or step == steps:
        checkpoints.save(mngr, state, run, step,
                         P.iterator_state_to_json(run.prompt_iter))
      reason = _stop_reason(stop["signal"] is not None,
                            time.perf_counter() - t_start > budget)
      if reason == 1:
        stopped = "sigterm"
        break
      if reason == 2:
        stopped = "time_budget"
        log.warning("time budget of %.1f min reached at step %d",
                    budget / 60, step)
        break
    if mngr.latest_step() != step:
      checkpoints.save(mngr, state, run, step,
                       P.iterator_state_to_json(run.prompt_iter))
  finally:
    signal.signal(signal.SIGTERM, old_handler)
    writer.close()
    mngr.close()
  summary = {
      "config": config.get("config_source", config.name),
      "steps": step, "stopped": stopped,
      "train_seconds": time.perf_counter() - t_start,
      "trainable_fraction": run.trainable_fraction,
      "final_metrics": last,
      "workdir": str(workdir),
  }
  if distributed.is_main():
    atomic.write_text(workdir / "train_summary.json",
                      json.dumps(summary, indent=2))
  if jax.process_index() == 0:
    plot_loss_curves(workdir)
  return summary, run, state
