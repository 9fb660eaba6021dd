"""Serving speed: the student's cached chunk step vs the teacher, per chunk.

  python tools/bench_chunk_step.py --json
  python tools/bench_chunk_step.py --geometries reference --json
  python tools/bench_chunk_step.py --geometries reference --chunk-frames 25,5,1 --json

For each geometry, measured side by side in one run at batch 1:
  * ms per chunk and RTF of the student's jitted cached `chunk_step` (k=1,
    no CFG and with CFG) and of the teacher's KV-cached decode (+ codec);
  * sequential network calls per chunk;
  * under "heads": ms per chunk of each student head (the uncoupled latent
    head, the token head with independent picks, the shipped token head
    with the recurrent pick), at w=0 and w=3, side by side;
  * encoder FLOPs per chunk, cached (new chunk + style) vs full window (XLA
    cost analysis of the two encoder calls);
  * compiles over a session that changes every control;
  * control delay (`StreamSession`): a consumer reads at real-time pace
    with `lead_chunks` = 2 while the prompt changes every 2 chunks; the delay
    runs from `set_prompt` to the first *played* sample produced with it
    (p50/p95 over the changes; `--delay-seconds 0` skips it);
  * with `--chunk-frames 25,5,1`: the same control delay for students with
    shorter chunks (`StudentConfig.chunk_frames`; same backbone, random
    heads, which is enough for timing) at `lead_chunks` = 1, under
    "short_chunks". The delay is between `lead` and `lead + 1` chunks (it
    depends on whether a change lands before or after the producer snapshots
    the controls for its next chunk), so shorter chunks are the way to a
    shorter delay, as long as the step still keeps up with the shorter
    chunk (`session_underruns` says).

`reference`: the shipped reference teacher and a student initialised from it.
`mrt_base`: Magenta RT Base sizes with random weights and the minimal codec
(SpectroStream is not shipped), so only its timings are meaningful.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mrt_distill.distill import student as S  # noqa: E402
from mrt_distill.distill.losses import NoiseSchedule  # noqa: E402
from mrt_distill.geometry import MASK_ID  # noqa: E402
from mrt_distill.serve.chunk_step import ChunkStepper, controls  # noqa: E402
from mrt_distill.serve.session import StreamSession  # noqa: E402

# Prompts the control-delay run cycles through (reference-vocabulary words).
DELAY_PROMPTS = ("techno", "jazz", "rock", "funk")


def _world(name: str, dtype: str = "auto"):
  """-> (teacher config in the dtype to run, params, codec, style model).
  Student and teacher run in the same dtype (`for_backend`: f32 on CPU)."""
  from mrt_distill.teacher.config import for_backend
  if name == "reference":
    from mrt_distill.world.runtime import load_world
    w = load_world("reference")
    return (for_backend(w.teacher_cfg, dtype), w.teacher_params, w.codec,
            w.style_model)
  if name == "mrt_base":
    from mrt_distill.codec.base import MinimalCodec
    from mrt_distill.style.base import MinimalStyleModel
    from mrt_distill.teacher.load import load_teacher_config
    from mrt_distill.teacher.model import numpy_init_params
    cfg = load_teacher_config("base")
    g = cfg.geometry
    return (for_backend(cfg, dtype), numpy_init_params(cfg, 0),
            MinimalCodec(g), MinimalStyleModel(g))
  raise ValueError(f"unknown geometry {name!r}: reference | mrt_base")


def _time(fn, reps):
  fn()
  t0 = time.perf_counter()
  for _ in range(reps):
    fn()
  return (time.perf_counter() - t0) / reps


def _flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def control_delay(stepper, params, style_model, seconds: float,
                  lead_chunks: int = 2, every_chunks: int = 2) -> dict:
  """Real-time playback of `seconds` of audio with a prompt change every
  `every_chunks` chunks -> the session's control delay and underruns."""
  session = StreamSession(stepper, params, style_model,
                          lead_chunks=lead_chunks, prompt=DELAY_PROMPTS[0])
  session.next_chunk()  # compile outside the clock
  session.start(wait=True, timeout=600)
  chunk_s = session.chunk_seconds
  t_next = time.monotonic()
  for i in range(max(1, round(seconds / chunk_s))):
    if i % every_chunks == every_chunks - 1:
      session.set_prompt(DELAY_PROMPTS[(i // every_chunks + 1)
                                       % len(DELAY_PROMPTS)])
    time.sleep(max(0.0, t_next - time.monotonic()))
    session.read(session.chunk_samples, timeout=chunk_s)
    t_next += chunk_s
  session.stop()
  st = session.stats()
  return {"control_delay_ms_p50": st["control_delay_ms_p50"],
          "control_delay_ms_p95": st["control_delay_ms_p95"],
          "control_delay_lead_chunks": lead_chunks,
          "session_underruns": st["underruns"]}


def short_chunk_delay(tcfg, tparams, codec, style_model, chunk_frames: int,
                      seconds: float, reps: int = 5) -> dict:
  """Control delay of a student with `chunk_frames`-frame chunks, played in
  real time at lead_chunks = 1, prompt changes every max(2 chunks, 1 s)."""
  scfg = S.StudentConfig(tcfg, lora_rank=8, noise=NoiseSchedule(),
                         chunk_frames=chunk_frames)
  g = scfg.geometry
  model = S.StudentModel(scfg)
  params = S.from_teacher(scfg, tparams, jax.random.PRNGKey(0))
  scaler = S.LatentScaler.for_codec(codec, scfg.noise.sigma_data)
  stepper = ChunkStepper(model, codec, style_model, scaler)
  emb = style_model.embed_text([DELAY_PROMPTS[0]])[:1]
  holder = {"state": stepper.init_state(params, 1)}
  silence = np.zeros((1, g.chunk_samples, g.channels), np.float32)

  def step():
    a, holder["state"] = stepper.chunk_step(
        params, holder["state"], controls(emb, 0.0, 1, silence, 0.0),
        jax.random.PRNGKey(0))
    a.block_until_ready()

  ms = 1000 * _time(step, reps)
  every = max(2, round(1.0 / g.chunk_seconds))
  delay = control_delay(stepper, params, style_model, seconds,
                        lead_chunks=1, every_chunks=every)
  return {"chunk_frames": g.chunk_frames, "chunk_seconds": g.chunk_seconds,
          "context_chunks": scfg.context_chunks,
          "student_ms_per_chunk": ms,
          "student_rtf": 1000 * g.chunk_seconds / ms,
          "prompt_change_every_chunks": every, **delay}


# The student heads the "heads" rows time side by side (StudentConfig
# fields): the latent head of the uncoupled ablation, the coupled token
# head picking every token independently (shipped before), and the
# recurrent pick (student.token_feedback, shipped).
HEAD_KINDS = {
    "latent (uncoupled)": {},
    "token, independent picks": dict(coupled=True, token_head=True),
    "token, recurrent pick (shipped)": dict(coupled=True, token_head=True,
                                            token_feedback=True),
}


def head_timings(tcfg, tparams, codec, style_model, reps: int) -> list:
  """ms per chunk of each student head kind (random heads: timing does not
  depend on training), at w=0 and at the shipped w=3, batch 1."""
  g = tcfg.geometry
  emb = style_model.embed_text(["techno"])[:1]
  rows = []
  for kind, fields in HEAD_KINDS.items():
    scfg = S.StudentConfig(tcfg, lora_rank=8, noise=NoiseSchedule(),
                           **fields)
    scaler = S.LatentScaler.for_codec(codec, scfg.noise.sigma_data)
    books = (S.TokenBooks.for_codec(codec, g, scaler) if scfg.token_head
             else None)
    stepper = ChunkStepper(S.StudentModel(scfg, books=books), codec,
                           style_model, scaler)
    params = S.from_teacher(scfg, tparams, jax.random.PRNGKey(0))
    holder = {"state": stepper.init_state(params, 1)}

    def step(w):
      a, holder["state"] = stepper.chunk_step(
          params, holder["state"], controls(emb, w), jax.random.PRNGKey(0))
      a.block_until_ready()

    ms = {w: 1000 * _time(lambda: step(w), reps) for w in (0.0, 3.0)}
    # XLA's count for the compiled step at w=3 (what the time is not: the
    # recurrent pick's cost is its sequential small steps).
    ctl = controls(emb, 3.0)
    ctl = ctl._replace(inject_audio=jnp.zeros(
        (1, g.chunk_samples, g.channels), jnp.float32))
    cost = stepper._step_jit.lower(params, holder["state"], ctl,  # noqa
                                   jax.random.PRNGKey(0)).compile(
                                   ).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    rows.append({"head": kind, "ms_per_chunk": ms[0.0],
                 "ms_per_chunk_w3": ms[3.0],
                 "rtf_w3": 1000 * g.chunk_seconds / ms[3.0],
                 "gflop_per_chunk_w3": float(cost.get("flops", np.nan)) / 1e9})
  return rows


def bench(name: str, reps: int, teacher_reps: int,
          delay_seconds: float = 8.0,
          chunk_frames: tuple[int, ...] = (), dtype: str = "auto") -> dict:
  from mrt_distill.teacher.decode import SamplingParams
  from mrt_distill.teacher.system import TeacherSystem

  tcfg, tparams, codec, style_model = _world(name, dtype)
  g = tcfg.geometry
  scfg = S.StudentConfig(tcfg, lora_rank=8, noise=NoiseSchedule())
  model = S.StudentModel(scfg)
  params = S.from_teacher(scfg, tparams, jax.random.PRNGKey(0))
  scaler = S.LatentScaler.for_codec(codec, scfg.noise.sigma_data)
  stepper = ChunkStepper(model, codec, style_model, scaler)
  emb = style_model.embed_text(["techno"])[:1]
  holder = {"state": stepper.init_state(params, 1)}

  def student(w=0.0, k=1, emb=emb, gain=0.0):
    inj = np.full((1, g.chunk_samples, g.channels), 0.1, np.float32)
    a, holder["state"] = stepper.chunk_step(
        params, holder["state"], controls(emb, w, k, inj, gain),
        jax.random.PRNGKey(0))
    a.block_until_ready()

  s_ms = 1000 * _time(student, reps)
  s_cfg_ms = 1000 * _time(lambda: student(3.0), reps)
  compiles_before = stepper.compiles
  rng = np.random.default_rng(0)
  for w, k, gain in [(0.0, 1, 0.0), (2.0, 2, 1.0), (0.5, 4, 0.0),
                     (0.0, 3, 0.5)]:
    student(w, k, rng.standard_normal(emb.shape).astype(np.float32), gain)
  recompiles = stepper.compiles - compiles_before
  delay = (control_delay(stepper, params, style_model, delay_seconds)
           if delay_seconds > 0 else {"control_delay_ms_p50": None,
                                      "control_delay_ms_p95": None})

  system = TeacherSystem(tcfg, tparams, codec, style_model,
                         SamplingParams(guidance_weight=3.0))
  states = system.init_states(1)
  t_ms = 1000 * _time(lambda: system.generate_chunks(states, emb, seed=0),
                      teacher_reps)

  # Encoder FLOPs per chunk: cached = the new chunk + style; full = the
  # whole window + style, as a non-cached student would run every chunk.
  ids1 = jnp.full((1, 1, scfg.chunk_tokens), MASK_ID, jnp.int32)
  idsn = jnp.full((1, scfg.context_chunks, scfg.chunk_tokens), MASK_ID,
                  jnp.int32)
  sid = jnp.full((1, g.style_levels), MASK_ID, jnp.int32)
  e = jnp.asarray(emb)

  def enc(p, ids, sid, e):
    x = model.apply({"params": p}, ids, method=S.StudentModel.encode_chunks)
    b, n, l, d = x.shape
    y = model.apply({"params": p}, sid, e, method=S.StudentModel.encode_style)
    return model.apply({"params": p}, jnp.concatenate(
        [x.reshape(b, n * l, d), y], axis=1), method=S.StudentModel.cross_kv)

  f_cached = _flops(enc, params, ids1, sid, e)
  f_full = _flops(enc, params, idsn, sid, e)
  return {
      "geometry": g.name, "chunk_seconds": g.chunk_seconds,
      "activation_dtype": tcfg.activation_dtype,
      "student_ms_per_chunk": s_ms, "student_cfg_ms_per_chunk": s_cfg_ms,
      "teacher_ms_per_chunk": t_ms, "speedup": t_ms / s_ms,
      "student_rtf": 1000 * g.chunk_seconds / s_ms,
      "teacher_rtf": 1000 * g.chunk_seconds / t_ms,
      "student_calls_per_chunk": 1,
      "teacher_calls_per_chunk": g.chunk_frames * (1 + g.target_levels),
      "encoder_flops_cached": f_cached, "encoder_flops_full": f_full,
      "encoder_flops_ratio": f_cached / f_full,
      "recompiles": recompiles, **delay,
      "heads": head_timings(tcfg, tparams, codec, style_model, reps),
      **({"short_chunks": [
          short_chunk_delay(tcfg, tparams, codec, style_model, f,
                            delay_seconds, reps)
          for f in chunk_frames]} if chunk_frames else {}),
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--geometries", default="reference,mrt_base")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--teacher-reps", type=int, default=1)
  p.add_argument("--delay-seconds", type=float, default=8.0,
                 help="real-time playback per geometry for the control "
                 "delay (0 skips it)")
  p.add_argument("--chunk-frames", default="",
                 help="comma-separated student chunk lengths in frames, e.g. "
                 "25,5,1: the control delay of each at lead_chunks 1 (each "
                 "must divide the teacher's chunk and context)")
  p.add_argument("--dtype", default="auto",
                 choices=("auto", "float32", "bfloat16"),
                 help="activation dtype of student and teacher (auto: "
                 "float32 on CPU, the config's elsewhere)")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  chunk_frames = tuple(int(f) for f in args.chunk_frames.split(",") if f)
  if chunk_frames and args.delay_seconds <= 0:
    p.error("--chunk-frames measures a control delay: give --delay-seconds "
            "> 0")
  logging.basicConfig(level=logging.WARNING)
  out = {"devices": [str(d) for d in jax.devices()], "results": [
      bench(n, args.reps, args.teacher_reps, args.delay_seconds,
            chunk_frames, args.dtype)
      for n in args.geometries.split(",")]}
  print(json.dumps(out, indent=2) if args.json else out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
