"""Runs the student-vs-teacher evaluation and builds the report dict.

Shape letters: R rows (streams), N samples, C channels, W windows, E
embedding width, S style width, T chunks.

One call, `evaluate(EvalConfig)`, loads the models once and runs seven
sections on the same prompts, seeds and contexts for every model (the
teacher, and each student at each k in `steps`; with a second student
from `compare_checkpoint`, e.g. one trained on-policy, both):

  main streams      cold-start streams, `seeds_per_prompt` per held-out
                    prompt -> style adherence, distribution, rhythm and
                    transients, boundaries, diversity
  paired chunks     the student writes the chunk the teacher is about to
                    write, from the teacher's context -> timbre distances,
                    next to the teacher's own second sample (the floor)
  long streams      `minutes` long -> the same measures per window
                    (a minute by default), with silence / noise / style-loss
                    flags: drift and collapse
  transitions       A -> B over `transition_seconds` in `transition_steps`
                    steps (Magenta RT paper, Figure 2)
  speed             batch-1 ms per chunk, RTF, control delay, memory

Each model's streams are reduced to features as soon as they are written,
so a 5-minute run never holds every model's audio at once.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import time
from collections.abc import Sequence

import numpy as np

from mrt_distill.eval import embedders as E
from mrt_distill.eval import metrics as M
from mrt_distill.eval import streams as ST
from mrt_distill.info import peak_rss_mib

log = logging.getLogger("mrt_distill.eval")

SECTIONS = ("style_adherence", "distribution", "timbre_rhythm", "diversity",
            "stability", "transitions", "speed")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What `mrt-distill eval` measures and how much of it.

  The defaults are the full evaluation: about 4,500 teacher stream-chunks
  (most of them the 5-minute streams), which at the ~6 reference chunks/s
  (batch 8) of a 2-core CPU is roughly 15-25 minutes (an estimate from the
  quick run's rates, not a measured full run). `quick()` is a small
  configuration for a first look (about 4 minutes there).
  """

  checkpoint: str = "reference"
  compare_checkpoint: str | None = None
  prompts: str | None = None  # prompt file; default: the held-out style names
  out: str = "eval_out"
  steps: tuple[int, ...] = (1, 2, 4)
  seed: int = 0
  embedder: str = "auto"  # auto | judge | style-model
  student_cfg_weight: float = 0.0  # the distillation report's setting
  batch: int = 8  # streams generated together (one compiled shape)
  # Main streams.
  max_prompts: int = 10
  seeds_per_prompt: int = 8
  seconds: float = 10.0
  embed_hop_seconds: float = 1.0  # hop of the embedder windows for FD
  gt_pieces: int = 8  # ground-truth renders per style and set
  # Paired chunks (same context).
  paired_chunks: int = 8
  paired_seeds: int = 2
  # Long-form stability.
  minutes: float = 5.0
  long_prompts: int = 4
  long_seeds: int = 2
  stability_window_seconds: float | None = None  # None: 60, or 1/3 if short
  # Prompt transitions.
  transition_pairs: int = 16
  transition_seconds: float = 60.0
  transition_steps: int = 6
  # Speed.
  speed_reps: int = 10
  teacher_speed_reps: int = 3
  quick: bool = False

  def __post_init__(self):
    if not self.steps or any(not 1 <= int(k) <= 4 for k in self.steps):
      raise ValueError(f"steps {self.steps}: each k must be in 1..4")
    if self.embedder not in ("auto", "judge", "style-model"):
      raise ValueError(f"embedder {self.embedder!r}: auto | judge | "
                       "style-model")
    for f in ("batch", "max_prompts", "seeds_per_prompt", "gt_pieces",
              "paired_chunks", "paired_seeds", "long_prompts", "long_seeds",
              "transition_steps", "speed_reps", "teacher_speed_reps"):
      if int(getattr(self, f)) < 1:
        raise ValueError(f"{f}={getattr(self, f)} must be >= 1")
    if self.transition_steps < 2:
      raise ValueError("transition_steps must be >= 2 (start and end)")
    for f in ("seconds", "minutes", "transition_seconds",
              "embed_hop_seconds"):
      if not float(getattr(self, f)) > 0:
        raise ValueError(f"{f}={getattr(self, f)} must be > 0")

  def window_seconds(self) -> float:
    if self.stability_window_seconds:
      return float(self.stability_window_seconds)
    total = 60.0 * self.minutes
    return 60.0 if total >= 180.0 else total / 3.0


QUICK = dict(batch=6, max_prompts=3, seeds_per_prompt=2, seconds=6.0,
             embed_hop_seconds=0.25, gt_pieces=2, paired_chunks=3,
             paired_seeds=2, minutes=0.25, long_prompts=2, long_seeds=3,
             transition_pairs=6, transition_seconds=12.0, speed_reps=3,
             teacher_speed_reps=2, quick=True)


def quick(**overrides) -> EvalConfig:
  """The small configuration: 3 prompts x 2 seeds x 6 s, 15 s long streams,
  6 transitions of 12 s, each with one batch of 6 streams."""
  return EvalConfig(**{**QUICK, **overrides})


