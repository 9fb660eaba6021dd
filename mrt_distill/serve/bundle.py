"""A trained student ready to serve: model, merged params, codec, style model.

  bundle = load_student("reference")        # the student shipped in the package
  bundle = load_student("runs/reference_cpu")  # a `mrt-distill distill` workdir
  bundle = load_student("my_student.npz")   # a file written by export_student
  bundle = load_student("random-tiny")      # untrained tiny student (tests)
  stepper = bundle.stepper()                # the jitted serving chunk step

A student file holds only the trainable parameters (LoRA factors and the new
heads, a few % of the model) plus the distillation config as JSON; the frozen
base weights are the teacher's and are rebuilt from the world the config
names (`world: reference` = the shipped teacher), never copied: the bundle
carries that `World` (`bundle.world`, from `world.runtime.load_world`).
Reading and checking the files is `student_files.py`'s.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from mrt_distill.distill import student as S
from mrt_distill.serve import student_files
from mrt_distill.serve.student_files import FORMAT  # noqa: F401 (bundle.FORMAT)
from mrt_distill.serve.student_files import StudentLoadError
from mrt_distill.teacher.config import for_backend

SOURCES = ("reference", "random-tiny", "a distill workdir",
           "a workdir's checkpoint (WORKDIR@STEP)", "a student .npz")


@dataclasses.dataclass
class StudentBundle:
  model: S.StudentModel
  params: Any  # merged trainable + frozen
  codec: Any
  style_model: Any
  scaler: S.LatentScaler
  teacher_params: Any
  teacher_cfg: Any  # the world's, in the backend's fast dtype
  config: ml_collections.ConfigDict
  source: str
  world: Any = None  # the World it was distilled in (world/runtime/load.py)

  @property
  def geometry(self):
    return self.model.cfg.geometry

  def stepper(self, max_steps: int = 4):
    from mrt_distill.serve.chunk_step import ChunkStepper
    return ChunkStepper(self.model, self.codec, self.style_model, self.scaler,
                        max_steps=max_steps)

  def teacher_system(self, **sampling):
    """The teacher this student was distilled from (for comparisons);
    sampling defaults to the distillation config's."""
    from mrt_distill.teacher.decode import SamplingParams
    from mrt_distill.teacher.system import TeacherSystem
    s = dict(self.config.sampling.to_dict()) if "sampling" in self.config \
        else {}
    s.update(sampling)
    return TeacherSystem(self.teacher_cfg, self.teacher_params, self.codec,
                         self.style_model, SamplingParams(**s))


def _flat(tree) -> dict[str, np.ndarray]:
  return {"/".join(k): np.asarray(v)
          for k, v in traverse_util.flatten_dict(jax.device_get(tree)).items()}


def _student_base(scfg, teacher_params, seed: int, trained: bool):
  """-> (fresh trainable tree, frozen tree) of a student on this teacher.

  trained: a trained student will replace every fresh tensor, so only their
  shapes are made (jax.eval_shape), and the frozen backbone is the teacher's
  weights as float32 -- the values `S.from_teacher` gives, without its
  eager init pass through the whole model (about 15 s on a 2-core CPU)."""
  key = jax.random.PRNGKey(seed)
  if not trained:
    return S.split_params(S.from_teacher(scfg, teacher_params, key))
  shapes = jax.eval_shape(lambda k: S.init_student_params(scfg, k), key)
  fresh, frozen_shapes = S.split_params(shapes)
  teacher = traverse_util.flatten_dict(teacher_params)
  frozen = {}
  for path, want in traverse_util.flatten_dict(frozen_shapes).items():
    t = teacher.get(path)
    if t is None or tuple(t.shape) != tuple(want.shape):
      raise StudentLoadError(
          f"teacher param {'/'.join(path)} is "
          f"{'missing' if t is None else f'of shape {tuple(t.shape)}'}, the "
          f"student expects {tuple(want.shape)}: the student config's "
          f"teacher ({scfg.teacher.name!r}) is not this world's architecture")
    frozen[path] = np.asarray(t, np.float32)
  return fresh, traverse_util.unflatten_dict(frozen)


