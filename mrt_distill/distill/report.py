"""The end-of-run report: student vs teacher on held-out prompts.

Same prompts, same number of cold-start chunks, same seeds for both models:
  * style accuracy by the reference judge (prompts that name a style);
  * Fréchet distance of judge embeddings to ground-truth renders of the
    style, next to the teacher's;
  * log-mel distance of the mean spectrum to ground truth (dB), both models;
  * speed at batch 1 measured in the same run: ms per chunk, RTF, and
    sequential network calls per chunk;
  * the trainable parameter fraction.

The ratios carry a 90% bootstrap interval over the held-out prompts
(`paired_ratio_interval`): outcomes flip whole per prompt (the streams of a
prompt share it), so with ten style prompts the interval is wide, and a
target ratio should be read against it.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import pathlib
import time

import librosa
import numpy as np

import jax

from mrt_distill.distill import student as S
from mrt_distill.serve.chunk_step import ChunkStepper, controls
from mrt_distill.style import mixing
from mrt_distill.world import music
from mrt_distill.world.music.piece_pool import ground_truth
from mrt_distill.world.runtime import judges as J

log = logging.getLogger("mrt_distill.distill")


def mean_log_mel(audio_BxSxC: np.ndarray, sample_rate: int) -> np.ndarray:
  """Mean log-mel spectrum (dB, 64 bands) over clips and time."""
  mono = np.asarray(audio_BxSxC, np.float32).mean(axis=-1)
  mel = librosa.feature.melspectrogram(y=mono, sr=sample_rate, n_fft=1024,
                                       hop_length=256, n_mels=64)
  return librosa.power_to_db(mel.mean(axis=(0, 2)) + 1e-10)


def teacher_stream(system, emb_BxE, chunks, seed):
  """Cold-start teacher streams -> audio (B, chunks * C samples, ch)."""
  states = system.init_states(len(emb_BxE))
  out = []
  for _ in range(chunks):
    audio, states = system.generate_chunks(states, emb_BxE, seed=seed)
    out.append(audio)
  return np.concatenate(out, axis=1)


def student_stream(stepper: ChunkStepper, params, emb_BxE, chunks: int,
                   seed: int, cfg_weight: float = 0.0, steps: int = 1,
                   token_temperature: float = 1.0) -> np.ndarray:
  """Cold-start student streams through the serving chunk step (cached
  context, one jitted call per chunk) -> audio (B, chunks * C samples, ch)."""
  state = stepper.init_state(params, len(emb_BxE))
  ctl = controls(emb_BxE, cfg_weight, steps,
                 token_temperature=token_temperature)
  key = jax.random.PRNGKey(seed)
  out = []
  for i in range(chunks):
    audio, state = stepper.chunk_step(params, state, ctl,
                                      jax.random.fold_in(key, i))
    out.append(np.asarray(audio))
  return np.concatenate(out, axis=1)


def paired_ratio_interval(teacher, student, *, level: float = 0.9,
                          resamples: int = 2000, seed: int = 0
                          ) -> tuple[float, float] | None:
  """Bootstrap interval of mean(student) / mean(teacher), resampling the
  prompts (pairs) with replacement -> (low, high), or None with < 2 pairs.
  Resamples whose teacher mean is 0 have no ratio and are dropped."""
  t, s = np.asarray(teacher, np.float64), np.asarray(student, np.float64)
  if t.shape != s.shape or t.ndim != 1:
    raise ValueError(f"paired values needed: {t.shape} vs {s.shape}")
  if len(t) < 2:
    return None
  idx = np.random.default_rng(seed).integers(0, len(t), (resamples, len(t)))
  tm, sm = t[idx].mean(1), s[idx].mean(1)
  ratios = sm[tm > 0] / tm[tm > 0]
  if not len(ratios):
    return None
  a = (1 - level) / 2
  lo, hi = np.quantile(ratios, [a, 1 - a])
  return float(lo), float(hi)


def _ms_per_chunk(fn, repeats: int = 3) -> float:
  fn()  # compile / warm up
  t0 = time.perf_counter()
  for _ in range(repeats):
    fn()
  return 1000 * (time.perf_counter() - t0) / repeats


def evaluate(run, state, *, samples: int, seconds: float, gt_pieces: int,
             seed: int = 0) -> dict:
  world, g = run.world, run.world.geometry
  judge = world.load_judge()
  system = run.rollout.system
  params = S.merge_params(state.params, state.frozen)
  steps = int(run.config.student.sample_steps)
  cfg_w = float(run.config.student.get("cfg_weight", 0.0))
  stepper = ChunkStepper(run.model, world.codec, world.style_model,
                         run.scaler, max_steps=max(steps, 1))
  stream = lambda e, c: student_stream(stepper, params, e, c, seed, cfg_w,
                                       steps)
  gs = run.model.cfg.geometry  # the student's chunk may be shorter
  chunks = math.ceil(seconds / g.chunk_seconds)
  s_chunks = math.ceil(seconds / gs.chunk_seconds)
  n = int(round(seconds * g.sample_rate))
  rows = []
  t0 = time.perf_counter()
  for prompt in run.held_out:
    emb = mixing.embed_prompt_mix(world.style_model, prompt)
    embs = np.repeat(emb[None], samples, axis=0)
    teacher = teacher_stream(system, embs, chunks, seed)[:, :n]
    student = stream(embs, s_chunks)[:, :n]
    style = prompt if prompt in music.STYLES else None
    row = {"prompt": prompt, "samples": samples}
    for name, audio in (("teacher", teacher), ("student", student)):
      pred = judge.classify(audio, g.sample_rate)
      row[f"{name}_accuracy"] = (None if style is None else
                                 float(np.mean([p == style for p in pred])))
      # What the judge heard instead: the confusions behind the accuracy.
      row[f"{name}_predictions"] = dict(collections.Counter(pred))
      row[f"{name}_rms"] = float(np.sqrt(np.mean(audio ** 2)))
    if style is not None:
      gt = ground_truth(style, gt_pieces, seconds, g.sample_rate,
                        bar_grid_hz=world.bar_grid_hz)
      e_gt = J.judge_windows(judge, gt, g.sample_rate)
      gt_mel = mean_log_mel(gt, g.sample_rate)
      for name, audio in (("teacher", teacher), ("student", student)):
        row[f"{name}_fd"] = J.fd_or_none(
            J.judge_windows(judge, audio, g.sample_rate), e_gt)
        row[f"{name}_logmel_db"] = float(np.mean(np.abs(
            mean_log_mel(audio, g.sample_rate) - gt_mel)))
    rows.append(row)
    log.info("report %-18s teacher acc %s | student acc %s", prompt,
             row["teacher_accuracy"], row["student_accuracy"])

  one = np.repeat(mixing.embed_prompt_mix(world.style_model,
                                          run.held_out[0])[None], 1, axis=0)
  t_ms = _ms_per_chunk(lambda: teacher_stream(system, one, 1, seed))
  s_ms = _ms_per_chunk(lambda: stream(one, 1))
  calls_t = g.chunk_frames * (1 + g.target_levels)  # temporal + depth steps
  speed = {
      "teacher_ms_per_chunk": t_ms, "student_ms_per_chunk": s_ms,
      "teacher_rtf": 1000 * g.chunk_seconds / t_ms,
      "student_rtf": 1000 * gs.chunk_seconds / s_ms,
      "student_chunk_seconds": gs.chunk_seconds,
      "teacher_chunk_seconds": g.chunk_seconds,
      # Per second of audio, so chunks of different lengths compare.
      "speedup": (t_ms / g.chunk_seconds) / (s_ms / gs.chunk_seconds),
      "teacher_sequential_calls_per_chunk": calls_t,
      "student_sequential_calls_per_chunk": steps,
  }

  def mean(key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None

  summary = {k: mean(k) for k in (
      "teacher_accuracy", "student_accuracy", "teacher_fd", "student_fd",
      "teacher_logmel_db", "student_logmel_db")}
  ta, sa = summary["teacher_accuracy"], summary["student_accuracy"]
  summary["accuracy_ratio"] = (sa / ta) if ta else None
  tf, sf = summary["teacher_fd"], summary["student_fd"]
  summary["fd_ratio"] = (sf / tf) if tf else None
  for key, name in (("accuracy", "accuracy_ratio"), ("fd", "fd_ratio")):
    pairs = [(r[f"teacher_{key}"], r[f"student_{key}"]) for r in rows
             if r.get(f"teacher_{key}") is not None
             and r.get(f"student_{key}") is not None]
    summary[f"{name}_ci90"] = (paired_ratio_interval(*zip(*pairs))
                               if len(pairs) >= 2 else None)
  return {"rows": rows, "summary": summary, "speed": speed,
          "trainable_fraction": run.trainable_fraction,
          "samples_per_prompt": samples, "seconds": seconds,
          "student_steps": steps, "student_cfg_weight": cfg_w,
          "eval_seconds": time.perf_counter() - t0}


def _f(x, nd=3):
  return "n/a" if x is None else f"{x:.{nd}f}"


def _ci(interval) -> str:
  if not interval:
    return ""
  return f" (90% CI {interval[0]:.2f}-{interval[1]:.2f})"


def to_markdown(report: dict, title: str = "Distillation report") -> str:
  s, sp = report["summary"], report["speed"]
  lines = [
      f"# {title}", "",
      f"{report['samples_per_prompt']} cold-start streams of "
      f"{report['seconds']:g} s per held-out prompt, student at "
      f"{report['student_steps']} step(s), CFG weight "
      f"{report.get('student_cfg_weight', 0.0):g} (the guided pass runs inside "
      f"the same call); trainable parameters "
      f"{100 * report['trainable_fraction']:.2f}%.", "",
      "| | teacher | student | student / teacher |",
      "|---|---|---|---|",
      f"| judge style accuracy | {_f(s['teacher_accuracy'])} | "
      f"{_f(s['student_accuracy'])} | {_f(s['accuracy_ratio'], 2)}"
      f"{_ci(s.get('accuracy_ratio_ci90'))} |",
      f"| Fréchet distance (judge) | {_f(s['teacher_fd'], 1)} | "
      f"{_f(s['student_fd'], 1)} | {_f(s['fd_ratio'], 2)}"
      f"{_ci(s.get('fd_ratio_ci90'))} |",
      f"| mean log-mel distance to ground truth (dB) | "
      f"{_f(s['teacher_logmel_db'], 2)} | {_f(s['student_logmel_db'], 2)} "
      f"| |",
      f"| sequential calls per chunk | "
      f"{sp['teacher_sequential_calls_per_chunk']} | "
      f"{sp['student_sequential_calls_per_chunk']} | |",
      f"| ms per chunk (batch 1; ratio per second of audio) | {sp['teacher_ms_per_chunk']:.1f} | "
      f"{sp['student_ms_per_chunk']:.1f} | {1 / sp['speedup']:.3f} |",
      f"| real-time factor | {sp['teacher_rtf']:.2f} | "
      f"{sp['student_rtf']:.2f} | |", "",
      "Intervals: bootstrap over the held-out prompts (paired), 2000 "
      "resamples.", "",
      "| prompt | teacher acc | student acc | teacher FD | student FD |",
      "|---|---|---|---|---|"]
  for r in report["rows"]:
    lines.append(f"| {r['prompt']} | {_f(r['teacher_accuracy'], 2)} | "
                 f"{_f(r['student_accuracy'], 2)} | "
                 f"{_f(r.get('teacher_fd'), 1)} | "
                 f"{_f(r.get('student_fd'), 1)} |")
  return "\n".join(lines) + "\n"


def write(report: dict, workdir) -> pathlib.Path:
  workdir = pathlib.Path(workdir)
  from mrt_distill import atomic
  atomic.write_text(workdir / "report.json", json.dumps(report, indent=2))
  md = workdir / "report.md"
  atomic.write_text(md, to_markdown(report))
  return md
