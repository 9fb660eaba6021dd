"""Teacher chunks -> shorter student chunks (the chunk-length knob).

The teacher writes chunks of C frames; a student with chunks of F frames
(F divides C and the context) learns from the same rollouts: a teacher
example (context of W frames, chunk of C frames) is one stretch of W + C
frames of the stream, so every F-frame slice of its chunk is an example
with the W frames before it as context. One rollout call gives C / F
student examples, at no extra teacher cost.

Shapes: B examples, W context frames, C teacher chunk frames, F student
chunk frames, J = C / F slices, Lc context levels, D latent width.
"""

from __future__ import annotations

import numpy as np

from mrt_distill.geometry import Geometry
from mrt_distill.teacher.system import context_frame_ids

KEYS = ("ctx_ids", "style_ids", "style_emb", "latents")


def split_examples(examples: dict[str, np.ndarray], teacher: Geometry,
                   student: Geometry) -> dict[str, np.ndarray]:
  """Rollout examples at the teacher's chunk -> (B * J) student examples.

  examples: ctx_ids (B, W/C, C*Lc), tokens (B, C, K), latents (B, C, D),
  style_ids, style_emb (and noise (B, C, K, D) for coupled rollouts).
  Returns ctx_ids (B*J, W/F, F*Lc), latents (B*J, F, D), noise
  (B*J, F, K, D) when given, and the style repeated, slice-major (all B examples of slice
  0 first), so slice 0 of every example equals the teacher-chunk case.
  """
  c, f, w = teacher.chunk_frames, student.chunk_frames, teacher.context_frames
  sliced = ("noise", "tokens", "teacher_logp")  # per frame of the chunk
  keys = KEYS + tuple(k for k in sliced if k in examples)
  if f == c:
    return {k: examples[k] for k in keys}
  if c % f or w % f or student.context_frames != w:
    raise ValueError(f"student chunk of {f} frames does not tile the "
                     f"teacher's chunk ({c}) and context ({w}) frames")
  b, lc = examples["ctx_ids"].shape[0], teacher.context_levels
  ctx = np.asarray(examples["ctx_ids"]).reshape(b, w, lc)  # frame-major
  chunk = context_frame_ids(teacher, np.asarray(examples["tokens"]))
  stream = np.concatenate([ctx, chunk.reshape(b, c, lc)], axis=1)
  out = {k: [] for k in keys}
  for j in range(c // f):
    out["ctx_ids"].append(stream[:, j * f:j * f + w].reshape(b, w // f,
                                                             f * lc))
    out["latents"].append(examples["latents"][:, j * f:(j + 1) * f])
    for k in sliced:  # coupled: the slice's own frames
      if k in keys:
        out[k].append(examples[k][:, j * f:(j + 1) * f])
    out["style_ids"].append(examples["style_ids"])
    out["style_emb"].append(examples["style_emb"])
  return {k: np.concatenate(v).astype(examples[k].dtype)
          for k, v in out.items()}
