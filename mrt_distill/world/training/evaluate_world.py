"""Scores the reference teacher with the reference judge, per style.

For every style prompt: stream the teacher from a cold start for `seconds`
(B streams at once), classify each stream with the judge (style accuracy),
and compare judge embeddings of teacher output with ground-truth renders of
the same style (Fréchet distance), next to the floor: the distance between
two disjoint sets of ground truth with the same number of windows.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time

import numpy as np

from mrt_distill import atomic
from mrt_distill.geometry import REFERENCE
from mrt_distill.style import mixing
from mrt_distill.world import music
from mrt_distill.world.music.piece_pool import ground_truth
from mrt_distill.world.runtime.judges import fd_or_none
from mrt_distill.world.runtime.judges import judge_windows

log = logging.getLogger(__name__)

DEFAULT_SAMPLING = dict(guidance_weight=3.0, temperature=1.0, top_k=40)


def stream_teacher(world, prompt: str, samples: int, seconds: float,
                   seed: int, embedding: np.ndarray | None = None,
                   **sampling) -> np.ndarray:
  """-> float32 (samples, S, C): `samples` cold-start streams of one prompt
  (or of a given style `embedding` (E,), e.g. an audio prompt's)."""
  g = world.geometry
  system = world.teacher_system(**{**DEFAULT_SAMPLING, **sampling})
  emb = (mixing.embed_prompt_mix(world.style_model, prompt)
         if embedding is None else np.asarray(embedding, np.float32))
  states = system.init_states(samples)
  styles = np.repeat(emb[None], samples, axis=0)
  chunks = []
  for _ in range(math.ceil(seconds / g.chunk_seconds)):
    audio, states = system.generate_chunks(states, styles, seed=seed)
    chunks.append(audio)
  out = np.concatenate(chunks, axis=1)
  return out[:, :int(round(seconds * g.sample_rate))]


def evaluate(world, *, samples_per_style: int = 8, seconds: float = 10.0,
             gt_pieces_per_style: int = 16, seed: int = 0,
             styles=None, sampling: dict | None = None,
             embeddings: dict[str, np.ndarray] | None = None,
             bar_grid_hz: float | None = None) -> dict:
  """Per style: teacher streams judged, Fréchet vs ground truth, the codec
  ceiling. `embeddings` {style: (E,)} replaces a style's text prompt by
  another style embedding (tools/probe_teacher_conditioning.py).
  `bar_grid_hz`: the tempo option for the ground truth
  (`music.generate_piece`; default: the world's)."""
  g, judge = world.geometry, world.judge
  if bar_grid_hz is None:
    bar_grid_hz = world.bar_grid_hz
  styles = list(styles or music.STYLES)
  sampling = {**DEFAULT_SAMPLING, **(sampling or {})}
  rows, t0 = [], time.perf_counter()
  for i, style in enumerate(styles):
    prompt = style
    audio = stream_teacher(world, prompt, samples_per_style, seconds, seed,
                           (embeddings or {}).get(style), **sampling)
    pred = judge.classify(audio, g.sample_rate)
    gt_a = ground_truth(style, gt_pieces_per_style, seconds, g.sample_rate,
                        bar_grid_hz=bar_grid_hz)
    gt_b = ground_truth(style, gt_pieces_per_style, seconds, g.sample_rate,
                        offset=10_000, bar_grid_hz=bar_grid_hz)
    gt_pred = judge.classify(gt_b, g.sample_rate)
    # The ceiling any teacher can reach through this codec: ground truth
    # passed through the codec at the teacher's target depth.
    codes = world.codec.encode(gt_b, g.sample_rate)[..., :g.target_levels]
    codec_pred = judge.classify(
        world.codec.decode(codes)[:, :gt_b.shape[1]], g.sample_rate)
    rhythm = _rhythm(audio, gt_a, style, g.sample_rate)
    e_t = judge_windows(judge, audio, g.sample_rate)
    e_a = judge_windows(judge, gt_a, g.sample_rate)
    e_b = judge_windows(judge, gt_b, g.sample_rate)[:len(e_t)]
    row = {
        "style": style, "prompt": prompt, "samples": samples_per_style,
        "teacher_accuracy": float(np.mean([p == style for p in pred])),
        "teacher_predictions": pred,
        "ground_truth_accuracy": float(np.mean([p == style
                                                for p in gt_pred])),
        "codec_ceiling_accuracy": float(np.mean([p == style
                                                 for p in codec_pred])),
        "fd_teacher_vs_gt": fd_or_none(e_t, e_a),
        "fd_gt_floor": fd_or_none(e_b, e_a),
        "windows": int(len(e_t)),
        "rms": float(np.sqrt(np.mean(audio**2))),
        **rhythm,
    }
    rows.append(row)
    log.info("[%d/%d] %-16s teacher acc %.2f | FD %s (floor %s) | %.0f s",
             i + 1, len(styles), style, row["teacher_accuracy"],
             _fmt(row["fd_teacher_vs_gt"]), _fmt(row["fd_gt_floor"]),
             time.perf_counter() - t0)
  report = {
      "seconds_per_stream": seconds, "sampling": sampling, "seed": seed,
      "target_levels": g.target_levels,
      "teacher_accuracy_mean": float(np.mean([r["teacher_accuracy"]
                                              for r in rows])),
      "ground_truth_accuracy_mean": float(np.mean(
          [r["ground_truth_accuracy"] for r in rows])),
      "codec_ceiling_accuracy_mean": float(np.mean(
          [r["codec_ceiling_accuracy"] for r in rows])),
      "teacher_tempo_agreement_mean": float(np.mean(
          [r["teacher_tempo_agreement"] for r in rows])),
      "ground_truth_tempo_agreement_mean": float(np.mean(
          [r["ground_truth_tempo_agreement"] for r in rows])),
      "per_style": rows,
      "eval_seconds": time.perf_counter() - t0,
  }
  return report


def _rhythm(teacher_BxSxC: np.ndarray, gt_BxSxC: np.ndarray, style: str,
            sample_rate: int) -> dict:
  """Onsets per second and mean spectral flux of the teacher's streams and
  of ground truth (means over clips; `eval.metrics`, the harness's
  definitions), their ratios, and the share of clips whose estimated tempo
  lies in the style's range (octave errors allowed)."""
  from mrt_distill.eval import metrics as M
  low, high = music.STYLES[style].tempo_range

  def stats(clips):
    mono = [M.mono(c) for c in clips]
    return (float(np.mean([M.onset_rate(x, sample_rate) for x in mono])),
            float(np.mean([M.spectral_flux(x).mean() for x in mono])),
            float(np.mean([M.tempo_agreement(
                M.estimate_tempo(x, sample_rate), low, high, octave=True)
                           for x in mono])))
  t_on, t_flux, t_tempo = stats(teacher_BxSxC)
  g_on, g_flux, g_tempo = stats(gt_BxSxC)
  return {"teacher_onsets_per_s": t_on, "ground_truth_onsets_per_s": g_on,
          "onsets_ratio": M.ratio(t_on, g_on),
          "teacher_flux": t_flux, "ground_truth_flux": g_flux,
          "flux_ratio": M.ratio(t_flux, g_flux),
          "teacher_tempo_agreement": t_tempo,
          "ground_truth_tempo_agreement": g_tempo}


def render_examples(world, out_dir, *, seed: int = 0, seconds: float = 8.0,
                    styles=None) -> list[pathlib.Path]:
  """Writes a listening set: for each style, ground truth, its codec
  reconstruction (the teacher's `target_levels`, as it sees them) and a teacher stream, as
  wavs and one spectrogram PNG per style."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import librosa
  import soundfile as sf

  g = world.geometry
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []
  for style in list(styles or music.STYLES):
    gt = ground_truth(style, 1, seconds, g.sample_rate, offset=20_000,
                      bar_grid_hz=world.bar_grid_hz)[0]
    codes = world.codec.encode(gt, g.sample_rate)[:, :g.target_levels]
    recon = world.codec.decode(codes)[:len(gt)]
    teacher = stream_teacher(world, style, 1, seconds, seed)[0]
    clips = {"ground_truth": gt, "codec": recon, "teacher": teacher}
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    for ax, (name, clip) in zip(axes, clips.items()):
      path = out_dir / f"{style}_{name}.wav"
      with atomic.target(path) as tmp:
        sf.write(tmp, clip, g.sample_rate)
      written.append(path)
      mel = librosa.power_to_db(librosa.feature.melspectrogram(
          y=clip[:, 0], sr=g.sample_rate, n_mels=64), ref=np.max)
      ax.imshow(mel, origin="lower", aspect="auto", cmap="magma",
                extent=(0, len(clip) / g.sample_rate, 0, 64))
      ax.set_ylabel(f"{name}\nmel bin")
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"{style}: ground truth / codec ({g.target_levels} levels) "
                 "/ teacher")
    fig.tight_layout()
    png = out_dir / f"{style}.png"
    with atomic.target(png) as tmp:
      fig.savefig(tmp, dpi=80)
    plt.close(fig)
    written.append(png)
  atomic.write_text(out_dir / "index.json", json.dumps(
      [str(p.name) for p in written], indent=2))
  return written


def _over_floor(row: dict) -> float | None:
  """The teacher's Fréchet distance as a multiple of the GT-vs-GT floor."""
  fd, floor = row.get("fd_teacher_vs_gt"), row.get("fd_gt_floor")
  if fd is None or not floor:
    return None
  return fd / floor


def _fmt(x, nd=2):
  return "—" if x is None else f"{x:.{nd}f}"


def write_markdown(asset_dir: pathlib.Path, out_md: pathlib.Path,
                   command: str) -> str:
  """docs/reference_world.md from the build's *_metrics.json files."""
  def load(name):
    p = asset_dir / name
    return json.loads(p.read_text()) if p.exists() else None

  codec, style = load("codec.metrics.json"), load("style.metrics.json")
  judge, teacher = load("judge.metrics.json"), load("teacher.metrics.json")
  ev = load("report.json")
  timings = asset_dir / "build_timings.json"
  timings = json.loads(timings.read_text()) if timings.exists() else {}
  lines = ["# The reference world", "",
           "Regenerate everything on this page with:", "",
           f"```bash\n{command}\n```", "",
           "Listening-set spectrograms (ground truth / codec / teacher) per "
           "style are in `docs/reference_world/*.png` (`--render-examples "
           "DIR` also writes the wavs).", "",
           "Procedural music in 10 styles, rendered with a General MIDI "
           "soundfont; a trained RVQ codec, style model and Magenta-RT-"
           "architecture teacher; judges trained on ground truth only. "
           "All figures below are measured by that command on the 2-core "
           "reference CPU.", "",
           "The build is resumable (`tools/build_reference_world.py`'s "
           "docstring): it works in a build folder outside the checkout "
           "(default `~/.cache/mrt_distill/world_build`), the codec and "
           "teacher stages checkpoint every few minutes, rerunning the same "
           "command continues where it stopped with identical weights, and "
           "a rerun with another recipe is refused. `--install` copies the "
           "finished weights into the package.", ""]
  if timings.get("seconds"):
    secs = timings["seconds"]
    lines += ["## Build time per stage", "", "| stage | minutes |",
              "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in secs.items()]
    lines += [f"| **total** | **{sum(secs.values()) / 60:.1f}** |", ""]
  if codec:
    e = codec["eval"]
    lv = sorted(e["snr_db"], key=int)
    lines += ["## Codec (held-out pieces)", "",
              f"{codec['param_count']:,} parameters, {codec['steps_run']} "
              f"steps of batch {codec['batch']}.", "",
              "| RVQ levels | " + " | ".join(lv) + " |",
              "|---|" + "---|" * len(lv),
              "| SNR (dB) | " + " | ".join(_fmt(e["snr_db"][k]) for k in lv)
              + " |",
              "| MR-STFT distance | " + " | ".join(
                  _fmt(e["mr_stft"][k], 3) for k in lv) + " |", ""]
  tokens = (ev or {}).get("codec_tokens")
  if tokens:
    m, k = tokens["mean"], tokens["levels"]
    lines += ["## Codec tokens: how stable (`tools/probe_codec_tokens.py`)",
              "",
              f"{tokens['pieces_per_style']} pieces of "
              f"{tokens['seconds']:.0f} s per style, seeds the codec did not "
              "train on; per level the teacher writes: the share of tokens "
              "unchanged when the audio is delayed by one frame (a check: "
              "1) and by half a frame (20 ms), the share repeated one bar "
              "later, its chance level, and the unigram entropy (nats).", "",
              "| | " + " | ".join(f"level {i}" for i in range(k)) + " |",
              "|---" * (k + 1) + "|"]
    for key in ("shift_frame", "shift_half", "lag_bar", "chance", "entropy"):
      lines.append(f"| {key} | " + " | ".join(
          f"{v:.2f}" for v in m[key]) + " |")
    lines += ["", f"A 20 ms delay changes {1 - m['shift_half'][0]:.0%} of "
              "level-0 tokens (issue 19's target: at most 40%).", ""]
  if judge:
    lines += ["## Judge (held-out ground truth)", "",
              "```json", json.dumps({k: v for k, v in judge.items()
                                     if "acc" in k or "floor" in k},
                                    indent=1)[:3000], "```", ""]
  if style:
    lines += ["## Style model", "", "```json",
              json.dumps({k: v for k, v in style.items()
                          if "acc" in k or "retrieval" in k},
                         indent=1)[:2000], "```", ""]
  if teacher:
    lines += ["## Teacher pretraining", "",
              f"{teacher['steps']} steps of batch {teacher['batch']}, "
              f"held-out token cross-entropy {teacher['held_out_ce']:.3f}, "
              f"accuracy {teacher['held_out_accuracy']:.3f}.", ""]
    per = teacher.get("held_out_per_level")
    if per:
      k = len(per["ce_full_context"])
      lines += ["Held-out cross-entropy per generated level (nats), with "
                "the 4 s context and with none; the difference is what the "
                "context is worth to the teacher.", "",
                "| | " + " | ".join(f"level {i}" for i in range(k)) + " |",
                "|---" * (k + 1) + "|"]
      for key in ("ce_full_context", "ce_none_context",
                  "context_worth_nats"):
        lines.append(f"| {key} | " + " | ".join(
            f"{v:.3f}" for v in per[key]) + " |")
      lines += [""]
  if ev:
    lines += ["## Teacher vs judge, per style", "",
              f"Cold-start streams of {ev['seconds_per_stream']:.0f} s, "
              f"sampling {ev['sampling']}. Fréchet distances on the judge "
              "embedding (4 s windows, 1 s hop); the floor is the distance "
              "between two disjoint ground-truth sets with as many windows.",
              "",
              "The codec column is the ceiling for any teacher: ground truth "
              "through the codec at the teacher's "
              f"{ev.get('target_levels', REFERENCE.target_levels)} levels, "
              "judged.", "",
              "| style | teacher judged correct | ground truth judged correct"
              " | codec reconstruction judged correct"
              " | FD teacher vs GT | FD floor (GT vs GT) | FD / floor |",
              "|---|---|---|---|---|---|---|"]
    rhythm = [r for r in ev["per_style"] if "onsets_ratio" in r]
    if rhythm:
      lines_r = ["", "Rhythm, teacher vs ground truth (`eval.metrics`: "
                 "onsets per second, mean spectral flux; tempo agreement: "
                 "the share of clips whose estimated tempo is in the "
                 "style's range, octave errors allowed):", "",
                 "| style | onsets/s ratio | flux ratio | tempo agreement "
                 "teacher | tempo agreement GT |", "|---|---|---|---|---|"]
      lines_r += [f"| {r['style']} | {_fmt(r['onsets_ratio'], 2)} | "
                  f"{_fmt(r['flux_ratio'], 2)} | "
                  f"{r['teacher_tempo_agreement']:.2f} | "
                  f"{r['ground_truth_tempo_agreement']:.2f} |"
                  for r in rhythm]
    for r in ev["per_style"]:
      lines.append(f"| {r['style']} | {r['teacher_accuracy']:.2f} | "
                   f"{r['ground_truth_accuracy']:.2f} | "
                   f"{r.get('codec_ceiling_accuracy', float('nan')):.2f} | "
                   f"{_fmt(r['fd_teacher_vs_gt'], 1)} | "
                   f"{_fmt(r['fd_gt_floor'], 1)} | "
                   f"{_fmt(_over_floor(r), 1)} |")
    lines += [f"| **mean** | **{ev['teacher_accuracy_mean']:.2f}** | "
              f"**{ev['ground_truth_accuracy_mean']:.2f}** | "
              f"**{ev.get('codec_ceiling_accuracy_mean', float('nan')):.2f}**"
              " | | | |", ""]
    if rhythm:
      lines += lines_r + [""]
  text = "\n".join(lines) + "\n"
  atomic.write_text(out_md, text)
  return text
