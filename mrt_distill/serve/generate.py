"""`mrt-distill generate`: a prompt mix (or a transition between two mixes)
-> a wav and its spectrogram PNG, from a distilled student or, with
--teacher, from the teacher it was distilled from.

  mrt-distill generate --checkpoint runs/reference_cpu \\
      --prompt "techno:1, flute:0.5" --seconds 20 --steps 2 --out a.wav
  mrt-distill generate --transition "techno -> jazz:1, piano:0.3 over 8s" ...

Why an offline command next to the live server: listening tests and
student-vs-teacher comparisons need files that a seed reproduces exactly,
and the speed it prints should be the speed of the serving path. So the
student runs through the same jitted `ChunkStepper` the server uses (one
call per chunk, state donated, controls as traced arrays), driven here by a
plain loop rather than a session object, which keeps this command free of
any realtime scheduling.

Length: whole chunks are generated, ceil(seconds / chunk_seconds) of them,
and the file is trimmed to exactly round(seconds * sample_rate) samples (as
`teacher-stream` does), so --seconds means what it says.

Transitions: "A -> B over 30s" or "A -> B over 4 chunks", A and B prompt
mixes. Chunk i gets the style embedding (1 - a_i) e_A + a_i e_B with
a_i = min(i / R, 1), R the ramp length in chunks (seconds rounded to whole
chunks, at least 1): chunk 0 is pure A, chunk R (starting at R x
chunk_seconds) is the first pure-B chunk, and B holds from then on. Since
a mixed embedding is a weighted mean, this equals one prompt mix whose A
weights fade out while B's fade in.

Randomness: student chunk i uses fold_in(PRNGKey(seed), i); the teacher
keys chunk i with PRNGKey(seed + i) (`TeacherSystem`'s rule). Same seed,
same audio.

Unknown prompt words: a style model with a vocabulary (the reference one)
drops words it does not know with a Python warning, so a typo silently
changes the music; here they are an error naming the words and the
vocabulary. A style model without one (`MinimalStyleModel`, random-tiny)
embeds any word, so it gets a warning that typos cannot be caught.

Shapes: B streams (1 here), N chunks, S style width, T samples, C channels.

The module's top level imports only the standard library, so `mrt-distill
--help` stays fast; jax and the models load inside `run`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import re
import time
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only; numpy loads inside the functions
  import numpy as np

log = logging.getLogger(__name__)

# Student sampling steps the command accepts. Steps 2..k re-noise along a
# fixed ladder from 2 sigma_data down to sigma_data / 10; past a handful the
# ladder only gets denser and each step costs one more network pass (two
# with CFG), so 8 is well beyond the useful range.
MAX_STEPS = 8
# The longest clip: the whole clip is held in memory (float32, plus one
# copy to write it) before the file is written, so the limit is a memory
# one -- an hour of 48 kHz stereo is 1.4 GB per copy; --seconds 1e9 would
# ask for hundreds of GiB. Endless music is `mrt-distill serve`'s job.
MAX_SECONDS = 3600.0
SECONDS_WHY = ("the clip is held in memory before it is written (an hour "
               "of 48 kHz stereo is 1.4 GB); for endless music use "
               "`mrt-distill serve`")

TRANSITION_FORM = ("'A -> B over 30s' (or 'over 4 chunks'), where A and B "
                   "are prompt mixes such as 'techno:1, flute:0.5'")
_DURATION = re.compile(
    r"^(?P<n>\d+(?:\.\d*)?|\.\d+)\s*"
    r"(?P<unit>s|sec|secs|seconds?|chunks?)$", re.IGNORECASE)
# The last "over" that starts a word; B is everything before it.
_OVER = re.compile(r"^(?P<b>.*)(?<!\S)over\s+(?P<d>\S.*)$",
                   re.IGNORECASE | re.DOTALL)


# ---- transitions ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Transition:
  """A style ramp from mix `start` to mix `end` (prompt-mix texts)."""
  start: str
  end: str
  amount: float  # > 0
  unit: str  # "seconds" | "chunks"

  def ramp_chunks(self, chunk_seconds: float) -> int:
    """R: the chunk index at which the mix is pure `end` (>= 1)."""
    if self.unit == "chunks":
      return int(self.amount)
    return max(1, int(round(self.amount / chunk_seconds)))

  def describe(self) -> str:
    n = f"{self.amount:g}"
    return (f"{self.start} -> {self.end} over "
            + (f"{n}s" if self.unit == "seconds" else f"{n} chunks"))


def parse_transition(text: str) -> Transition:
  """"A -> B over 30s" | "A -> B over 4 chunks" -> Transition.

  A and B are prompt mixes ("techno:1, flute:0.5") and are checked with
  `parse_prompt_mix`; the duration is the text after the last " over ".

  Raises:
    ValueError: quoting the text, naming the part that is wrong and showing
      the expected form.
  """
  from mrt_distill.style.mixing import parse_prompt_mix

  where = f"--transition {text!r}"
  if not isinstance(text, str) or text.count("->") != 1:
    found = ("no '->'" if isinstance(text, str) and "->" not in text
             else "more than one '->'" if isinstance(text, str)
             else "not text")
    raise ValueError(f"{where}: {found}; expected {TRANSITION_FORM}")
  a, rest = (s.strip() for s in text.split("->"))
  m = _OVER.match(rest)
  if not m:
    raise ValueError(f"{where}: no 'over DURATION' after the target mix; "
                     f"expected {TRANSITION_FORM}")
  b, dur = m["b"].strip(), m["d"].strip()
  d = _DURATION.match(dur)
  if not d:
    raise ValueError(f"{where}: duration {dur!r} is not a number of seconds "
                     f"('30s', '30 seconds') or chunks ('4 chunks')")
  amount = float(d["n"])
  unit = "chunks" if d["unit"].lower().startswith("chunk") else "seconds"
  if amount <= 0:
    raise ValueError(f"{where}: duration {dur!r} must be > 0 (for an "
                     f"immediate switch use --prompt with the target mix)")
  if unit == "chunks" and amount != int(amount):
    raise ValueError(f"{where}: {dur!r} is not a whole number of chunks")
  for name, mix in (("start mix A", a), ("target mix B", b)):
    if not mix:
      raise ValueError(f"{where}: the {name} is empty; expected "
                       f"{TRANSITION_FORM}")
    try:
      parse_prompt_mix(mix)
    except ValueError as e:
      raise ValueError(f"{where}: {name}: {e}") from None
  return Transition(a, b, amount, unit)


def ramp_weights(n_chunks: int, ramp_chunks: int):
  """a_i = min(i / R, 1) for chunk i in 0..N-1: float64 (N,), the weight of
  the target mix B in chunk i."""
  import numpy as np
  if ramp_chunks < 1:
    raise ValueError(f"ramp of {ramp_chunks} chunks: must be >= 1")
  return np.minimum(np.arange(n_chunks) / ramp_chunks, 1.0)


# ---- style embeddings -------------------------------------------------------
def check_prompt_words(style_model, mix_text: str, where: str) -> bool:
  """Unknown words in a prompt mix are an error for a style model with a
  vocabulary (it would drop them with a warning). -> False when the model
  has none (it embeds any word), so nothing could be checked.

  Raises:
    ValueError: `where` and the prompt quoted, the unknown words, the fix.
  """
  from mrt_distill.style.mixing import parse_prompt_mix

  mix = parse_prompt_mix(mix_text)
  vocab = getattr(style_model, "vocab", None)
  if not vocab:
    return False
  from mrt_distill.style.text_parsing import parse_text
  for text, weight in mix:
    if weight <= 0:
      continue  # not embedded (mixing skips zero weights)
    known, unknown = parse_text(text, vocab)
    if unknown or not known:
      what = (f"unknown word(s) {', '.join(repr(u) for u in unknown)}"
              if unknown else "no style word")
      raise ValueError(
          f"{where}: prompt {text!r} has {what}; the style model would "
          f"{'ignore them' if known else 'have nothing to embed'}. Fix the "
          f"spelling or use words from its vocabulary: {', '.join(vocab)}")
  return True


def embed_mix(style_model, mix_text: str, where: str = "--prompt"):
  """Prompt-mix text -> float32 (S,) embedding, unknown words checked."""
  from mrt_distill.style.mixing import embed_prompt_mix
  try:
    check_prompt_words(style_model, mix_text, where)
    with warnings.catch_warnings():
      # Already checked above; the model's own word warning would repeat it.
      warnings.simplefilter("ignore", UserWarning)
      return embed_prompt_mix(style_model, mix_text)
  except ValueError as e:
    msg = str(e)
    raise ValueError(msg if msg.startswith(where) else f"{where}: {msg}"
                     ) from None


def style_schedule(style_model, n_chunks: int, chunk_seconds: float, *,
                   prompt: str | None = None,
                   transition: Transition | None = None):
  """Per-chunk style embeddings float32 (N, S): the prompt mix in every
  chunk, or a transition ramp (see the module docstring)."""
  import numpy as np
  if (prompt is None) == (transition is None):
    raise ValueError("give exactly one of prompt and transition")
  if n_chunks < 1:
    raise ValueError(f"n_chunks={n_chunks}: must be >= 1")
  if not getattr(style_model, "vocab", None):
    log.warning("the %s style model has no closed word list (it embeds "
                "any text), so misspelt prompt words cannot be caught",
                type(style_model).__name__)
  if transition is None:
    emb_S = embed_mix(style_model, prompt, "--prompt")
    return np.repeat(emb_S[None], n_chunks, axis=0).astype(np.float32)
  where = f"--transition {transition.describe()!r}"
  a_S = embed_mix(style_model, transition.start, where + " (start mix A)")
  b_S = embed_mix(style_model, transition.end, where + " (target mix B)")
  w_N = ramp_weights(n_chunks, transition.ramp_chunks(chunk_seconds))[:, None]
  return ((1.0 - w_N) * a_S[None] + w_N * b_S[None]).astype(np.float32)


class _Vocab:
  """Stands in for a style model in `check_prompt_words`: its word list."""

  def __init__(self, vocab):
    self.vocab = tuple(vocab)


def checkpoint_world(checkpoint) -> str | None:
  """The world a student checkpoint is of, read from its small metadata
  only (no model loads): 'reference', 'random-tiny', ...; None when it
  cannot be told (the loader then reports what is wrong)."""
  import json
  import pathlib
  if checkpoint in (None, "reference"):
    return "reference"
  if checkpoint == "random-tiny":
    return "random-tiny"
  p = pathlib.Path(checkpoint)
  try:
    if p.is_dir():
      return json.loads((p / "config.json").read_text()).get("world")
    if p.is_file():
      import numpy as np
      with np.load(p, allow_pickle=False) as z:
        meta = json.loads(z["__meta__"].tobytes().decode())
      return meta["config"].get("world")
  except Exception:
    return None
  return None


def early_vocab(checkpoint):
  """The style vocabulary of a checkpoint's world when it can be told in
  milliseconds without loading (the reference world's,
  `world.runtime.load.early_style_vocab`), so a misspelt prompt is refused
  before the student loads; None otherwise (then the words are checked
  after loading, as before)."""
  from mrt_distill.world.runtime.load import early_style_vocab
  vocab = early_style_vocab(checkpoint_world(checkpoint))
  return None if vocab is None else _Vocab(vocab)


# ---- the generation loop ----------------------------------------------------
@dataclasses.dataclass
class Generation:
  """One generated clip and how long each chunk took."""
  audio: np.ndarray  # float32 (T, C), T = round(seconds * sample_rate)
  sample_rate: int
  chunk_seconds: float
  chunk_ms: np.ndarray  # (N,) wall ms per chunk; [0] includes compiling
  styles: np.ndarray  # float32 (N, S) the embedding of every chunk
  model: str  # what generated it, for titles and summaries
  settings: str  # e.g. "steps 2, cfg 1.5, seed 0"
  transition_seconds: float | None = None  # end of the ramp, if any

  @property
  def seconds(self) -> float:
    return self.audio.shape[0] / self.sample_rate

  @property
  def ms_per_chunk(self) -> float:
    """Steady-state wall ms per chunk (the first chunk, which compiles, is
    left out when there are others)."""
    ms = self.chunk_ms[1:] if len(self.chunk_ms) > 1 else self.chunk_ms
    return float(ms.mean())

  @property
  def realtime_factor(self) -> float:
    """Audio seconds per wall second (> 1: faster than real time)."""
    return 1000.0 * self.chunk_seconds / max(self.ms_per_chunk, 1e-9)


def _drive(step, n_chunks: int, label: str):
  """Calls step(i) -> (chunk_samples, C) for i < N with a progress bar on a
  terminal, else a log line every 10 s. -> (chunks list, ms (N,))."""
  import numpy as np
  from tqdm import tqdm

  out, ms = [], []
  t0 = last = time.perf_counter()
  with tqdm(total=n_chunks, desc=label, unit="chunk", disable=None,
            leave=False) as bar:
    for i in range(n_chunks):
      t = time.perf_counter()
      out.append(np.asarray(step(i), np.float32))  # waits for the device
      now = time.perf_counter()
      ms.append(1000.0 * (now - t))
      bar.update(1)
      if bar.disable and now - last > 10.0 and i + 1 < n_chunks:
        last = now
        log.info("%s: chunk %d/%d, %.0f s elapsed, ETA %.0f s", label, i + 1,
                 n_chunks, now - t0, (now - t0) / (i + 1) * (n_chunks - i - 1))
  return out, np.asarray(ms)


def student_chunks(bundle, styles_NxS, *, steps: int, cfg_weight: float,
                   seed: int, stepper=None):
  """The student streams N chunks, chunk i styled by styles_NxS[i].

  stepper: a ChunkStepper of this bundle to reuse (its compiled step);
  default bundle.stepper(MAX_STEPS).
  -> (list of N float32 (chunk_samples, C) arrays, wall ms (N,)).
  """
  import jax
  from mrt_distill.serve.chunk_step import controls

  stepper = stepper or bundle.stepper(max_steps=MAX_STEPS)
  if not 1 <= steps <= stepper.max_steps:
    raise ValueError(f"--steps {steps}: this stepper takes 1.."
                     f"{stepper.max_steps}")
  params = bundle.params
  state = stepper.init_state(params, 1)
  key = jax.random.PRNGKey(seed)

  def step(i):
    nonlocal state
    audio_BxTxC, state = stepper.chunk_step(
        params, state, controls(styles_NxS[i], cfg_weight, steps),
        jax.random.fold_in(key, i))
    return audio_BxTxC[0]

  return _drive(step, len(styles_NxS), "student")


def teacher_chunks(bundle, styles_NxS, *, cfg_weight: float | None,
                   seed: int, system=None):
  """The bundle's teacher streams N chunks (guidance weight `cfg_weight`,
  default the distillation config's). -> (chunks, wall ms (N,))."""
  system = system or bundle.teacher_system()
  states = system.init_states(1)
  over = {} if cfg_weight is None else {"guidance_weight": float(cfg_weight)}

  def step(i):
    nonlocal states
    audio_BxTxC, states = system.generate_chunks(
        states, styles_NxS[i:i + 1], seed=seed, **over)
    return audio_BxTxC[0]

  return _drive(step, len(styles_NxS), "teacher")


