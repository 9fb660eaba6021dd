"""`World`: the teacher, codec, style model and judge a run works with.

Built once by `runtime.load.load_world(config)`, for every world
(`config.world`: reference, random-tiny, magenta_rt), and handed to
distillation (`distill/loop.py`), serving (`serve/bundle.py`, a student
bundle carries its world) and evaluation, which read its fields instead of
asking which world it is.
"""

from __future__ import annotations

import dataclasses

from mrt_distill.geometry import Geometry


@dataclasses.dataclass
class World:
  """One world's models, loaded.

  Attributes:
    name: `config.world` it was built from.
    geometry: the teacher's geometry (codec and style model agree with it).
    codec: the world's `Codec`.
    style_model: the world's `StyleModel`.
    teacher_params: the teacher's parameters.
    teacher_cfg: the teacher's `TeacherConfig`.
    teacher_identity: which teacher this is, recorded in every checkpoint
      and student file distilled from it (`load.teacher_identity`).
    procedural: it plays the reference world's procedural music: prompts
      may name its styles, which have ground truth, and its judge scores
      them (reference, random-tiny).
    judge: the world's style judge when loaded (`load_world(...,
      with_judge=True)` or `load_judge`); None otherwise and for a world
      without one (magenta_rt).
    bar_grid_hz: the tempo option its procedural music was built with
      (`music.generate_piece`), read from the build recipe beside its
      weights; ground truth for its prompts must be generated with it.
  """
  name: str
  geometry: Geometry
  codec: object = dataclasses.field(repr=False)
  style_model: object = dataclasses.field(repr=False)
  teacher_params: object = dataclasses.field(repr=False)
  teacher_cfg: object = dataclasses.field(repr=False)
  teacher_identity: str = ""
  procedural: bool = False
  judge: object | None = dataclasses.field(default=None, repr=False)
  bar_grid_hz: float | None = None

  def teacher_system(self, **sampling):
    """A `TeacherSystem` of this world's teacher, codec and style model;
    `sampling`: `SamplingParams` fields (defaults otherwise)."""
    from mrt_distill.teacher.decode import SamplingParams
    from mrt_distill.teacher.system import TeacherSystem
    return TeacherSystem(self.teacher_cfg, self.teacher_params, self.codec,
                         self.style_model, SamplingParams(**sampling))

  def judge_available(self) -> bool:
    """Whether the world has a judge and its weights are built."""
    if not self.procedural:
      return False
    from mrt_distill.world.runtime import assets
    return assets.available()["judges"]

  def load_judge(self):
    """The judge that scores this world's audio, loaded once: its own; a
    world without one (magenta_rt) is scored by the reference world's judge
    as an audio embedding (what the distill report and `mrt-distill eval
    --embedder judge` have always used), which is not kept in `judge`.

    Raises:
      MissingAssetError: the judge weights are not built (names the
        command that builds them).
    """
    if self.judge is not None:
      return self.judge
    from mrt_distill.world.runtime import assets
    judge = assets.load_judge()
    if self.procedural:
      self.judge = judge
    return judge
