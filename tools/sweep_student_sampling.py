"""The student's serve-time knobs, judged: guidance weight x token temperature.

  python tools/sweep_student_sampling.py --student reference \
      --weights 0,1,3 --temperatures 1.0,0.8,0.6 --json

A token-head student picks its codes with the flow map from its own code
distribution (`distill/student.py`); two knobs act on that distribution at
serve time, without retraining and without recompiling (both are traced
`chunk_step.Controls`): the guidance weight w (cond / uncond logits, as
the teacher's CFG) and the token temperature (logits / (T x the
student's pick_temperature) before the pick; T = 1 plays it as shipped).
This tool streams the distill report's protocol for every (w, T) -- cold
starts of `--seconds` per held-out style, `--samples` streams each -- and,
against the teacher's streams (its config's sampling, computed once) and
ground truth, reports what the harness reports: judge accuracy, Fréchet
distance to ground truth, and the music figures that a static or noisy
chunk cannot pass: onsets/s, spectral flux and RMS as ratios to the
teacher's. `--long-minutes M` adds the harness's long-form protocol
(student only): 4 styles x 2 streams of M minutes, the fraction of 60 s
windows flagged as noise (spectral flatness > 0.3) -- what a sampling
setting that sounds right for 10 s can still do over minutes.

Prints a table (or --json); `--out FILE.json` also writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np


def _floats(text: str, name: str) -> list[float]:
  try:
    vals = [float(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise SystemExit(f"error: --{name} {text!r}: give comma-separated "
                     f"numbers, e.g. --{name} 1.0,0.8") from None
  if not vals:
    raise SystemExit(f"error: --{name} is empty")
  return vals


def music_figures(audio_BxSxC: np.ndarray, sample_rate: int,
                  chunk_samples: int, crossfade_samples: int) -> dict:
  """Mean over streams of onsets/s, spectral flux, RMS, the chunk-boundary
  ratio (flux where chunks meet / half way between) and the spectral
  flatness (noise-like: > 0.3) -- `eval.metrics`, the harness's
  definitions."""
  from mrt_distill.eval import metrics as M
  mono = [M.mono(a) for a in audio_BxSxC]
  seams = [M.boundary_discontinuity(x, chunk_samples,
                                    crossfade_samples)["ratio"] for x in mono]
  seams = [r for r in seams if r is not None]
  return {"onsets_per_s": float(np.mean([M.onset_rate(x, sample_rate)
                                         for x in mono])),
          "flux": float(np.mean([M.spectral_flux(x).mean() for x in mono])),
          "rms": float(np.sqrt(np.mean(np.square(audio_BxSxC)))),
          "boundary": float(np.mean(seams)) if seams else None,
          "flatness": float(np.mean([M.spectral_flatness(x)
                                     for x in mono]))}


# The eval harness's long-form prompts (`mrt-distill eval`, section 5: the
# first four of its prompt list), each streamed twice.
LONG_STYLES = ("techno", "bossa_nova", "ambient_pads", "drum_and_bass")


def long_form_figures(audio_BxSxC: np.ndarray, sample_rate: int,
                      window_seconds: float = 60.0) -> dict:
  """Per window of `window_seconds`, over streams: the spectral flatness and
  the fraction flagged as noise (flatness > `metrics.NOISE_FLATNESS`, the
  harness's flag), and the RMS in dB -> {"noise_fraction", "flatness",
  "rms_db"} (the last two: means per window index)."""
  from mrt_distill.eval import metrics as M
  win = int(round(window_seconds * sample_rate))
  mono = [M.mono(a) for a in audio_BxSxC]
  n = min(len(x) for x in mono) // win
  if n < 1:
    raise ValueError(f"streams of {len(mono[0]) / sample_rate:g} s are "
                     f"shorter than one {window_seconds:g} s window")
  flat = np.array([[M.spectral_flatness(x[i * win:(i + 1) * win])
                    for i in range(n)] for x in mono])
  rms = np.array([[M.rms_db(x[i * win:(i + 1) * win]) for i in range(n)]
                  for x in mono])
  return {"noise_fraction": float(np.mean(flat > M.NOISE_FLATNESS)),
          "flatness": flat.mean(0).round(4).tolist(),
          "rms_db": rms.mean(0).round(2).tolist()}


def _mean_known(values):
  vals = [v for v in values if v is not None]
  return float(np.mean(vals)) if vals else None


def _x(v) -> str:
  return "—" if v is None else f"{v:.2f}"


def sweep(student: str, weights, temperatures, *, samples: int = 8,
          seconds: float = 10.0, gt_pieces: int = 8, seed: int = 0,
          styles=None, long_minutes: float = 0.0,
          long_window: float = 60.0, log=print) -> dict:
  from mrt_distill.distill.report import student_stream, teacher_stream
  from mrt_distill.serve.bundle import load_student
  from mrt_distill.style import mixing
  from mrt_distill.world import music
  from mrt_distill.world.music.piece_pool import ground_truth
  from mrt_distill.world.runtime import judges as J

  t0 = time.perf_counter()
  sb = load_student(student)
  if not sb.model.cfg.token_head and any(t != 1.0 for t in temperatures):
    raise SystemExit(f"error: student {student!r} has a latent head; the "
                     f"token temperature only acts on a token head: leave "
                     f"--temperatures at 1.0")
  world = sb.world
  judge = world.load_judge()
  g = sb.geometry
  system = sb.teacher_system(**sb.config.sampling.to_dict())
  stepper = sb.stepper(max_steps=1)
  chunks = math.ceil(seconds / g.chunk_seconds)
  n = int(round(seconds * g.sample_rate))
  styles = list(styles or music.STYLES)
  teacher, gt_emb, embs = {}, {}, {}
  for style in styles:
    emb = mixing.embed_prompt_mix(sb.style_model, style)
    embs[style] = np.repeat(emb[None], samples, axis=0)
    teacher[style] = teacher_stream(system, embs[style], chunks, seed)[:, :n]
    gt = ground_truth(style, gt_pieces, seconds, g.sample_rate,
                      bar_grid_hz=world.bar_grid_hz)
    gt_emb[style] = J.judge_windows(judge, gt, g.sample_rate)
    log(f"teacher {style} ({time.perf_counter() - t0:.0f} s)",
        file=sys.stderr)

  def judged(streams: dict) -> dict:
    acc, fd, fig = [], [], []
    for style, audio in streams.items():
      acc.append(np.mean([p == style for p in
                          judge.classify(audio, g.sample_rate)]))
      fd.append(J.fd_or_none(J.judge_windows(judge, audio, g.sample_rate),
                             gt_emb[style]))
      fig.append(music_figures(audio, g.sample_rate, g.chunk_samples,
                               g.crossfade_samples))
    fds = [f for f in fd if f is not None]
    return {"accuracy": float(np.mean(acc)),
            "fd": float(np.mean(fds)) if fds else None,
            **{k: _mean_known(f[k] for f in fig) for k in fig[0]}}

  ref = judged(teacher)
  long_emb = np.stack([mixing.embed_prompt_mix(sb.style_model, s)
                       for s in LONG_STYLES for _ in range(2)])
  rows = []
  for w in weights:
    for temp in temperatures:
      streams = {s: student_stream(stepper, sb.params, embs[s], chunks, seed,
                                   w, 1, temp)[:, :n] for s in styles}
      row = {"cfg_weight": w, "token_temperature": temp, **judged(streams)}
      for k in ("accuracy", "fd", "onsets_per_s", "flux", "boundary"):
        row[f"{k}_ratio"] = (row[k] / ref[k] if row[k] is not None and ref[k]
                             else None)
      row["rms_db_vs_teacher"] = float(20 * np.log10(row["rms"] / ref["rms"]))
      if long_minutes:  # the harness's long-form protocol, student only
        audio = student_stream(
            stepper, sb.params, long_emb,
            math.ceil(60 * long_minutes / g.chunk_seconds), seed + 2, w, 1,
            temp)
        row["long"] = long_form_figures(audio, g.sample_rate, long_window)
        del audio
      rows.append(row)
      log(f"w {w:g} T {temp:g}: acc {row['accuracy']:.3f} onsets "
          f"{row['onsets_per_s_ratio']:.2f}x flux {row['flux_ratio']:.2f}x "
          f"seams {_x(row['boundary_ratio'])} "
          f"RMS {row['rms_db_vs_teacher']:+.1f} dB "
          + (f"long-form noise {row['long']['noise_fraction']:.2f} "
             if long_minutes else "")
          + f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
  return {"student": student, "samples": samples, "seconds": seconds,
          "seed": seed, "styles": styles,
          "long_form": ({"minutes": long_minutes, "window_seconds":
                         long_window, "styles": list(LONG_STYLES),
                         "streams_per_style": 2} if long_minutes else None),
          "teacher_sampling": sb.config.sampling.to_dict(),
          "teacher": ref, "rows": rows,
          "seconds_taken": time.perf_counter() - t0}


def table(report: dict) -> str:
  t = report["teacher"]
  lines = [f"teacher: accuracy {t['accuracy']:.3f}, Fréchet "
           f"{t['fd'] if t['fd'] is None else round(t['fd'], 1)}, "
           f"onsets/s {t['onsets_per_s']:.2f}, flux {t['flux']:.4f}, "
           f"RMS {t['rms']:.4f}, chunk-boundary ratio {_x(t['boundary'])}, "
           f"flatness {t['flatness']:.3f}", "",
           "| w | T | accuracy | Fréchet | onsets/s ratio | flux ratio | "
           "RMS vs teacher | seams vs teacher | flatness |"
           + (" long-form noise |" if report.get("long_form") else ""),
           "|---|---|---|---|---|---|---|---|---|"
           + ("---|" if report.get("long_form") else "")]
  for r in report["rows"]:
    fd = "—" if r["fd"] is None else f"{r['fd']:.1f}"
    lines.append(f"| {r['cfg_weight']:g} | {r['token_temperature']:g} | "
                 f"{r['accuracy']:.3f} | {fd} | {r['onsets_per_s_ratio']:.2f}"
                 f" | {r['flux_ratio']:.2f} | "
                 f"{r['rms_db_vs_teacher']:+.1f} dB | "
                 f"{_x(r['boundary_ratio'])} | {r['flatness']:.3f} |"
                 + (f" {r['long']['noise_fraction']:.2f} |" if "long" in r
                    else ""))
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--student", default="reference",
                 help="'reference' (shipped), a distill workdir or a .npz")
  p.add_argument("--weights", default="0,1,3",
                 help="guidance weights, comma separated")
  p.add_argument("--temperatures", default="1.0,0.8,0.6",
                 help="token temperatures, comma separated (token head)")
  p.add_argument("--samples", type=int, default=8)
  p.add_argument("--seconds", type=float, default=10.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--styles", default=None,
                 help="comma-separated styles (default: all ten)")
  p.add_argument("--long-minutes", type=float, default=0.0,
                 help="also stream the eval's long-form protocol (4 styles "
                      "x 2 streams of this many minutes) and report the "
                      "fraction of windows flagged as noise (0: off)")
  p.add_argument("--long-window", type=float, default=60.0,
                 help="long-form window, seconds (the eval's: 60)")
  p.add_argument("--json", action="store_true")
  p.add_argument("--out", default=None, help="also write the JSON here")
  args = p.parse_args(argv)
  weights = _floats(args.weights, "weights")
  temps = _floats(args.temperatures, "temperatures")
  if min(weights) < 0 or min(temps) <= 0:
    raise SystemExit("error: guidance weights must be >= 0 and temperatures "
                     "> 0")
  if args.long_minutes < 0 or (args.long_minutes and
                               args.long_minutes * 60 < args.long_window):
    raise SystemExit(f"error: --long-minutes {args.long_minutes:g} must be 0 "
                     f"(off) or at least one --long-window "
                     f"({args.long_window:g} s)")
  report = sweep(args.student, weights, temps, samples=args.samples,
                 seconds=args.seconds, seed=args.seed,
                 styles=args.styles.split(",") if args.styles else None,
                 long_minutes=args.long_minutes,
                 long_window=args.long_window)
  if args.out:
    from mrt_distill import atomic
    atomic.write_text(args.out, json.dumps(report, indent=1) + "\n")
  print(json.dumps(report, indent=1) if args.json else table(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