def num_chunks(seconds: float, chunk_seconds: float) -> int:
  # A hair of slack so 2.0 s of 0.4 s chunks is 5 chunks, not 6.
  return max(1, math.ceil(seconds / chunk_seconds - 1e-9))


def check_seconds(seconds) -> float:
  s = float(seconds)
  if not math.isfinite(s) or s <= 0:
    raise ValueError(f"--seconds {seconds}: must be a positive number of "
                     f"seconds of audio, e.g. --seconds 10")
  if s > MAX_SECONDS:
    raise ValueError(f"--seconds {s:g}: at most {MAX_SECONDS:g} (one "
                     f"hour): {SECONDS_WHY}")
  return s


def check_steps(steps) -> int:
  if (not isinstance(steps, numbers.Integral) or isinstance(steps, bool)
      or not 1 <= steps <= MAX_STEPS):
    raise ValueError(f"--steps {steps}: student sampling steps must be 1.."
                     f"{MAX_STEPS} (1 = one network pass per chunk, the "
                     f"distilled setting; 2-4 trade speed for quality)")
  return int(steps)


def check_seed(seed) -> int:
  if (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)
      or seed < 0):
    raise ValueError(f"--seed {seed}: must be an integer >= 0")
  return int(seed)


def check_cfg(cfg_weight) -> float | None:
  if cfg_weight is None:
    return None
  w = float(cfg_weight)
  if not math.isfinite(w) or w < 0:
    raise ValueError(f"--cfg {cfg_weight}: the guidance weight must be >= 0 "
                     f"(0 = no guidance; 1-3 is typical)")
  return w


