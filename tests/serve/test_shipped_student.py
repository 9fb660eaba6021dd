"""The shipped student (`mrt_distill/assets/reference/student.npz`, what
`generate`, `serve`, `eval` and the Colab demo play by default) with the
shipped teacher's frozen weights: a few styles streamed for several seconds
through the serving chunk step, at the student's own settings (its config's
guidance weight and steps), must be judged as their prompt by the reference
judge, be loud enough and not be static.

The floors below were measured on the shipped student, and the same
measurement of an untrained student (the same teacher, fresh heads and
adapters) is the other side each floor must separate. When student.npz is
replaced, re-measure both sides in one command and update the constants:

  python tests/serve/test_shipped_student.py --measure
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

import numpy as np
import pytest

# ---- floors (measured 2026-12-07 on the student.npz of the README command,
# seed 0: the coupled token-head student with the recurrent pick, 600 steps,
# played at its config's w=3 and pick temperature 1.25, 1 step; `--measure`
# prints both sides) ------------------------------------------------------
# Streams judged as their prompt, of STYLES x STREAMS streams of SECONDS:
# shipped 0.9 (all but one reggae stream, heard as funk), untrained 0.1 (a
# fresh token head samples near-uniform codes: noise, heard as
# drum_and_bass / techno). The independent-pick student shipped before
# scored 0.8 here; at w=0 it scored 0.4.
MIN_ACCURACY = 0.6
# Median RMS over the streams: shipped 0.129, untrained 0.063 (noise); at
# w=0 the student shipped before measured 0.070, so this floor also catches
# the guidance lost. The uncoupled student at w=0 was 14 dB down.
MIN_MEDIAN_RMS = 0.09
# Every stream well above silence: shipped min 0.073 (untrained 0.063).
MIN_RMS = 0.02
# Median over styles of the mean spectral flux (eval.metrics.spectral_flux:
# the rectified rise of the log magnitude between frames; 0 for a steady
# tone or silence): shipped 0.0244 (min 0.0217), untrained 0.0203.
# It catches a silent or steady-tone student; the uncoupled student's
# within-chunk staticness is measured by `mrt-distill eval` and
# tools/paired_fidelity.py.
MIN_MEDIAN_FLUX = 0.0215

STYLES = ("techno", "ambient_pads", "jazz_piano_trio", "funk", "reggae")
STREAMS = 2  # per style
SECONDS = 8.0  # two whole 4 s judge windows per stream
SEED = 0


@functools.lru_cache(maxsize=None)
def _shipped():
  from mrt_distill.serve.bundle import load_student
  from mrt_distill.world.runtime import assets
  return load_student("reference"), assets.load_judge()


def measure(untrained: bool = False) -> dict:
  """Streams STREAMS x SECONDS of each style from the shipped student (or,
  untrained=True, the same student with freshly initialised heads and
  adapters) -> per-style predictions, RMS and flux, and their extremes."""
  import jax

  from mrt_distill.distill import student as S
  from mrt_distill.distill.report import student_stream
  from mrt_distill.eval import metrics as M
  from mrt_distill.style import mixing

  bundle, judge = _shipped()
  params = bundle.params
  if untrained:
    params = S.from_teacher(bundle.model.cfg, bundle.teacher_params,
                            jax.random.PRNGKey(SEED))
  g = bundle.geometry
  scfg = bundle.config.get("student", {})
  steps = int(scfg.get("sample_steps", 1))
  w = float(scfg.get("cfg_weight", 0.0))
  stepper = bundle.stepper(max_steps=max(steps, 1))
  chunks = int(np.ceil(SECONDS / g.chunk_seconds))
  n = int(round(SECONDS * g.sample_rate))
  out = {"cfg_weight": w, "steps": steps, "per_style": {}}
  for style in STYLES:
    emb = mixing.embed_prompt_mix(bundle.style_model, style)
    audio = student_stream(stepper, params, np.repeat(emb[None], STREAMS, 0),
                           chunks, SEED, w, steps)[:, :n]
    mono = audio.mean(axis=-1)
    out["per_style"][style] = {
        "predictions": list(judge.classify(audio, g.sample_rate)),
        "rms": [float(np.sqrt(np.mean(x ** 2))) for x in mono],
        "flux": float(np.mean([M.spectral_flux(x).mean() for x in mono]))}
  rows = out["per_style"].values()
  out["accuracy"] = float(np.mean([p == s for s, r in out["per_style"].items()
                                   for p in r["predictions"]]))
  rms = [x for r in rows for x in r["rms"]]
  flux = [r["flux"] for r in rows]
  out["rms_min"], out["rms_median"] = min(rms), float(np.median(rms))
  out["flux_min"], out["flux_median"] = min(flux), float(np.median(flux))
  return out


@pytest.fixture(scope="module")
def shipped():
  return measure()


def test_shipped_student_is_judged_as_its_prompt(shipped):
  assert shipped["accuracy"] >= MIN_ACCURACY, shipped["per_style"]


def test_shipped_student_is_loud_enough(shipped):
  assert shipped["rms_median"] >= MIN_MEDIAN_RMS, shipped["per_style"]
  assert shipped["rms_min"] >= MIN_RMS, shipped["per_style"]


def test_shipped_student_is_not_static(shipped):
  assert shipped["flux_median"] >= MIN_MEDIAN_FLUX, shipped["per_style"]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--measure", action="store_true",
                  help="print the shipped and an untrained student's figures "
                       "(the two sides of the floors) as JSON")
  args = ap.parse_args(argv)
  if not args.measure:
    ap.print_help()
    return 2
  result = {"floors": {"MIN_ACCURACY": MIN_ACCURACY,
                       "MIN_MEDIAN_RMS": MIN_MEDIAN_RMS, "MIN_RMS": MIN_RMS,
                       "MIN_MEDIAN_FLUX": MIN_MEDIAN_FLUX},
            "shipped": measure(), "untrained": measure(untrained=True)}
  print(json.dumps(result, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
