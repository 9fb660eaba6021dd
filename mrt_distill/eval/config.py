"""What `mrt-distill eval` measures: `EvalConfig`, the `QUICK` preset and
`quick()`."""

from __future__ import annotations

import dataclasses


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
  # The students' guidance weight; None: each student's own
  # `student.cfg_weight`, as the distill report, generate and serve play it.
  student_cfg_weight: float | None = None
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