def generate(bundle, *, seconds: float, prompt: str | None = None,
             transition: Transition | str | None = None,
             steps: int | None = None, cfg_weight: float | None = None,
             seed: int = 0, teacher: bool = False,
             stepper=None) -> Generation:
  """Audio for a prompt mix or a transition, from `bundle`'s student (or
  its teacher).

  Args:
    bundle: a StudentBundle (`load_student`).
    seconds: length of the clip (> 0); whole chunks are generated and the
      audio is trimmed to round(seconds * sample_rate) samples.
    prompt / transition: exactly one; a transition as text or Transition.
    steps: student sampling steps, 1..MAX_STEPS (default: the config's
      `student.sample_steps`); ignored by the teacher.
    cfg_weight: guidance weight (default: the config's; for the teacher its
      sampling guidance weight).
    seed: >= 0; the same seed gives the same audio.
    stepper: a ChunkStepper of this bundle with max_steps >= steps, to reuse
      its compiled step across calls.
  """
  import numpy as np

  seconds = check_seconds(seconds)
  if isinstance(transition, str):
    transition = parse_transition(transition)
  if prompt is None and transition is None:
    raise ValueError("nothing to generate: give --prompt or --transition")
  if prompt is not None and transition is not None:
    raise ValueError("give --prompt or --transition, not both (a transition "
                     f"names its own start mix: {TRANSITION_FORM})")
  seed = check_seed(seed)
  cfg_weight = check_cfg(cfg_weight)
  g = bundle.geometry
  student_cfg = bundle.config.get("student", {})
  if steps is None:
    steps = int(student_cfg.get("sample_steps", 1))
  steps = check_steps(steps)
  n = num_chunks(seconds, g.chunk_seconds)
  styles_NxS = style_schedule(bundle.style_model, n, g.chunk_seconds,
                              prompt=prompt, transition=transition)
  t_end = None
  if transition is not None:
    r = transition.ramp_chunks(g.chunk_seconds)
    t_end = r * g.chunk_seconds
    if transition.unit == "seconds" and abs(t_end - transition.amount) > 1e-6:
      log.info("transition of %gs rounded to %d chunks (%.2f s)",
               transition.amount, r, t_end)
    if r >= n:
      log.warning("the transition ends at %.2f s, after the clip (%.2f s): "
                  "the last chunk is %.0f%% of the way to the target mix",
                  t_end, seconds, 100 * (n - 1) / r)
  if teacher:
    system = bundle.teacher_system()
    w = (system.sampling.guidance_weight if cfg_weight is None
         else cfg_weight)
    chunks, ms = teacher_chunks(bundle, styles_NxS, cfg_weight=w, seed=seed,
                                system=system)
    model = f"teacher of {bundle.source}"
    settings = (f"{g.chunk_frames * g.target_levels} token steps/chunk, "
                f"cfg {w:g}, seed {seed}")
  else:
    w = (float(student_cfg.get("cfg_weight", 0.0)) if cfg_weight is None
         else cfg_weight)
    chunks, ms = student_chunks(bundle, styles_NxS, steps=steps,
                                cfg_weight=w, seed=seed, stepper=stepper)
    model = f"student {bundle.source}"
    settings = f"steps {steps}, cfg {w:g}, seed {seed}"
  audio_TxC = np.concatenate(chunks)[:int(round(seconds * g.sample_rate))]
  return Generation(audio_TxC, g.sample_rate, g.chunk_seconds, ms,
                    styles_NxS, model, settings, t_end)


