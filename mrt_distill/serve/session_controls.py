"""The prompt side of a `StreamSession`: prompt mixes, CFG weight and steps,
and transitions between two mixes, checked before they touch the stream.

`ControlsMixin` holds the methods; `StreamSession` owns the state they use
(`_lock`, `_mix`, `_emb`, `_cfg`, `_steps`, `_transition`, `_pending`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Mapping

import numpy as np

from mrt_distill.style import mixing


def _label(mix: list[tuple[str, float]]) -> str:
  return ", ".join(f"{t}:{w:g}" for t, w in mix)


@dataclasses.dataclass
class _Transition:
  """A -> B over `seconds`, chunk j (from 0) at alpha = j Sc / seconds."""
  emb_a: np.ndarray  # (E,)
  emb_b: np.ndarray  # (E,)
  mix_a: list
  mix_b: list
  seconds: float
  done: int = 0  # transition chunks produced

  def alpha(self, chunk_seconds: float) -> float:
    if self.seconds <= 0:
      return 1.0
    return min(1.0, self.done * chunk_seconds / self.seconds)


class ControlsMixin:
  """Prompt mix, CFG weight, steps and transitions of a `StreamSession`."""

  # ---- controls --------------------------------------------------------------
  def _check_mix(self, mix, what: str) -> list[tuple[str, float]]:
    """str "a:1, b:0.5" | {text: weight} | [(text, weight)] -> pairs."""
    try:
      if isinstance(mix, str):
        pairs = mixing.parse_prompt_mix(mix)
      elif isinstance(mix, Mapping):
        pairs = [(k, float(v)) for k, v in mix.items()]
      elif isinstance(mix, (list, tuple)):
        pairs = [(t, float(w)) for t, w in mix]
      else:
        raise ValueError(f"expected a str like 'techno:1, flute:0.5' or a "
                         f"{{text: weight}} dict, got {type(mix).__name__}")
      for t, _ in pairs:
        if not isinstance(t, str) or not t.strip():
          raise ValueError(f"prompt text {t!r} is not a non-empty str")
      if not pairs:
        raise ValueError("no prompts given")
    except (TypeError, ValueError) as e:
      raise self._rejected(mix, what, e) from None
    return [(t.strip(), w) for t, w in pairs]

  def _embed(self, pairs, what: str) -> np.ndarray:
    try:
      return mixing.embed_prompt_mix(self.style_model, pairs)
    except ValueError as e:
      raise self._rejected(pairs, what, e) from None

  def _rejected(self, mix, what, e) -> ValueError:
    keep = (f"; the stream keeps playing {_label(self._mix)!r}"
            if hasattr(self, "_emb") else "")
    return ValueError(f"{what} {mix!r} rejected: {e}{keep}")

  def set_prompt(self, mix) -> None:
    """Play a new prompt mix from the next chunk on (cancels a transition).

    Args:
      mix: "techno:1, flute:0.5" or {"techno": 1.0, "flute": 0.5}; weights
        >= 0, not all zero; mixed as sum(w_i e_i) / sum(w_i).

    Raises:
      ValueError: empty or unknown prompt, negative weights, weights summing
        to zero (nothing changes; the stream keeps the previous prompt).
    """
    pairs = self._check_mix(mix, "prompt")
    emb = self._embed(pairs, "prompt")
    with self._lock:
      self._mix, self._emb, self._transition = pairs, emb, None
      self._pending.append(time.perf_counter())

  def set_controls(self, cfg_weight: float | None = None,
                   steps: int | None = None) -> None:
    """CFG weight (>= 0; 0 = one network pass) and student steps
    (1..stepper.max_steps); None keeps a value. Both are checked before
    either applies."""
    if cfg_weight is not None:
      try:
        w = float(cfg_weight)
      except (TypeError, ValueError, OverflowError):
        raise ValueError(f"cfg_weight {cfg_weight!r} is not a number") \
            from None
      # The step takes float32: 1e39 is finite here but inf there (NaN
      # audio for every listener).
      if not 0 <= w <= float(np.finfo(np.float32).max):  # and not NaN
        raise ValueError(f"cfg_weight {cfg_weight!r}: must be finite (as "
                         f"float32) and >= 0 (0 turns guidance off)")
    if steps is not None:
      top = self.stepper.max_steps
      if (isinstance(steps, bool)
          or not isinstance(steps, (int, np.integer))
          or not 1 <= steps <= top):
        raise ValueError(f"steps {steps!r}: must be an int in 1..{top} (the "
                         f"stepper's max_steps)")
    with self._lock:
      if cfg_weight is not None:
        self._cfg = w
      if steps is not None:
        self._steps = int(steps)
      self._pending.append(time.perf_counter())

  def schedule_transition(self, a, b, seconds: float) -> None:
    """Interpolate the style embedding from mix `a` to mix `b` over
    `seconds`, per chunk, starting at the next chunk (which plays `a`);
    afterwards the prompt is `b`. Errors as in `set_prompt`."""
    try:
      seconds = float(seconds)
    except (TypeError, ValueError):
      raise ValueError(f"seconds {seconds!r} is not a number") from None
    if not math.isfinite(seconds) or seconds < 0:
      raise ValueError(f"seconds {seconds!r}: must be finite and >= 0")
    mix_a = self._check_mix(a, "transition start")
    mix_b = self._check_mix(b, "transition end")
    emb_a = self._embed(mix_a, "transition start")
    emb_b = self._embed(mix_b, "transition end")
    with self._lock:
      self._transition = _Transition(emb_a, emb_b, mix_a, mix_b, seconds)
      self._pending.append(time.perf_counter())

  def _next_embedding(self, advance: bool) -> np.ndarray:
    """(E,) embedding of the next chunk; `advance` moves a transition on
    (call with _lock held)."""
    tr = self._transition
    if tr is None:
      return self._emb
    alpha = tr.alpha(self.chunk_seconds)
    emb = ((1.0 - alpha) * tr.emb_a + alpha * tr.emb_b).astype(np.float32)
    if advance:
      tr.done += 1
      if alpha >= 1.0:
        self._mix, self._emb, self._transition = tr.mix_b, tr.emb_b, None
    return emb
