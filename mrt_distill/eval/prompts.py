"""The evaluation's held-out prompts: loading them and the transition
pairs, the class and tempo range a prompt asks for, and the check against
the student's training prompts."""

from __future__ import annotations

from collections.abc import Sequence

from mrt_distill.eval.config import EvalConfig


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
  from mrt_distill.distill import prompt_source
  from mrt_distill.distill import prompts as P
  if cfg.prompts:
    records = prompt_source.load_prompt_source(cfg.prompts)
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
      from mrt_distill.distill import prompt_source
      from mrt_distill.distill import prompts as P
      records = prompt_source.load_prompt_source(c.prompts.file)
    else:
      from mrt_distill.distill import loop
      records, _ = loop.builtin_prompts(
          int(c.seed), int(c.prompts.transition_pairs),
          int(c.prompts.transition_chunks), int(c.prompts.mix_pairs))
  except Exception:  # pylint: disable=broad-except
    return None  # e.g. a prompt file that is not on this machine
  seen = {r.start for r in records} | {r.end for r in records if r.end}
  return [p for p in prompts if p in seen]