def save(gen: Generation, out, label: str):
  """Writes gen.audio to `out` and its spectrogram to `out` with .png.
  label: the prompt or transition text, for the title.
  -> (wav path, png path)."""
  from mrt_distill.distill.plots import save_spectrogram
  from mrt_distill.audio_files import write_audio

  wav = write_audio(out, gen.audio, gen.sample_rate)
  spans = ([] if gen.transition_seconds is None
           else [(0.0, gen.transition_seconds, "transition")])
  png = save_spectrogram(gen.audio, gen.sample_rate, wav.with_suffix(".png"),
                         title=f"{gen.model} | {label} | {gen.settings}",
                         spans=spans)
  return wav, png


def summary(gen: Generation, wav, png) -> str:
  n = len(gen.chunk_ms)
  first = (f" (first chunk {gen.chunk_ms[0]:.0f} ms incl. compiling)"
           if n > 1 else " (incl. compiling)")
  return (f"{gen.model}: {gen.seconds:.2f} s of audio, {n} chunks of "
          f"{gen.chunk_seconds:.2f} s, {gen.ms_per_chunk:.1f} ms/chunk"
          f"{first}, real-time factor {gen.realtime_factor:.1f}x -> {wav}, "
          f"{png}")


# ---- command line -----------------------------------------------------------
def add_arguments(p) -> None:
  import argparse
  p.formatter_class = argparse.RawDescriptionHelpFormatter
  p.description = (
      "Generate a clip with a distilled student (or --teacher): a wav, its\n"
      "mel spectrogram as a PNG beside it, and a one-line summary with\n"
      "ms/chunk and the real-time factor.")
  p.epilog = (
      "examples:\n"
      "  mrt-distill generate --prompt 'techno:1, flute:0.5' --seconds 20 "
      "--out a.wav\n"
      "  mrt-distill generate --checkpoint runs/reference_cpu --steps 2 "
      "--cfg 1.5 \\\n"
      "      --transition 'techno -> jazz:1, piano:0.5 over 8s' --out b.wav\n"
      "  mrt-distill generate --teacher --prompt techno --out teacher.wav")
  p.add_argument("--checkpoint", default="reference",
                 help="the student: 'reference' (the one shipped in the "
                      "package, default), 'random-tiny' (untrained, tests), "
                      "a `mrt-distill distill` workdir (WORKDIR@STEP: its "
                      "checkpoint at that step) or a student .npz")
  p.add_argument("--prompt", default=None,
                 help='weighted prompt mix, e.g. "techno:1, flute:0.5" '
                      "(default techno:1 unless --transition is given)")
  p.add_argument("--transition", default=None,
                 help='a style ramp from the start of the clip, e.g. '
                      '"techno -> jazz:1, piano:0.5 over 30s" or '
                      '"... over 4 chunks"; then holds the target mix')
  p.add_argument("--seconds", type=float, default=10.0,
                 help="length of the clip (trimmed exactly; default 10)")
  p.add_argument("--steps", type=int, default=None,
                 help=f"student sampling steps 1..{MAX_STEPS} (default: the "
                      "student config's, normally 1)")
  p.add_argument("--cfg", type=float, default=None,
                 help="classifier-free guidance weight (default: the "
                      "student config's; with --teacher the teacher's)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="generated.wav",
                 help="audio file to write; the spectrogram goes beside it "
                      "as .png")
  p.add_argument("--teacher", action="store_true",
                 help="generate with the teacher the student was distilled "
                      "from instead (same prompt, outputs and summary; "
                      "--steps does not apply)")