# ---- progress ----------------------------------------------------------------
class Progress:
  """Counts generated stream-chunks per model kind and logs rate and ETA.

  The time between two updates is charged to the kind of the second, so
  the analysis between batches is in the rates and the ETA covers it.
  """

  def __init__(self, totals: dict[str, int], every_s: float = 10.0):
    self.totals = dict(totals)
    self.done = {k: 0 for k in totals}
    self.secs = {k: 0.0 for k in totals}
    # The first update of a kind carries its compile: kept out of the rate.
    self._warm = {k: (0, 0.0) for k in totals}
    self.t0 = self._last = self._logged = time.perf_counter()
    self.every_s, self.stage = every_s, ""

  def set_stage(self, stage: str):
    self.stage = stage
    self._last = self._logged = time.perf_counter()
    log.info("%s", self.line())

  def __call__(self, kind: str, n: int):
    now = time.perf_counter()
    if not self.done.get(kind):
      self._warm[kind] = (n, now - self._last)
    self.done[kind] = self.done.get(kind, 0) + n
    self.secs[kind] = self.secs.get(kind, 0.0) + now - self._last
    self._last = now
    if now - self._logged >= self.every_s:
      self._logged = now
      log.info("%s", self.line())

  def rate(self, kind: str) -> float | None:
    """Stream-chunks per second after the first (compiling) update."""
    n0, s0 = self._warm.get(kind, (0, 0.0))
    d, s = self.done.get(kind, 0) - n0, self.secs.get(kind, 0.0) - s0
    return d / s if d > 0 and s > 0 else None

  def eta_s(self) -> float | None:
    eta = 0.0
    for k, total in self.totals.items():
      left = total - self.done.get(k, 0)
      if left <= 0:
        continue
      r = self.rate(k)
      if r is None:
        return None
      eta += left / r
    return eta

  def line(self) -> str:
    parts = []
    for k, total in self.totals.items():
      d, r = self.done.get(k, 0), self.rate(k)
      rate = "-" if r is None else f"{r:.1f}/s"
      parts.append(f"{k} {d}/{total} chunks ({rate})")
    all_done = sum(self.done.values())
    all_total = max(1, sum(self.totals.values()))
    eta = self.eta_s()
    return (f"eval [{self.stage}] " + ", ".join(parts)
            + f" | {100 * all_done / all_total:.0f}% | elapsed "
            f"{_hms(time.perf_counter() - self.t0)} | ETA "
            + ("?" if eta is None else _hms(eta)))


