"""`mrt-distill teacher-stream`: stream a teacher into a wav, with progress.

Also home of the audio-file helpers the other audio commands share
(`mrt-distill generate`): check the output path before minutes of
generation, then write it.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import time

import jax
import numpy as np

log = logging.getLogger(__name__)


def build_system(checkpoint: str | None, seed: int = 0):
  """A TeacherSystem: the shipped reference world by default; a teacher
  checkpoint (with the minimal codec/style model of its geometry) when given;
  `random-tiny` for a randomly initialised tiny teacher (it makes noise)."""
  from mrt_distill.codec.base import MinimalCodec
  from mrt_distill.style.base import MinimalStyleModel
  from mrt_distill.teacher import load, model
  from mrt_distill.teacher.system import TeacherSystem

  if checkpoint in (None, "reference"):
    from mrt_distill.world import assets
    log.info("teacher: the shipped reference world (%s)", assets.ASSET_DIR)
    return assets.load_reference_world().teacher_system()
  if checkpoint == "random-tiny":
    cfg = load.load_teacher_config("tiny")
    params = model.init_params(cfg, jax.random.PRNGKey(seed))
  else:
    params, cfg = load.load_teacher(checkpoint)
  g = cfg.geometry
  return TeacherSystem(cfg, params, MinimalCodec(g), MinimalStyleModel(g))


def check_audio_out(out) -> pathlib.Path:
  """Fails fast, before any generation, on an output file that cannot be
  written: a missing or unwritable folder, a folder given as the file, or an
  extension soundfile has no format for.

  Raises:
    FileNotFoundError: the folder does not exist.
    ValueError: the other cases; each message names the fix.
  """
  import soundfile as sf

  out = pathlib.Path(out)
  if out.is_dir():
    raise ValueError(f"--out {str(out)!r} is a folder; give a file name "
                     f"such as {str(out / 'out.wav')!r}")
  ext = out.suffix.lstrip(".").upper()
  if ext not in sf.available_formats():
    raise ValueError(f"--out {str(out)!r}: soundfile cannot write "
                     f"{out.suffix or 'files without an extension'}; end the "
                     f"name in .wav (or .flac)")
  folder = out.parent
  if not folder.is_dir():
    raise FileNotFoundError(f"--out {str(out)!r}: the folder {str(folder)!r} "
                            f"does not exist; create it (mkdir -p) or choose "
                            f"another --out")
  if not os.access(folder, os.W_OK | os.X_OK) or (
      out.exists() and not os.access(out, os.W_OK)):
    raise ValueError(f"--out {str(out)!r}: no permission to write there; "
                     f"choose a folder you can write to")
  return out


def write_audio(out, audio, sample_rate: int) -> pathlib.Path:
  """float audio (N,) or (N, channels) in [-1, 1] -> `out` (format from the
  extension; 16-bit PCM for .wav)."""
  import soundfile as sf
  from mrt_distill import atomic
  out = pathlib.Path(out)
  with atomic.target(out) as tmp:  # a failed write keeps an existing file
    sf.write(tmp, np.asarray(audio, np.float32), int(sample_rate))
  return out


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
