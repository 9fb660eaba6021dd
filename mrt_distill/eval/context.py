"""`Context`: the models, embedders and prompts an evaluation loads once
(`build_context`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from mrt_distill.eval import embedders as E
from mrt_distill.eval import streams as ST
from mrt_distill.eval.config import EvalConfig
from mrt_distill.eval.prompts import load_prompts


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
  # The world's tempo option for that ground truth (World.bar_grid_hz).
  bar_grid_hz: float | None = None

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
    w = (float(bundle.config.student.get("cfg_weight", 0.0))
         if cfg.student_cfg_weight is None else float(cfg.student_cfg_weight))
    for k in cfg.steps:
      st = ST.Student(bundle, stepper, k, w, key=f"{name}@k{k}")
      students.append(st)
      meta[st.key] = {"student": name, "k": int(k),
                      "checkpoint": bundle.source,
                      "on_policy_prob": _on_policy(bundle),
                      "cfg_weight": w}
  prompts, pairs = load_prompts(cfg)
  emb = _make_embedder(cfg, main, prompts, notes)
  style_emb = E.StyleModelEmbedder(main.style_model)
  return Context(cfg, main.geometry, main.style_model, teacher, students,
                 meta, emb, style_emb, prompts, pairs, notes,
                 main.world.procedural, main.world.bar_grid_hz)


def _make_embedder(cfg, bundle, prompts, notes) -> E.Embedder:
  kind = cfg.embedder
  if kind == "auto":
    kind = "judge" if bundle.world.judge_available() else "style-model"
  if kind == "judge":
    return E.JudgeEmbedder(bundle.world.load_judge())
  notes.append("embedder: the style model's audio tower, zero-shot "
               "classification over the prompts (no reference judge)")
  return E.StyleModelEmbedder(bundle.style_model, classes=prompts)
