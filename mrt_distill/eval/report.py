"""report.md and report.json of `mrt-distill eval`.

The JSON holds every number (all seven sections, always present; a
section that could not be measured says why in `notes`). The markdown is
for reading: the command that regenerates it first, then one table per
section with the teacher and every student side by side, and the figures.
Both are written from the report dict only, so `render(json.load(...))`
rebuilds them from a saved run.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from mrt_distill.eval import figures


def _f(x, nd: int = 3) -> str:
  if x is None:
    return "n/a"
  if isinstance(x, bool):
    return "yes" if x else "no"
  if isinstance(x, int):
    return str(x)
  if isinstance(x, float):
    return f"{x:.{nd}f}"
  return str(x)


def _table(header: list[str], rows: list[list]) -> list[str]:
  return (["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
          + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
          + [""])


def to_markdown(r: dict, figure_names: list[str]) -> str:
  cfg = r["config"]
  keys = [m["key"] for m in r["models"]]
  lines = ["# Student vs teacher evaluation", "",
           "Regenerate this report with:", "", "```bash",
           r.get("command") or "mrt-distill eval", "```", "",
           f"World `{r['world']}` (geometry {r['geometry']}); "
           f"{'quick configuration; ' if cfg.get('quick') else ''}"
           f"held-out prompts: {', '.join(r['prompts']['held_out'])}"
           f" (held out from training: "
           f"{_f(r['prompts']['held_out_verified'])}).", ""]
  lines += _table(
      ["model", "kind", "sequential calls / chunk", "guidance w",
       "checkpoint", "on-policy prob"],
      [[m["key"], m["kind"], m["calls_per_chunk"],
        _f(m["sampling"]["guidance_weight"], 1) if "sampling" in m
        else _f(m.get("cfg_weight"), 1),
        m.get("checkpoint", f"the students' ({r['world']})"),
        _f(m.get("on_policy_prob"), 2)] for m in r["models"]])

  # 1. Style adherence.
  sa = r["style_adherence"]
  lines += ["## 1. Style adherence", "",
            f"Accuracy: the {sa['embedder']} classifies each stream (mean "
            "over its windows), against the style the prompt names. "
            "Style cosine: the style model's audio embedding of the window "
            "ending at each chunk vs the prompt's text embedding.", ""]
  rows = [[k, _f(sa["summary"][k]["accuracy"]),
           _f(sa["accuracy_ratio"].get(k), 2) if k != "teacher" else "1.00",
           _f(sa["summary"][k]["style_cosine"])] for k in keys]
  rows.append(["ground truth", _f(sa["summary"]["ground_truth"]["accuracy"]),
               "", ""])
  lines += _table(["model", "accuracy", "vs teacher", "style cosine"], rows)
  lines += _table(["prompt"] + keys,
                  [[p["prompt"]] + [_f(p[k]["accuracy"], 2) for k in keys]
                   for p in sa["per_prompt"]])

  # 2. Distribution.
  d = r["distribution"]
  lines += ["## 2. Distribution", "",
            f"Fréchet distance to ground-truth renders of the prompts' "
            f"styles ({d['ground_truth_pieces']} pieces per style and set; "
            f"windows every {d['hop_seconds']:g} s), pooled over prompts; "
            "the floor is a second ground-truth set with as many windows "
            "as a model has.", ""]
  if d.get("pooled"):
    floor = d["pooled"].get("ground_truth_floor")
    sfloor = (d.get("style_model_pooled") or {}).get("ground_truth_floor")
    lines += _table(
        ["model", f"FD ({d['embedder']})", "style-model FD"],
        [[k, _f(d["pooled"].get(k), 1),
          _f((d.get("style_model_pooled") or {}).get(k), 1)] for k in keys]
        + [["ground truth floor", _f(floor, 1), _f(sfloor, 1)]])
    if any(p.get(k) is not None for p in d.get("per_style", [])
           for k in keys):
      lines += _table(["style"] + keys + ["floor"],
                      [[p["style"]] + [_f(p.get(k), 1) for k in keys]
                       + [_f(p.get("ground_truth_floor"), 1)]
                       for p in d["per_style"]])
  else:
    lines += ["No ground truth for these prompts.", ""]

  # 3. Timbre, transients, rhythm.
  tr = r["timbre_rhythm"]
  p = tr["paired"]
  lines += ["## 3. Timbre, transients, rhythm", "",
            f"Same context: at each of {p['chunks']} chunks of "
            f"{p['streams']} teacher streams, each student writes the "
            "chunk the teacher writes next, from the teacher's context; "
            "`teacher_again` is a second teacher sample from that context "
            "(the floor). MR-STFT: spectral convergence + log-magnitude L1, "
            "5 resolutions; log-mel: mean-spectrum distance (dB).", ""]
  lines += _table(["model", "MR-STFT to teacher", "log-mel to teacher (dB)"],
                  [[k, f"{_f(v['mrstft'])} ± {_f(v['mrstft_std'])}",
                    f"{_f(v['logmel_db'], 2)} ± {_f(v['logmel_db_std'], 2)}"]
                   for k, v in p["per_model"].items()])
  lines += ["Free-running streams: spectral flux and onset rate (and their "
            "ratio to the teacher's), tempo agreement with the prompt's "
            "style range (4 %; octave: half/double/third/triple also "
            "count), boundary ratio = spectral flux at chunk joins / half "
            "way between (1 = seamless).", ""]
  gt = tr.get("ground_truth") or {}
  rows = [[k, _f(v["flux"]), _f(v["flux_ratio"], 2), _f(v["onset_rate"], 2),
           _f(v["onset_ratio"], 2), _f(v["tempo_agreement"], 2),
           _f(v["tempo_agreement_octave"], 2), _f(v["boundary_ratio"], 2),
           _f(v["rms_db"], 1)]
          for k, v in tr["per_model"].items()]
  if gt:
    rows.append(["ground truth", _f(gt["flux"]), "", _f(gt["onset_rate"], 2),
                 "", _f(gt["tempo_agreement"], 2),
                 _f(gt["tempo_agreement_octave"], 2),
                 _f(gt["boundary_ratio"], 2), ""])
  lines += _table(["model", "flux", "flux ratio", "onsets / s",
                   "onset ratio", "tempo agreement", "tempo (octave)",
                   "boundary ratio", "RMS dBFS"], rows)

  # 4. Diversity.
  dv = r["diversity"]
  lines += ["## 4. Diversity", "",
            f"Mean pairwise distance between the {dv['seeds_per_prompt']} "
            "streams of one prompt (different seeds); 0 = the model "
            "ignores its noise.", ""]
  lines += _table(["model", "MR-STFT", "vs teacher", "embedding cosine dist.",
                   "vs teacher"],
                  [[k, _f(v["mrstft"]), _f(v["mrstft_ratio"], 2),
                    _f(v["embedding_cosine"], 4), _f(v["embedding_ratio"], 2)]
                   for k, v in dv["per_model"].items()])

  # 5. Stability.
  st = r["stability"]
  lines += ["## 5. Long-form stability", ""]
  if st.get("per_model"):
    th = st["thresholds"]
    lines += [f"{st['streams']} streams of {st['minutes']:g} min "
              f"({', '.join(dict.fromkeys(st['prompts']))}), metrics per "
              f"{st['window_seconds']:g} s window. Flags: silence (RMS < "
              f"{th['silence_db']:g} dBFS), noise (flatness > "
              f"{th['noise_flatness']:g}), style loss (P(prompt style) < "
              f"{_f(th['style_prob_min'], 2)}, chance).", ""]
    frac = lambda v, m: _f(float(np.mean(v[f"{m}_mean"])), 2)
    lines += _table(
        ["model", "any flag", "silence", "noise", "style loss",
         "first flagged window", "drift P(style)", "drift style cosine",
         "drift RMS (dB)", "P(style) per window"],
        [[k, _f(v["flagged_fraction"], 2), frac(v, "silence"),
          frac(v, "noise"), frac(v, "style_loss"),
          _f(v["first_flag_window"]), _f(v["drift_style_prob"], 3),
          _f(v["drift_style_cosine"], 3), _f(v["drift_rms_db"], 1),
          " ".join(_f(x, 2) for x in v["style_prob_mean"])]
         for k, v in st["per_model"].items()])
  else:
    lines += ["Not measured (see notes).", ""]

  # 6. Transitions.
  t = r["transitions"]
  lines += ["## 6. Prompt transitions", "",
            f"{len(t['pairs'])} pairs A -> B, {t['seconds']:g} s in "
            f"{t['steps']} steps of linear interpolation of the text "
            f"embeddings (Magenta RT paper, Figure 2); {t['embedding']}.",
            ""]
  lines += _table(
      ["model", "mean cosine to target", "start: cos A - cos B",
       "end: cos B - cos A", "B overtakes A at (s)"],
      [[k, _f((v["summary"] or {}).get("cos_target")),
        _f((v["summary"] or {}).get("start_a_minus_b")),
        _f((v["summary"] or {}).get("end_b_minus_a")),
        _f((v["summary"] or {}).get("crossing_seconds"), 1)]
       for k, v in t["per_model"].items()])

  # 7. Speed.
  sp = r["speed"]
  lines += ["## 7. Speed", "",
            f"Batch 1 on {sp['device']}, measured in this run; chunk = "
            f"{sp['chunk_seconds']:g} s. Control delay: a just-in-time "
            "streamer, prompt change at a random moment (mean half a chunk "
            "+ compute, worst a chunk + compute). Memory: weights, and "
            "XLA's peak estimate for one chunk call (arguments + outputs + "
            "temporaries; the teacher's without the codec decode); process "
            f"peak RSS {sp['process_peak_rss_mib']:.0f}"
            " MiB.", ""]
  lines += _table(
      ["model", "calls / chunk", "ms / chunk", "RTF", "speedup",
       "control delay mean / worst (ms)", "weights (MiB)",
       "XLA peak (MiB)", "first call (s)"],
      [[k, v["calls_per_chunk"], _f(v["ms_per_chunk"], 1), _f(v["rtf"], 1),
        _f(v["speedup_vs_teacher"], 1),
        f"{_f(v['control_delay_ms_mean'], 0)} / "
        f"{_f(v['control_delay_ms_worst'], 0)}",
        _f(v["param_mib"], 1), _f(v["xla_peak_mib"], 1),
        _f(v["first_call_s"], 1)] for k, v in sp["per_model"].items()])

  if figure_names:
    lines += ["## Figures", ""]
    lines += [f"![{n}]({n})" for n in figure_names] + [""]
  if r.get("notes"):
    lines += ["## Notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
  tm = r.get("timing_seconds") or {}
  if tm:
    lines += ["Wall time: " + ", ".join(f"{k} {v:.0f} s"
                                        for k, v in tm.items()), ""]
  return "\n".join(lines)


def to_json(report: dict) -> str:
  """JSON with numpy values as Python numbers and NaN/inf as null."""
  return json.dumps(_clean(report), indent=1, allow_nan=False)


def _clean(x):
  if isinstance(x, dict):
    return {str(k): _clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_clean(v) for v in x]
  if isinstance(x, np.ndarray):
    return _clean(x.tolist())
  if isinstance(x, (np.bool_, bool)):
    return bool(x)
  if isinstance(x, (np.integer, int)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    return float(x) if math.isfinite(x) else None
  return x


def write(report: dict, out_dir) -> dict[str, pathlib.Path]:
  """report.json, the figures and report.md into out_dir."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  text = to_json(report)
  from mrt_distill import atomic
  atomic.write_text(out / "report.json", text)
  clean = json.loads(text)
  pngs = figures.write_all(clean, out)
  md = out / "report.md"
  atomic.write_text(md, to_markdown(clean, [p.name for p in pngs]))
  return {"json": out / "report.json", "md": md,
          **{p.stem: p for p in pngs}}
