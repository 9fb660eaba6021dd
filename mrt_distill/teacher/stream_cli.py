"""`mrt-distill teacher-stream`: stream a teacher into a wav, with progress.

Also home of the audio-file helpers the other audio commands share
(`mrt-distill generate`): check the output path before minutes of
generation, then write it.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from mrt_distill.audio_files import check_audio_out, write_audio  # noqa: F401

log = logging.getLogger(__name__)


def build_system(checkpoint: str | None, seed: int = 0):
  """A TeacherSystem: the shipped reference world by default; `random-tiny`
  for a randomly initialised tiny teacher (it makes noise); both are worlds
  (`world.runtime.load_world`). A teacher checkpoint directory otherwise,
  with the minimal codec/style model of its geometry."""
  checkpoint = checkpoint or "reference"
  if checkpoint in ("reference", "random-tiny"):
    from mrt_distill.world.runtime import load_world
    world = load_world({"world": checkpoint, "seed": seed})
    log.info("teacher: world %s (%s)", world.name, world.teacher_identity)
    return world.teacher_system()
  from mrt_distill.codec.base import MinimalCodec
  from mrt_distill.style.base import MinimalStyleModel
  from mrt_distill.teacher import load
  from mrt_distill.teacher.system import TeacherSystem
  params, cfg = load.load_teacher(checkpoint)
  g = cfg.geometry
  return TeacherSystem(cfg, params, MinimalCodec(g), MinimalStyleModel(g))


def run(args) -> None:
  if not args.seconds > 0:  # NaN too; 0 or less would write an empty file
    raise ValueError(f"--seconds must be > 0, got {args.seconds}")
  from mrt_distill.serve.generate import check_seconds
  check_seconds(args.seconds)  # the upper bound, and why
  # Caller mistakes before any loading (the teacher takes seconds to build).
  from mrt_distill.style.mixing import parse_prompt_mix
  from mrt_distill.teacher.decode import SamplingParams
  parse_prompt_mix(args.prompt)
  SamplingParams(guidance_weight=args.guidance_weight,
                 temperature=args.temperature, top_k=args.top_k).check()
  check_audio_out(args.out)
  if args.checkpoint == "reference":  # unknown words, before loading
    from mrt_distill.serve.generate import check_prompt_words, early_vocab
    vocab = early_vocab("reference")
    if vocab is not None:
      check_prompt_words(vocab, args.prompt, "--prompt")
  system = build_system(args.checkpoint, args.seed)
  g = system.geometry
  n_chunks = max(1, math.ceil(args.seconds / g.chunk_seconds))
  state = system.init_state()
  out, t0 = [], time.perf_counter()
  for i in range(n_chunks):
    audio, state = system.generate_chunk(
        state, args.prompt, seed=args.seed,
        guidance_weight=args.guidance_weight, temperature=args.temperature,
        top_k=args.top_k)
    out.append(audio)
    done = (i + 1) * g.chunk_seconds
    wall = time.perf_counter() - t0
    eta = wall / (i + 1) * (n_chunks - i - 1)
    log.info("chunk %d/%d: %.1f s of audio in %.1f s (RTF %.2f), ETA %.0f s",
             i + 1, n_chunks, done, wall, done / wall, eta)
  audio = np.concatenate(out)[:int(round(args.seconds * g.sample_rate))]
  write_audio(args.out, audio, g.sample_rate)
  log.info("wrote %s (%.1f s, %d Hz, %d ch); %d stray tokens folded", args.out,
           len(audio) / g.sample_rate, g.sample_rate, g.channels,
           system.stray_tokens)