def run(args) -> int:
  from mrt_distill.audio_files import check_audio_out

  # Everything that needs no model is checked before loading one.
  seconds = check_seconds(args.seconds)
  if args.steps is not None:
    check_steps(args.steps)
    if args.teacher:
      log.warning("--steps is ignored with --teacher (the teacher samples "
                  "its tokens one at a time)")
  check_cfg(args.cfg)
  check_seed(args.seed)
  transition = (None if args.transition is None
                else parse_transition(args.transition))
  prompt = args.prompt
  if prompt is not None and transition is not None:
    raise ValueError("give --prompt or --transition, not both (a transition "
                     f"names its own start mix: {TRANSITION_FORM})")
  if transition is None and prompt is None:
    prompt = "techno:1"
  if prompt is not None:
    from mrt_distill.style.mixing import parse_prompt_mix
    try:
      parse_prompt_mix(prompt)
    except ValueError as e:
      raise ValueError(f"--prompt {prompt!r}: {e}") from None
  out = check_audio_out(args.out)
  vocab = early_vocab(args.checkpoint)
  if vocab is not None:  # unknown words before anything loads
    if prompt is not None:
      check_prompt_words(vocab, prompt, "--prompt")
    else:
      where = f"--transition {transition.describe()!r}"
      check_prompt_words(vocab, transition.start, where + " (start mix A)")
      check_prompt_words(vocab, transition.end, where + " (target mix B)")

  from mrt_distill.serve.bundle import load_student
  bundle = load_student(args.checkpoint)
  gen = generate(bundle, seconds=seconds, prompt=prompt,
                 transition=transition, steps=args.steps,
                 cfg_weight=args.cfg, seed=args.seed, teacher=args.teacher)
  label = prompt if transition is None else transition.describe()
  wav, png = save(gen, out, label)
  print(summary(gen, wav, png))
  return 0
