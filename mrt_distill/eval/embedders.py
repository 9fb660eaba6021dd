"""The audio embedders the evaluation looks through.

Shape letters: B clips, N samples, C channels, W windows, E embedding
width, P classes.

Two questions need a learnt ear: "which style is this?" (accuracy) and
"how far is this set of clips from real music?" (Fréchet distance). In the
reference world both are answered by the reference judge, trained on ground
truth only. With the real Magenta RT assets there is no such judge, and the
natural ear is MusicCoCa, the style model itself: its audio embedding for
distances, and zero-shot classification against the text embeddings of the
prompts. Both fit one small interface, `Embedder`, so the harness never
asks which one it has:

  JudgeEmbedder(judge)                 the reference style judge (default)
  StyleModelEmbedder(style_model, ...) any `StyleModel` (the reference one,
                                       MusicCoCa when its loader exists)

Each embedder fixes its own sample rate and window; `embed_clips` /
`clip_proba` resample and cut for it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from mrt_distill.eval import metrics as M


class Embedder(abc.ABC):
  """Audio windows -> embeddings (and optionally class probabilities)."""

  name: str = "embedder"

  @property
  @abc.abstractmethod
  def sample_rate(self) -> int:
    """The rate embed_windows expects."""

  @property
  @abc.abstractmethod
  def window_samples(self) -> int:
    """Samples per window at `sample_rate`."""

  @property
  def classes(self) -> tuple[str, ...] | None:
    """Class names of `window_proba`, or None (no classifier)."""
    return None

  @abc.abstractmethod
  def embed_windows(self, windows_WxN: np.ndarray) -> np.ndarray:
    """float32 (W, window_samples) mono windows -> float32 (W, E)."""

  def window_proba(self, windows_WxN: np.ndarray) -> np.ndarray | None:
    """(W, window_samples) -> float32 (W, P) over `classes`, or None."""
    return None

  # ---- shared: resampling and windowing -------------------------------------
  @property
  def window_seconds(self) -> float:
    return self.window_samples / self.sample_rate

  def prepare(self, audio, sample_rate: int) -> np.ndarray:
    """(B, N, C) or (B, N) audio -> float32 mono (B, N') at `sample_rate`."""
    x = np.asarray(audio, np.float32)
    x = M.mono(x) if x.ndim == 3 else x
    if x.ndim != 2:
      raise ValueError(f"audio of shape {np.shape(audio)}: expected (B, N, C) "
                       "or (B, N)")
    if int(sample_rate) == self.sample_rate:
      return x
    import librosa
    return librosa.resample(x, orig_sr=int(sample_rate),
                            target_sr=self.sample_rate, axis=-1
                            ).astype(np.float32)

  def hopped_windows(self, audio, sample_rate: int, hop_seconds: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Windows every hop_seconds of each clip: -> (W, window) and the owner
    clip of each (W,). Clips shorter than a window give none."""
    mono = self.prepare(audio, sample_rate)
    hop = max(1, int(round(hop_seconds * self.sample_rate)))
    wins, owner = [], []
    for b, clip in enumerate(mono):
      w = M.windows(clip, self.window_samples, hop)
      wins.append(w)
      owner += [b] * len(w)
    return (np.concatenate(wins) if wins else
            np.zeros((0, self.window_samples), np.float32),
            np.asarray(owner, np.int64))

  def embed_clips(self, audio, sample_rate: int, hop_seconds: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(B, N, C) -> embeddings (W, E) of hopped windows and owners (W,)."""
    wins, owner = self.hopped_windows(audio, sample_rate, hop_seconds)
    if not len(wins):
      return np.zeros((0, 0), np.float32), owner
    return self.embed_windows(wins), owner

  def clip_proba(self, audio, sample_rate: int) -> np.ndarray | None:
    """(B, N, C) -> (B, P): mean probability over non-overlapping windows
    (a clip shorter than one window is zero-padded to one, as the judge
    does); None without a classifier."""
    if self.classes is None:
      return None
    mono = self.prepare(audio, sample_rate)
    out = []
    for clip in mono:
      if clip.shape[0] < self.window_samples:
        clip = np.pad(clip, (0, self.window_samples - clip.shape[0]))
      out.append(self.window_proba(M.windows(clip, self.window_samples)
                                   ).mean(axis=0))
    return np.stack(out).astype(np.float32)


class JudgeEmbedder(Embedder):
  """The reference world's style judge: its classifier and its E = 32
  bottleneck (`mrt_distill.world.runtime.judges.StyleJudge`)."""

  name = "reference judge"

  def __init__(self, judge):
    self.judge = judge

  @property
  def sample_rate(self) -> int:
    return int(self.judge.config.mel.sample_rate)

  @property
  def window_samples(self) -> int:
    return int(self.judge.config.window_samples)

  @property
  def classes(self) -> tuple[str, ...]:
    return tuple(self.judge.styles)

  def embed_windows(self, windows_WxN):
    return self.judge.embed_windows(windows_WxN)

  def window_proba(self, windows_WxN):
    return self.judge.window_proba(windows_WxN)


def _style_rate_and_window(style_model, default_rate: int,
                           default_seconds: float) -> tuple[int, int]:
  cfg = getattr(style_model, "config", None)
  rate = int(getattr(getattr(cfg, "mel", None), "sample_rate", 0)
             or default_rate)
  seconds = float(getattr(cfg, "window_seconds", 0) or default_seconds)
  return rate, int(round(seconds * rate))


class StyleModelEmbedder(Embedder):
  """A style model's audio tower as the ear (MusicCoCa's role).

  Embeddings: `embed_audio_windows` when the model has one (the reference
  style model, on its own 4 s windows), else `embed_audio` on a batch of
  windows (any `StyleModel`). Classification is zero-shot: softmax over
  classes of cos(audio, text embedding of the class name) / temperature.

  Args:
    style_model: a `mrt_distill.style.StyleModel`.
    classes: class names to classify into (e.g. the held-out prompts), or
      None for embeddings only.
    sample_rate: rate for models without a mel config (default: the
      geometry's).
    window_seconds: window for models without a configured window.
    temperature: of the zero-shot softmax.
  """

  name = "style model"

  def __init__(self, style_model, classes: Sequence[str] | None = None, *,
               sample_rate: int | None = None, window_seconds: float = 2.0,
               temperature: float = 0.05):
    self.style_model = style_model
    rate = sample_rate or style_model.geometry.sample_rate
    self._rate, self._window = _style_rate_and_window(style_model, rate,
                                                      window_seconds)
    self._classes = tuple(classes) if classes else None
    self._temperature = float(temperature)
    self._text = (None if self._classes is None else
                  np.asarray(style_model.embed_text(list(self._classes)),
                             np.float32))

  @property
  def sample_rate(self) -> int:
    return self._rate

  @property
  def window_samples(self) -> int:
    return self._window

  @property
  def classes(self):
    return self._classes

  def embed_windows(self, windows_WxN):
    w = np.asarray(windows_WxN, np.float32)
    direct = getattr(self.style_model, "embed_audio_windows", None)
    if direct is not None:
      return np.asarray(direct(w), np.float32)
    return np.asarray(self.style_model.embed_audio(w[:, :, None], self._rate),
                      np.float32)

  def window_proba(self, windows_WxN):
    if self._text is None:
      return None
    e = self.embed_windows(windows_WxN)
    cos = np.stack([M.cosine(e, t) for t in self._text], axis=-1)
    z = cos / self._temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)