def _hms(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ---- prompts -----------------------------------------------------------------
def prompt_label(prompt: str, classes: Sequence[str] | None) -> str | None:
  """The class a prompt asks for: its highest-weight text if that is a
  class, else the first class named by one of its words; None otherwise."""
  if not classes:
    return None
  from mrt_distill.style.mixing import parse_prompt_mix
  text = max(parse_prompt_mix(prompt), key=lambda tw: tw[1])[0].strip()
  if text in classes:
    return text
  for word in text.split():
    if word in classes:
      return word
  return None


def tempo_range(prompt: str) -> tuple[float, float] | None:
  """The BPM range a reference-world prompt implies: its style's range,
  narrowed by a tempo word (slow < 90, medium 90-125, fast >= 125); None
  for prompts outside the reference world."""
  from mrt_distill.world import music
  label = prompt_label(prompt, tuple(music.STYLES))
  if label is None:
    return None
  low, high = (float(v) for v in music.STYLES[label].tempo_range)
  words = set(prompt.replace(",", " ").split())
  for word, (a, b) in (("slow", (0, 90)), ("medium", (90, 125)),
                       ("fast", (125, 1000))):
    if word in words and max(low, a) <= min(high, b):
      low, high = max(low, a), min(high, b)
  return low, high


def load_prompts(cfg: EvalConfig) -> tuple[list[str], list[tuple[str, str]]]:
  """-> (held-out prompts, transition pairs (A, B))."""
  from mrt_distill.distill import prompts as P
  if cfg.prompts:
    records = P.load_prompt_source(cfg.prompts)
    plain = list(dict.fromkeys(r.start for r in records
                               if not r.is_transition))
    pairs = [(r.start, r.end) for r in records if r.is_transition]
    plain = plain or list(dict.fromkeys(a for a, _ in pairs))
  else:
    from mrt_distill.world import music
    plain, pairs = list(music.STYLES), []
  plain = plain[:cfg.max_prompts]
  if not pairs:
    if len(plain) < 2:
      raise ValueError("prompt transitions need at least 2 prompts")
    n = min(cfg.transition_pairs, len(plain) * (len(plain) - 1))
    pairs = [(r.start, r.end) for r in P.make_transitions(
        [P.PromptRecord(p) for p in plain], n, 1, cfg.seed)]
  return plain, pairs[:cfg.transition_pairs]


def training_overlap(bundle, prompts: Sequence[str]) -> list[str] | None:
  """Prompts that the student was trained on (should be none), or None
  when its training prompts cannot be listed."""
  c = bundle.config
  try:
    if c.prompts.file:
      from mrt_distill.distill import prompts as P
      records = P.load_prompt_source(c.prompts.file)
    else:
      from mrt_distill.distill import loop
      records, _ = loop.builtin_prompts(
          int(c.seed), int(c.prompts.transition_pairs),
          int(c.prompts.transition_chunks), int(c.prompts.mix_pairs))
  except Exception:  # pylint: disable=broad-except
    return None  # e.g. a prompt file that is not on this machine
  seen = {r.start for r in records} | {r.end for r in records if r.end}
  return [p for p in prompts if p in seen]


# ---- the context -------------------------------------------------------------
@dataclasses.dataclass
class Context:
  """Everything loaded once."""
  cfg: EvalConfig
  geometry: object
  style_model: object
  teacher: ST.Teacher
  students: list[ST.Student]
  student_meta: dict[str, dict]
  embedder: E.Embedder
  style_embedder: E.StyleModelEmbedder
  prompts: list[str]
  pairs: list[tuple[str, str]]
  notes: list[str]
  reference_world: bool  # prompts may name styles with ground truth

  @property
  def models(self) -> list[ST.Model]:
    return [self.teacher, *self.students]

  @property
  def sr(self) -> int:
    return self.geometry.sample_rate

  def text_emb(self, prompt: str) -> np.ndarray:
    from mrt_distill.style import mixing
    return mixing.embed_prompt_mix(self.style_model, prompt)


def _on_policy(bundle) -> float | None:
  try:
    return float(bundle.config.rollout.on_policy_prob)
  except (AttributeError, KeyError):
    return None


def build_context(cfg: EvalConfig) -> Context:
  from mrt_distill.serve.bundle import load_student
  notes = []
  bundles = {"student": load_student(cfg.checkpoint)}
  if cfg.compare_checkpoint:
    bundles["compare"] = load_student(cfg.compare_checkpoint)
    a, b = bundles["student"], bundles["compare"]
    if a.geometry != b.geometry or a.config.world != b.config.world:
      raise ValueError(
          f"--compare-checkpoint {cfg.compare_checkpoint!r} was distilled "
          f"from world {b.config.world!r} ({b.geometry.name}), the student "
          f"from {a.config.world!r} ({a.geometry.name}): compare students "
          "of one teacher")
  main = bundles["student"]
  teacher = ST.Teacher(main.teacher_system())
  students, meta = [], {}
  for name, bundle in bundles.items():
    stepper = bundle.stepper(max_steps=max(4, max(cfg.steps)))
    for k in cfg.steps:
      st = ST.Student(bundle, stepper, k, cfg.student_cfg_weight,
                      key=f"{name}@k{k}")
      students.append(st)
      meta[st.key] = {"student": name, "k": int(k),
                      "checkpoint": bundle.source,
                      "on_policy_prob": _on_policy(bundle),
                      "cfg_weight": cfg.student_cfg_weight}
  prompts, pairs = load_prompts(cfg)
  emb = _make_embedder(cfg, main, prompts, notes)
  style_emb = E.StyleModelEmbedder(main.style_model)
  reference = str(main.config.world) in ("reference", "random-tiny")
  return Context(cfg, main.geometry, main.style_model, teacher, students,
                 meta, emb, style_emb, prompts, pairs, notes, reference)


def _make_embedder(cfg, bundle, prompts, notes) -> E.Embedder:
  from mrt_distill.world import assets
  kind = cfg.embedder
  if kind == "auto":
    ref_world = str(bundle.config.world) in ("reference", "random-tiny")
    kind = ("judge" if ref_world and assets.available()["judges"]
            else "style-model")
  if kind == "judge":
    return E.JudgeEmbedder(assets.load_judge())
  notes.append("embedder: the style model's audio tower, zero-shot "
               "classification over the prompts (no reference judge)")
  return E.StyleModelEmbedder(bundle.style_model, classes=prompts)


# ---- main streams ------------------------------------------------------------
def _chunk_cosines(ctx: Context, audio, targets_RxTxS
                   ) -> tuple[list, np.ndarray]:
  """Style-model embedding of the window ending at each chunk vs a per-chunk
  target: -> (cosines per row (list of (W_r,)), chunk ids (W,) of row 0)."""
  se = ctx.style_embedder
  mono = se.prepare(audio, ctx.sr)
  chunk = int(round(ctx.geometry.chunk_seconds * se.sample_rate))
  out, idx0 = [], None
  wins_all, owner, idx_all = [], [], []
  for r, clip in enumerate(mono):
    wins, idx = M.trailing_windows(clip, chunk, se.window_samples)
    wins_all.append(wins)
    owner += [r] * len(wins)
    idx_all.append(idx)
  wins = np.concatenate(wins_all)
  if not len(wins):
    return [np.zeros(0) for _ in mono], np.zeros(0, np.int64)
  emb = se.embed_windows(wins)
  owner = np.asarray(owner)
  for r in range(len(mono)):
    e, idx = emb[owner == r], idx_all[r]
    tgt = np.asarray(targets_RxTxS[r])
    tgt = tgt[np.minimum(idx, tgt.shape[0] - 1)]
    out.append(M.cosine(e, tgt))
    idx0 = idx if idx0 is None else idx0
  return out, idx0


def _features(ctx: Context, audio, rows: list[dict]) -> dict:
  """Per-row features of cold-start streams (R, N, C) (no audio kept)."""
  g, cfg = ctx.geometry, ctx.cfg
  mono = M.mono(audio)
  f: dict = {}
  proba = ctx.embedder.clip_proba(audio, ctx.sr)
  f["proba"] = proba
  f["emb"], f["emb_owner"] = ctx.embedder.embed_clips(audio, ctx.sr,
                                                      cfg.embed_hop_seconds)
  f["style_emb"], f["style_owner"] = ctx.style_embedder.embed_clips(
      audio, ctx.sr, cfg.embed_hop_seconds)
  targets = [np.asarray(r["text_emb"])[None] for r in rows]
  cos, _ = _chunk_cosines(ctx, audio, targets)
  f["style_cos"] = np.array([c.mean() if len(c) else np.nan for c in cos])
  f["rms_db"] = np.array([M.rms_db(x) for x in mono])
  f["flux"] = np.array([M.spectral_flux(x).mean() for x in mono])
  f["onset_rate"] = np.array([M.onset_rate(x, ctx.sr) for x in mono])
  f["tempo"] = np.array([M.estimate_tempo(x, ctx.sr) for x in mono])
  f["boundary"] = np.array([_none_nan(M.boundary_discontinuity(
      x, g.chunk_samples, g.crossfade_samples)["ratio"]) for x in mono])
  # Diversity: pairwise distances between the seeds of each prompt.
  div_stft, div_emb = {}, {}
  for p in dict.fromkeys(r["prompt"] for r in rows):
    idx = [i for i, r in enumerate(rows) if r["prompt"] == p]
    pairs = list(itertools.combinations(idx, 2))
    if not pairs:
      continue
    a = np.stack([mono[i] for i, _ in pairs])
    b = np.stack([mono[j] for _, j in pairs])
    d = 0.5 * (M.mrstft_distance(a, b) + M.mrstft_distance(b, a))
    div_stft[p] = float(np.mean(d))
    if f["emb"].size:
      means = [f["emb"][f["emb_owner"] == i].mean(axis=0) for i in idx]
      div_emb[p] = M.pairwise_mean_distance(means, M.cosine_distance)
  f["diversity_mrstft"], f["diversity_emb"] = div_stft, div_emb
  return f


def _none_nan(x) -> float:
  return np.nan if x is None else float(x)


def _ground_truth(ctx: Context, labels: Sequence[str], seconds: float) -> dict:
  """Renders of each reference-world style: set A (the reference) and set B
  (the floor), embedded like the models' streams."""
  from mrt_distill.world import evaluate_world as EW
  from mrt_distill.world import music
  cfg, out = ctx.cfg, {}
  for lab in labels:
    if lab not in music.STYLES:
      continue
    a = EW.ground_truth(lab, cfg.gt_pieces, seconds, ctx.sr)
    b = EW.ground_truth(lab, cfg.gt_pieces, seconds, ctx.sr, offset=10_000)
    if ctx.geometry.channels > 1:
      a = np.repeat(a, ctx.geometry.channels, axis=-1)
      b = np.repeat(b, ctx.geometry.channels, axis=-1)
    rec = {}
    for name, audio in (("a", a), ("b", b)):
      rec[f"emb_{name}"] = ctx.embedder.embed_clips(
          audio, ctx.sr, cfg.embed_hop_seconds)[0]
      rec[f"style_{name}"] = ctx.style_embedder.embed_clips(
          audio, ctx.sr, cfg.embed_hop_seconds)[0]
    mono_b = M.mono(b)
    rec["proba"] = ctx.embedder.clip_proba(b, ctx.sr)
    rec["tempo"] = [M.estimate_tempo(x, ctx.sr) for x in mono_b]
    rec["flux"] = [float(M.spectral_flux(x).mean()) for x in mono_b]
    rec["onset_rate"] = [M.onset_rate(x, ctx.sr) for x in mono_b]
    rec["boundary"] = [M.boundary_discontinuity(
        x, ctx.geometry.chunk_samples, ctx.geometry.crossfade_samples)
        ["ratio"] for x in mono_b]
    out[lab] = rec
  return out


def _mean(xs) -> float | None:
  v = [float(x) for x in xs if x is not None and np.isfinite(x)]
  return float(np.mean(v)) if v else None


def _fd_block(sets: dict[str, np.ndarray], gt_a, gt_b, what: str,
              notes: list[str]) -> dict:
  """FD of each model's set to GT set A, and the floor: GT set B (cut to
  the size of the models' sets) to set A."""
  out = {k: M.frechet(v, gt_a) if v.size and gt_a.size else None
         for k, v in sets.items()}
  n = min((len(v) for v in sets.values()), default=0)
  out["ground_truth_floor"] = (M.frechet(gt_b[:n], gt_a) if n and gt_b.size
                               else None)
  if all(v is None for v in out.values()):
    e = next((v.shape[1] for v in sets.values() if v.ndim == 2), 0)
    notes.append(f"{what}: too few windows for a Fréchet distance "
                 f"({n} per model, {len(gt_a)} ground truth; needs more than "
                 f"the embedding width {e}); stream longer or more seeds")
  return out


def main_section(ctx: Context, progress: Progress) -> dict:
  cfg, g = ctx.cfg, ctx.geometry
  classes = ctx.embedder.classes
  rows = [{"prompt": p, "seed_index": s, "label": prompt_label(p, classes),
           "tempo_range": tempo_range(p) if ctx.reference_world else None,
           "text_emb": ctx.text_emb(p)}
          for p in ctx.prompts for s in range(cfg.seeds_per_prompt)]
  styles = np.stack([r["text_emb"] for r in rows])
  chunks = math.ceil(cfg.seconds / g.chunk_seconds)
  feats = {}
  for model in ctx.models:
    progress.set_stage(f"main streams: {model.key}")
    audio = ST.collect(model, styles, chunks, cfg.batch, cfg.seed, progress)
    feats[model.key] = _features(ctx, audio, rows)
    del audio
  progress.set_stage("ground truth renders")
  labels = list(dict.fromkeys(r["label"] for r in rows if r["label"]))
  gt = (_ground_truth(ctx, labels, chunks * g.chunk_seconds)
        if ctx.reference_world else {})
  if not gt:
    ctx.notes.append("no ground-truth renders for these prompts (only "
                     "reference-world style names have them): Fréchet "
                     "distances and ground-truth columns are empty")
  return {"rows": rows, "features": feats, "gt": gt, "chunks": chunks}


def style_adherence(ctx: Context, main: dict) -> dict:
  rows, feats, gt = main["rows"], main["features"], main["gt"]
  classes = ctx.embedder.classes
  per_prompt, summary = [], {}
  for p in ctx.prompts:
    idx = [i for i, r in enumerate(rows) if r["prompt"] == p]
    label = rows[idx[0]]["label"]
    row = {"prompt": p, "label": label}
    for key, f in feats.items():
      acc = None
      if label is not None and f["proba"] is not None:
        pred = np.argmax(f["proba"][idx], axis=-1)
        acc = float(np.mean(pred == classes.index(label)))
      row[key] = {"accuracy": acc,
                  "style_cosine": _mean(f["style_cos"][idx])}
    if label in gt and gt[label]["proba"] is not None:
      pred = np.argmax(gt[label]["proba"], axis=-1)
      row["ground_truth"] = {"accuracy": float(np.mean(
          pred == classes.index(label)))}
    per_prompt.append(row)
  for key in feats:
    summary[key] = {
        "accuracy": _mean(r[key]["accuracy"] for r in per_prompt),
        "style_cosine": _mean(r[key]["style_cosine"] for r in per_prompt)}
  gt_acc = [r["ground_truth"]["accuracy"] for r in per_prompt
            if "ground_truth" in r]
  summary["ground_truth"] = {"accuracy": _mean(gt_acc)}
  return {"embedder": ctx.embedder.name,
          "classes": list(classes) if classes else None,
          "per_prompt": per_prompt, "summary": summary,
          "accuracy_ratio": {k: M.ratio(summary[k]["accuracy"],
                                        summary["teacher"]["accuracy"])
                             for k in feats if k != "teacher"}}


def distribution(ctx: Context, main: dict) -> dict:
  rows, feats, gt = main["rows"], main["features"], main["gt"]
  out = {"embedder": ctx.embedder.name,
         "hop_seconds": ctx.cfg.embed_hop_seconds,
         "ground_truth_pieces": ctx.cfg.gt_pieces}
  if not gt:
    out["pooled"] = out["style_model_pooled"] = None
    out["per_style"] = []
    return out
  labelled = [i for i, r in enumerate(rows) if r["label"] in gt]

  def pick(f, emb_key, owner_key):
    keep = np.isin(f[owner_key], labelled)
    return f[emb_key][keep] if f[emb_key].size else f[emb_key]

  cat = lambda key: np.concatenate([gt[lab][key] for lab in gt])
  out["pooled"] = _fd_block(
      {k: pick(f, "emb", "emb_owner") for k, f in feats.items()},
      cat("emb_a"), cat("emb_b"), f"{ctx.embedder.name} FD (pooled)",
      ctx.notes)
  out["style_model_pooled"] = _fd_block(
      {k: pick(f, "style_emb", "style_owner") for k, f in feats.items()},
      cat("style_a"), cat("style_b"), "style-model FD (pooled)", ctx.notes)
  per_style = []
  for lab in gt:
    idx = [i for i, r in enumerate(rows) if r["label"] == lab]
    sets = {k: f["emb"][np.isin(f["emb_owner"], idx)]
            for k, f in feats.items() if f["emb"].size}
    per_style.append({"style": lab, **_fd_block(
        sets, gt[lab]["emb_a"], gt[lab]["emb_b"], f"FD {lab}", [])})
  if per_style and all(v is None for p in per_style
                       for k, v in p.items() if k != "style"):
    ctx.notes.append(f"{ctx.embedder.name} FD per style: too few windows "
                     "per style in this configuration (pooled only)")
  out["per_style"] = per_style
  out["windows_per_model"] = int(min(
      (len(pick(f, "emb", "emb_owner")) for f in feats.values()), default=0))
  return out


def rhythm(ctx: Context, main: dict, paired_out: dict) -> dict:
  rows, feats, gt = main["rows"], main["features"], main["gt"]
  t = feats["teacher"]
  out = {"paired": paired_out, "per_model": {}}
  ranged = [i for i, r in enumerate(rows) if r["tempo_range"]]
  for key, f in feats.items():
    rec = {"flux": _mean(f["flux"]), "onset_rate": _mean(f["onset_rate"]),
           "boundary_ratio": _mean(f["boundary"]),
           "rms_db": _mean(f["rms_db"])}
    rec["flux_ratio"] = M.ratio(rec["flux"], _mean(t["flux"]))
    rec["onset_ratio"] = M.ratio(rec["onset_rate"], _mean(t["onset_rate"]))
    if ranged:
      agree = [M.tempo_agreement(f["tempo"][i], *rows[i]["tempo_range"])
               for i in ranged]
      agree8 = [M.tempo_agreement(f["tempo"][i], *rows[i]["tempo_range"],
                                  octave=True) for i in ranged]
      rec["tempo_agreement"] = float(np.mean(agree))
      rec["tempo_agreement_octave"] = float(np.mean(agree8))
    else:
      rec["tempo_agreement"] = rec["tempo_agreement_octave"] = None
    out["per_model"][key] = rec
  if gt:
    tempo_ok, tempo_ok8 = [], []
    for lab, rec in gt.items():
      rng = tempo_range(lab)
      tempo_ok += [M.tempo_agreement(b, *rng) for b in rec["tempo"]]
      tempo_ok8 += [M.tempo_agreement(b, *rng, octave=True)
                    for b in rec["tempo"]]
    out["ground_truth"] = {
        "flux": _mean(itertools.chain(*(r["flux"] for r in gt.values()))),
        "onset_rate": _mean(itertools.chain(*(r["onset_rate"]
                                              for r in gt.values()))),
        "boundary_ratio": _mean(itertools.chain(*(r["boundary"]
                                                  for r in gt.values()))),
        "tempo_agreement": _mean(tempo_ok),
        "tempo_agreement_octave": _mean(tempo_ok8)}
  return out


def diversity(ctx: Context, main: dict) -> dict:
  feats = main["features"]
  out = {"seeds_per_prompt": ctx.cfg.seeds_per_prompt, "per_model": {}}
  if ctx.cfg.seeds_per_prompt < 2:
    ctx.notes.append("diversity needs >= 2 seeds per prompt")
  t_stft = _mean(feats["teacher"]["diversity_mrstft"].values())
  t_emb = _mean(feats["teacher"]["diversity_emb"].values())
  for key, f in feats.items():
    s, e = _mean(f["diversity_mrstft"].values()), _mean(
        f["diversity_emb"].values())
    out["per_model"][key] = {
        "mrstft": s, "embedding_cosine": e,
        "mrstft_ratio": M.ratio(s, t_stft),
        "embedding_ratio": M.ratio(e, t_emb),
        "per_prompt_mrstft": f["diversity_mrstft"]}
  return out


# ---- paired chunks -----------------------------------------------------------
def paired_section(ctx: Context, progress: Progress) -> dict:
  cfg = ctx.cfg
  progress.set_stage("paired chunks (same context)")
  prompts = [p for p in ctx.prompts for _ in range(cfg.paired_seeds)]
  styles = np.stack([ctx.text_emb(p) for p in prompts])
  keys = [s.key for s in ctx.students] + ["teacher_again"]
  stft = {k: np.full((len(prompts), cfg.paired_chunks), np.nan) for k in keys}
  mel = {k: np.full((len(prompts), cfg.paired_chunks), np.nan) for k in keys}
  for pc in ST.paired(ctx.teacher, ctx.students, styles, cfg.paired_chunks,
                      cfg.batch, cfg.seed + 1, progress):
    ref = M.mono(pc.teacher)
    for k, audio in {**pc.students, "teacher_again": pc.teacher_again}.items():
      x = M.mono(audio)
      stft[k][pc.rows, pc.chunk] = M.mrstft_distance(x, ref)
      mel[k][pc.rows, pc.chunk] = [M.log_mel_distance(a, b, ctx.sr)
                                   for a, b in zip(x, ref)]
  per_model = {}
  for k in keys:
    per_model[k] = {
        "mrstft": float(np.nanmean(stft[k])),
        "mrstft_std": float(np.nanstd(stft[k])),
        "logmel_db": float(np.nanmean(mel[k])),
        "logmel_db_std": float(np.nanstd(mel[k])),
        "mrstft_per_chunk": np.nanmean(stft[k], axis=0).tolist(),
        "logmel_db_per_chunk": np.nanmean(mel[k], axis=0).tolist()}
  return {"chunks": cfg.paired_chunks, "streams": len(prompts),
          "floor_key": "teacher_again", "per_model": per_model}


# ---- long-form stability -----------------------------------------------------
def stability_section(ctx: Context, progress: Progress) -> dict:
  cfg, g = ctx.cfg, ctx.geometry
  classes = ctx.embedder.classes
  win_s = cfg.window_seconds()
  chunks = math.ceil(60.0 * cfg.minutes / g.chunk_seconds)
  prompts = [p for p in ctx.prompts[:cfg.long_prompts]
             for _ in range(cfg.long_seeds)]
  styles = np.stack([ctx.text_emb(p) for p in prompts])
  labels = [prompt_label(p, classes) for p in prompts]
  chance = 1.0 / len(classes) if classes else None
  win = int(round(win_s * ctx.sr))
  n_win = chunks * g.chunk_samples // win
  if n_win < 1:
    ctx.notes.append(f"stability: streams of {cfg.minutes} min are shorter "
                     f"than one {win_s:g} s window")
    return {"window_seconds": win_s, "windows": 0, "per_model": {}}
  metric_names = ("rms_db", "flatness", "flux", "onset_rate", "style_prob",
                  "style_cosine", "silence", "noise", "style_loss")
  per_model = {}
  for model in ctx.models:
    progress.set_stage(f"long streams ({cfg.minutes:g} min): {model.key}")
    vals = {m: np.full((len(prompts), n_win), np.nan) for m in metric_names}
    for rows, audio in ST.streams(model, styles, chunks, cfg.batch,
                                  cfg.seed + 2, progress):
      for r, clip in zip(rows, audio):
        _window_metrics(ctx, clip, r, win, n_win, labels, prompts, chance,
                        vals)
      del audio
    flags = {m: vals[m] for m in ("silence", "noise", "style_loss")}
    any_flag = np.max(np.stack(list(flags.values())), axis=0)
    per_model[model.key] = {
        **{f"{m}_mean": np.nanmean(vals[m], axis=0).tolist()
           for m in metric_names},
        **{f"{m}_std": np.nanstd(vals[m], axis=0).tolist()
           for m in ("rms_db", "flatness", "style_prob", "style_cosine")},
        "any_flag_mean": np.mean(any_flag, axis=0).tolist(),
        "flagged_fraction": float(np.mean(any_flag)),
        "first_flag_window": _first_flag(any_flag),
        "drift_style_prob": _drift(vals["style_prob"]),
        "drift_style_cosine": _drift(vals["style_cosine"]),
        "drift_rms_db": _drift(vals["rms_db"]),
    }
  return {"window_seconds": win_s, "windows": n_win,
          "minutes": cfg.minutes, "streams": len(prompts),
          "prompts": prompts, "chance": chance,
          "thresholds": {"silence_db": M.SILENCE_DB,
                         "noise_flatness": M.NOISE_FLATNESS,
                         "style_prob_min": chance},
          "per_model": per_model}


def _window_metrics(ctx, clip, r, win, n_win, labels, prompts, chance, vals):
  """Fills vals[metric][r, w] for each stability window w of one stream."""
  mono = M.mono(clip)
  emb_text = ctx.text_emb(prompts[r])
  classes = ctx.embedder.classes
  for w in range(n_win):
    x = mono[w * win:(w + 1) * win]
    prob = None
    if labels[r] is not None:
      p = ctx.embedder.clip_proba(x[None], ctx.sr)
      prob = None if p is None else float(p[0, classes.index(labels[r])])
    flags = M.stability_flags(x, style_score=prob, style_min=chance)
    se = ctx.style_embedder
    sx = se.prepare(x[None], ctx.sr)[0]
    wins = M.windows(sx, se.window_samples)
    cos = (float(M.cosine(se.embed_windows(wins), emb_text).mean())
           if len(wins) else np.nan)
    vals["rms_db"][r, w] = flags["rms_db"]
    vals["flatness"][r, w] = flags["flatness"]
    vals["flux"][r, w] = M.spectral_flux(x).mean()
    vals["onset_rate"][r, w] = M.onset_rate(x, ctx.sr)
    vals["style_prob"][r, w] = np.nan if prob is None else prob
    vals["style_cosine"][r, w] = cos
    for m in ("silence", "noise", "style_loss"):
      vals[m][r, w] = float(flags[m])


def _first_flag(any_flag_RxW) -> int | None:
  hit = np.flatnonzero(np.nanmax(any_flag_RxW, axis=0) > 0)
  return int(hit[0]) if len(hit) else None


def _drift(v_RxW) -> float | None:
  """Last window minus first, mean over streams (None with one window)."""
  if v_RxW.shape[1] < 2 or np.all(np.isnan(v_RxW)):
    return None
  return float(np.nanmean(v_RxW[:, -1] - v_RxW[:, 0]))


# ---- prompt transitions ------------------------------------------------------
def transition_schedule(emb_a, emb_b, chunks: int, steps: int,
                        ) -> tuple[np.ndarray, np.ndarray]:
  """Stepwise linear interpolation A -> B: -> (style per chunk (T, S),
  weight of B per chunk (T,)). Step j of `steps` covers chunks
  [j T / steps, (j + 1) T / steps) with weight j / (steps - 1), so the
  first step is pure A and the last pure B (the paper's 6 x 10 s)."""
  from mrt_distill.style import mixing
  j = np.minimum((np.arange(chunks) * steps) // chunks, steps - 1)
  w = j / (steps - 1)
  both = np.stack([emb_a, emb_b])
  emb = np.stack([mixing.mix_embeddings(both, [1 - x, x]) for x in w])
  return emb.astype(np.float32), w


def transition_section(ctx: Context, progress: Progress) -> dict:
  cfg, g = ctx.cfg, ctx.geometry
  chunks = math.ceil(cfg.transition_seconds / g.chunk_seconds)
  a = np.stack([ctx.text_emb(p) for p, _ in ctx.pairs])
  b = np.stack([ctx.text_emb(p) for _, p in ctx.pairs])
  sched = [transition_schedule(x, y, chunks, cfg.transition_steps)
           for x, y in zip(a, b)]
  styles = np.stack([s for s, _ in sched])  # (R, T, S)
  weight_b = sched[0][1]
  per_model = {}
  for model in ctx.models:
    progress.set_stage(f"transitions: {model.key}")
    audio = ST.collect(model, styles, chunks, cfg.batch, cfg.seed + 3,
                       progress)
    cos_t, idx = _chunk_cosines(ctx, audio, styles)
    cos_a, _ = _chunk_cosines(ctx, audio, a[:, None])
    cos_b, _ = _chunk_cosines(ctx, audio, b[:, None])
    del audio
    rec = {"t_seconds": ((idx + 1) * g.chunk_seconds).tolist()}
    for name, c in (("a", cos_a), ("b", cos_b), ("target", cos_t)):
      arr = np.stack(c) if len(idx) else np.zeros((len(c), 0))
      rec[f"cos_{name}_mean"] = arr.mean(axis=0).tolist()
      rec[f"cos_{name}_std"] = arr.std(axis=0).tolist()
    if len(idx):
      ca, cb = np.stack(cos_a).mean(0), np.stack(cos_b).mean(0)
      cross = np.flatnonzero(cb > ca)
      rec["summary"] = {
          "cos_target": float(np.stack(cos_t).mean()),
          "start_a_minus_b": float(ca[0] - cb[0]),
          "end_b_minus_a": float(cb[-1] - ca[-1]),
          "crossing_seconds": (float(rec["t_seconds"][cross[0]])
                               if len(cross) else None)}
    else:
      rec["summary"] = None
      ctx.notes.append("transitions: streams shorter than the style "
                       "model's window, no curves")
    per_model[model.key] = rec
  return {"pairs": [list(p) for p in ctx.pairs],
          "seconds": chunks * g.chunk_seconds, "steps": cfg.transition_steps,
          "weight_b_per_chunk": weight_b.tolist(),
          "embedding": "style model audio vs text (window ending at each "
                       f"chunk, {ctx.style_embedder.window_seconds:g} s)",
          "per_model": per_model}


# ---- speed -------------------------------------------------------------------
def speed_section(ctx: Context, progress: Progress) -> dict:
  cfg = ctx.cfg
  emb = ctx.text_emb(ctx.prompts[0])[None]
  progress.set_stage("speed (batch 1, all models round-robin)")
  reps = {m.key: (cfg.teacher_speed_reps if m.kind == "teacher"
                  else cfg.speed_reps) for m in ctx.models}
  out = ST.measure_speed(ctx.models, emb, reps, cfg.seed)
  for m in ctx.models:
    progress(m.kind, reps[m.key] + 1)
    # After the speed run, so the compiled step is usually a cache hit.
    out[m.key].update(ST.measure_memory(m, emb))
  t = out["teacher"]["ms_per_chunk"]
  for rec in out.values():
    rec["speedup_vs_teacher"] = t / rec["ms_per_chunk"]
  import jax
  return {"batch": 1, "device": str(jax.devices()[0]),
          "chunk_seconds": ctx.geometry.chunk_seconds,
          "process_peak_rss_mib": peak_rss_mib(), "per_model": out}


# ---- the whole run -----------------------------------------------------------
def _totals(ctx: Context) -> dict[str, int]:
  cfg, g = ctx.cfg, ctx.geometry
  n_s = len(ctx.students)
  main = len(ctx.prompts) * cfg.seeds_per_prompt * math.ceil(
      cfg.seconds / g.chunk_seconds)
  pair = len(ctx.prompts) * cfg.paired_seeds * cfg.paired_chunks
  long = (min(cfg.long_prompts, len(ctx.prompts)) * cfg.long_seeds
          * math.ceil(60 * cfg.minutes / g.chunk_seconds))
  trans = len(ctx.pairs) * math.ceil(cfg.transition_seconds / g.chunk_seconds)
  return {"teacher": main + 2 * pair + long + trans + cfg.teacher_speed_reps
                     + 1,
          "student": n_s * (main + pair + long + trans + cfg.speed_reps + 1)}


def evaluate(cfg: EvalConfig, command: str | None = None,
             context: Context | None = None) -> dict:
  """Runs every section; -> the report dict (see `report.py`).

  context: models already loaded by `build_context` for this cfg (tests
  load once and reuse them); it must have been built from the same
  checkpoints, prompts and steps."""
  t0 = time.perf_counter()
  if context is None:
    log.info("eval: loading %s%s", cfg.checkpoint,
             f" and {cfg.compare_checkpoint}" if cfg.compare_checkpoint
             else "")
    context = build_context(cfg)
  elif context.cfg != cfg:
    raise ValueError("evaluate: the context was built for another config")
  ctx = dataclasses.replace(context, notes=list(context.notes))
  load_s = time.perf_counter() - t0
  progress = Progress(_totals(ctx))
  timing = {"load": load_s}

  def timed(name, fn, *args):
    s = time.perf_counter()
    out = fn(*args)
    timing[name] = time.perf_counter() - s
    return out

  main = timed("main_streams", main_section, ctx, progress)
  paired_out = timed("paired", paired_section, ctx, progress)
  stab = timed("stability", stability_section, ctx, progress)
  trans = timed("transitions", transition_section, ctx, progress)
  speed = timed("speed", speed_section, ctx, progress)
  progress.set_stage("report")
  overlap = training_overlap(ctx.students[0].bundle, ctx.prompts)
  if overlap:
    ctx.notes.append(f"prompts seen in training (not held out): {overlap}")
  report = {
      "command": command,
      "config": dataclasses.asdict(cfg),
      "geometry": ctx.geometry.name,
      "world": str(ctx.students[0].bundle.config.world),
      "models": _models_meta(ctx),
      "prompts": {"held_out": ctx.prompts, "training_overlap": overlap,
                  "held_out_verified": overlap == [] if overlap is not None
                  else None},
      "style_adherence": style_adherence(ctx, main),
      "distribution": distribution(ctx, main),
      "timbre_rhythm": rhythm(ctx, main, paired_out),
      "diversity": diversity(ctx, main),
      "stability": stab,
      "transitions": trans,
      "speed": speed,
      "notes": ctx.notes,
  }
  timing["total"] = time.perf_counter() - t0
  report["timing_seconds"] = timing
  log.info("eval: done in %s", _hms(timing["total"]))
  return report


def _models_meta(ctx: Context) -> list[dict]:
  out = [{"key": "teacher", "kind": "teacher",
          "calls_per_chunk": ctx.teacher.calls_per_chunk,
          "sampling": ctx.teacher.system.sampling._asdict()}]
  for st in ctx.students:
    out.append({"key": st.key, "kind": "student",
                "calls_per_chunk": st.calls_per_chunk,
                **ctx.student_meta[st.key]})
  return out


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
