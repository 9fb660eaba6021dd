"""Benchmark the distillation loop's parts, side by side in one run.

  python tools/bench_train.py --json                     # reference world
  python tools/bench_train.py --config reference_cpu:tiny --json

Measures, after warm-up (compiles excluded):
  * matmul peak: a 2048^3 f32 matmul, the ceiling for this machine;
  * rollout: teacher chunks per second (batched, KV-cached, CFG decode);
  * train step: steps/s, examples/s, XLA's FLOPs per step and the achieved
    FLOP/s as a fraction of the measured matmul peak;
  * one chunk at batch 1: teacher vs student ms per chunk and the speedup.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mrt_distill.distill import config_io, loop  # noqa: E402
from mrt_distill.distill import student as S  # noqa: E402
from mrt_distill.distill.stream import StudentStreamer  # noqa: E402
from mrt_distill.style import mixing  # noqa: E402


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
  """Achieved FLOP/s of an n^3 f32 matmul (the machine's practical peak)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(reps):
    out = f(a)
  out.block_until_ready()
  return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def _time(fn, reps: int) -> float:
  fn()
  t0 = time.perf_counter()
  for _ in range(reps):
    fn()
  return (time.perf_counter() - t0) / reps


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="reference_cpu")
  p.add_argument("--rollout-calls", type=int, default=5)
  p.add_argument("--train-steps", type=int, default=10)
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)

  config = config_io.load_config(args.config)
  peak = matmul_peak()
  with tempfile.TemporaryDirectory() as tmp:
    run, state, step_fn = loop.build(config, pathlib.Path(tmp))
  g = run.world.geometry

  # Rollouts.
  run.replay.add(run.rollout.next())  # compile + first batch
  t_roll = _time(lambda: run.replay.add(run.rollout.next()),
                 args.rollout_calls)
  chunks_per_s = run.rollout.batch / t_roll

  # Train step: XLA's cost model of the compiled step, then wall time.
  batch = loop._batch(run, run.replay.sample(int(config.train.batch)))
  key = jax.random.PRNGKey(0)
  compiled = step_fn.lower(state, batch, key).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))
  holder = {"state": state}

  def one_step():
    holder["state"], m = step_fn(holder["state"], batch, key)
    jax.block_until_ready(m)

  t_step = _time(one_step, args.train_steps)
  steps_per_s = 1.0 / t_step
  b = int(config.train.batch)

  # One chunk at batch 1, teacher vs student.
  s = holder["state"]
  streamer = StudentStreamer(run.model, S.merge_params(s.params, s.frozen),
                             run.world.codec, run.world.style_model,
                             run.scaler)
  emb = mixing.embed_prompt_mix(run.world.style_model, run.held_out[0])[None]
  system = run.rollout.system
  states = system.init_states(1)
  t_teacher = _time(lambda: system.generate_chunks(states, emb, seed=0), 3)
  t_student = _time(lambda: streamer.stream(emb, 1, 0), 5)

  upr = int(config.rollout.updates_per_rollout)
  report = {
      "config": config.config_source,
      "devices": [str(d) for d in jax.devices()],
      "matmul_peak_gflops": peak / 1e9,
      "rollout": {"batch": run.rollout.batch,
                  "seconds_per_call": t_roll,
                  "chunks_per_s": chunks_per_s,
                  "audio_seconds_per_s": chunks_per_s * g.chunk_seconds},
      "train_step": {"batch": b, "steps_per_s": steps_per_s,
                     "examples_per_s": steps_per_s * b,
                     "gflop_per_step": flops / 1e9,
                     "achieved_gflops": flops * steps_per_s / 1e9,
                     "fraction_of_matmul_peak": flops * steps_per_s / peak},
      # A loop step = one train step + 1/updates_per_rollout rollout calls.
      "loop_steps_per_s_estimate": 1.0 / (t_step + t_roll / upr),
      "chunk_batch1": {"teacher_ms": 1000 * t_teacher,
                       "student_ms": 1000 * t_student,
                       "speedup": t_teacher / t_student,
                       "teacher_rtf": g.chunk_seconds / t_teacher,
                       "student_rtf": g.chunk_seconds / t_student},
      "trainable_fraction": run.trainable_fraction,
  }
  if args.json:
    print(json.dumps(report, indent=2))
  else:
    for k, v in report.items():
      print(f"{k}: {v}")
  ok = all(math.isfinite(x) for x in (chunks_per_s, steps_per_s))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
