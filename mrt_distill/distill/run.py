"""`Run`: everything a distillation run holds besides its train state.

Its own module so that the loop (which builds it) and the checkpoints
(which save and restore its rollout, replay and prompt state) both depend
on it without depending on each other.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mrt_distill.distill import student as S
from mrt_distill.distill.losses import LossWeights
from mrt_distill.distill.rollout import ReplayBuffer, RolloutGenerator


@dataclasses.dataclass
class Run:
  """Everything a run holds besides the train state."""
  config: Any
  world: Any
  model: S.StudentModel
  scaler: S.LatentScaler
  mesh: Any
  rollout: RolloutGenerator
  replay: ReplayBuffer
  dataset: Any
  prompt_iter: Any
  held_out: list[str]
  weights: LossWeights
  trainable_fraction: float
  style_embed: Any = None  # audio (B, S) -> (B, E) when losses.style != 0