def _assemble(config, trainable, source: str) -> StudentBundle:
  """World from the config + the base student from the teacher + `trainable`
  (None keeps the fresh heads/LoRA); checks every trained tensor's shape."""
  from mrt_distill.distill import loop
  from mrt_distill.world.runtime import load_world
  world = load_world(config)
  # Serve in the backend's fast dtype (f32 on CPU); params are f32 anyway.
  tcfg = for_backend(world.teacher_cfg)
  scfg = loop.student_config(config, tcfg)
  fresh, frozen = _student_base(scfg, world.teacher_params,
                                int(config.seed), trained=trainable is not None)
  if trainable is not None:
    want = {"/".join(k): v for k, v in
            traverse_util.flatten_dict(fresh).items()}
    got = _flat(trainable)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got)
                   if want[k].shape != got[k].shape)
    if missing or extra or wrong:
      detail = "; ".join(
          [f"shape of {k}: file {got[k].shape} vs model {want[k].shape}"
           for k in wrong[:3]]
          + ([f"missing {missing[:3]}"] if missing else [])
          + ([f"unexpected {extra[:3]}"] if extra else []))
      raise StudentLoadError(
          f"student {source!r} does not fit the model its config describes "
          f"(world {config.world!r}, geometry {world.geometry.name}, LoRA "
          f"rank {scfg.lora_rank}): {detail}. It was trained for another "
          f"geometry or teacher; load it with the config it was trained "
          f"with, or distil a new student")
    fresh = trainable
  params = S.merge_params(jax.tree.map(np.asarray, fresh), frozen)
  scaler = S.LatentScaler.for_codec(world.codec, scfg.noise.sigma_data)
  books = (S.TokenBooks.for_codec(world.codec, world.geometry, scaler)
           if scfg.token_head else None)
  return StudentBundle(S.StudentModel(scfg, books=books), params, world.codec,
                       world.style_model, scaler, world.teacher_params,
                       tcfg, config, source, world)


def export_student(config, trainable, path, metrics: dict | None = None
                   ) -> pathlib.Path:
  """Trainable params + config -> one .npz (config and metrics inside)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  from mrt_distill.world.runtime import teacher_identity
  meta = {"format": FORMAT, "config": json.loads(config.to_json()),
          "teacher": teacher_identity(config), "metrics": metrics or {}}
  if config.student.get("coupled", False):
    from mrt_distill import coupling
    meta["noise_layout"] = coupling.NOISE_LAYOUT
  arrays = {f"params/{k}": v for k, v in _flat(trainable).items()}
  arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  from mrt_distill import atomic
  with atomic.target(path) as tmp:  # a failed write keeps the old file
    np.savez(tmp, **arrays)
  return path


def _build(found: student_files.Found) -> StudentBundle:
  b = _assemble(found.config, found.trainable, found.source)
  if found.label:
    b.source = found.label
  return b


def _from_npz(path: pathlib.Path) -> StudentBundle:
  return _build(student_files.from_npz(path))


def _from_workdir(workdir: pathlib.Path) -> StudentBundle:
  """The newest readable checkpoint, else an older one or the exported
  student.npz, saying which (student_files.py)."""
  return _build(student_files.from_workdir(workdir))


def reference_student_path() -> pathlib.Path:
  from mrt_distill.world.runtime import assets
  return assets.path("student")


def load_student(source: str | None = "reference") -> StudentBundle:
  """'reference' | 'random-tiny' | workdir | workdir@STEP (that
  checkpoint) | student .npz -> StudentBundle."""
  source = source or "reference"
  if source == "reference":
    p = reference_student_path()
    if not p.is_file():
      raise StudentLoadError(
          f"the reference student is not in this install ({p}); train one "
          f"with `mrt-distill distill` and pass its --workdir")
    return _from_npz(p)
  if source == "random-tiny":
    from mrt_distill.distill.config_io import load_config
    return _assemble(load_config("reference_cpu:tiny"), None, source)
  p = pathlib.Path(source)
  if p.is_dir():
    return _from_workdir(p)
  base, at, step = source.rpartition("@")
  if at and step.isdigit() and not p.exists():
    if not pathlib.Path(base).is_dir():
      raise StudentLoadError(f"student {source!r}: {base!r} is not a "
                             f"distill workdir")
    return _build(student_files.from_workdir(pathlib.Path(base), int(step)))
  if p.is_file():
    return _from_npz(p)
  raise StudentLoadError(f"student {source!r} not found: give one of "
                         f"{', '.join(SOURCES)}")
