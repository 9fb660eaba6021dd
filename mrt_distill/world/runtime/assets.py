"""The shipped reference world: where its weights live and how to load them.

Files (all checksummed; see `mrt_distill.checksummed`) under
`mrt_distill/assets/reference/` (override with MRT_DISTILL_ASSETS):

  codec.npz     the trained RVQ neural codec       (--stage codec)
  style.npz     the trained text/audio style model (--stage style)
  judge.npz     the style classifier / embedding   (--stage judges)
  teacher.npz   the pretrained small teacher       (--stage teacher)
  report.json   the build's measured figures       (--stage evaluate)

`--stage NAME` rebuilds one into the build folder; a damaged or missing
file is restored by `python tools/build_reference_world.py --install`
(it builds what is not built yet, then copies every file here).
"""

from __future__ import annotations

import os
import pathlib

from mrt_distill.checksummed import MissingAssetError  # noqa: F401 (assets.)
from mrt_distill.checksummed import REFERENCE_REBUILD
from mrt_distill.geometry import REFERENCE

ASSET_DIR = pathlib.Path(os.environ.get(
    "MRT_DISTILL_ASSETS",
    pathlib.Path(__file__).resolve().parents[2] / "assets" / "reference"))

FILES = {"codec": "codec.npz", "style": "style.npz", "judges": "judge.npz",
         "teacher": "teacher.npz",
         # The distilled reference student (trainable params + config).
         "student": "student.npz"}


def path(stage: str) -> pathlib.Path:
  return ASSET_DIR / FILES[stage]


def rebuild_hint(stage: str) -> str:
  del stage  # every stage is restored the same way (the build resumes)
  return REFERENCE_REBUILD


def _require(stage: str) -> pathlib.Path:
  p = path(stage)
  if not p.exists():
    raise MissingAssetError(
        f"the reference world's {stage} weights are not built ({p} is "
        f"missing); build them with `{rebuild_hint(stage)}`")
  return p


def recorded_sha256(stage: str) -> str:
  """The sha256 recorded beside a stage's weights (its identity), read from
  the small JSON sidecar without loading or re-hashing the weights."""
  import json
  from mrt_distill.checksummed import sidecar
  return json.loads(sidecar(_require(stage)).read_text())["sha256"]


def style_vocab() -> tuple[str, ...] | None:
  """The style model's word list, read from its checksum sidecar (JSON) in
  milliseconds without loading it; None when it is not built or cannot be
  read (loading it then names the fix)."""
  import json
  from mrt_distill.checksummed import sidecar
  try:
    meta = json.loads(sidecar(path("style")).read_text())["meta"]
    return tuple(meta["config"]["vocab"])
  except Exception:  # not built or damaged: the loader names the fix
    return None


def available() -> dict[str, bool]:
  return {k: path(k).exists() for k in FILES}


def load_codec():
  from mrt_distill.codec.neural import NeuralCodec
  return NeuralCodec.load(_require("codec"), REFERENCE)


def load_style_model():
  from mrt_distill.style.reference import ReferenceStyleModel
  return ReferenceStyleModel.load(_require("style"), REFERENCE)


def load_judge():
  from mrt_distill.world.runtime.judges import StyleJudge
  return StyleJudge.load(_require("judges"))


def load_teacher():
  """-> (params, TeacherConfig) of the pretrained reference teacher."""
  from mrt_distill.teacher.load import load_teacher_npz
  return load_teacher_npz(_require("teacher"), rebuild_hint("teacher"))
