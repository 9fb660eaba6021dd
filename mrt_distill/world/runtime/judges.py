"""Judges for evaluating generated reference-world audio.

Shape letters: B clips, N audio samples, W 4 s windows, P styles, E judge
embedding width.

The judges are trained on ground-truth rendered audio only (never on codec,
teacher or student output), so they measure how far generated audio is from
the real thing:

* `StyleJudge`: a style classifier over 16 kHz mono audio (log-mel ->
  `mel_encoder.MelEncoder` -> an E = 32 bottleneck -> softmax over
  `music.STYLES`). It looks at 4 s windows; longer audio is cut into
  non-overlapping 4 s windows (a tail shorter than a window is dropped, a
  clip shorter than one window is zero-padded) and the window probabilities
  are averaged. Its penultimate layer, the E-dim bottleneck, is the
  embedding for Fréchet distances (`StyleJudge.embed`, one row per window).
  E is small on purpose: a Fréchet distance needs more than E samples per
  set, and generated audio is expensive on a CPU.
* `frechet_distance`: the Fréchet distance between Gaussians fitted to two
  embedding sets (FID / FAD's formula).
  `judge_windows` embeds clips window by window, `fd_or_none` skips a
  distance with too few windows.
* `estimate_tempo`: librosa's onset-autocorrelation tempo estimate.

Training lives in `mrt_distill.world.training.train_judges`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill import checksummed
from mrt_distill.style import audio_windows
from mrt_distill.style import buckets
from mrt_distill.style import mel_encoder
from mrt_distill.style import style_net
from mrt_distill.style import weights_io
from mrt_distill.style.mel_encoder import EncoderConfig
from mrt_distill.style.mel_encoder import MelConfig

log = logging.getLogger(__name__)

FORMAT = "mrt_distill.style_judge/1"
EMBED_HOP_SECONDS = 1.0  # hop of the 4 s judge windows used for Fréchet
REBUILD_HINT = checksummed.REFERENCE_REBUILD


def _default_styles() -> tuple[str, ...]:
  from mrt_distill.world import music  # pretty_midi is slow to import.
  return tuple(music.STYLES)


@dataclasses.dataclass(frozen=True)
class JudgeConfig(mel_encoder.WindowedMelConfig):
  """Hyperparameters of the style judge (stored with its weights).

  Attributes:
    window_seconds: the window the classifier sees.
    mel: log-mel front end (the style model's, 16 kHz, 64 bands).
    encoder: the `MelEncoder` stack.
    embed_dim: E, the bottleneck used as the Fréchet embedding.
    dropout: dropout on the bottleneck during training.
    styles: class names in logit order.
  """

  window_seconds: float = 4.0
  mel: MelConfig = MelConfig()
  encoder: EncoderConfig = EncoderConfig(hidden=192, patch_dim=48,
                                         dilations=(1, 2, 4))
  embed_dim: int = 32
  dropout: float = 0.1
  styles: tuple[str, ...] = dataclasses.field(
      default_factory=_default_styles)

  TUPLE_FIELDS = ("styles",)


class JudgeNet(nn.Module):
  """Audio (B, N) -> (logits (B, P), embedding (B, E))."""

  cfg: JudgeConfig

  def setup(self):
    c = self.cfg
    self.encoder = mel_encoder.MelEncoder(c.encoder)
    self.bottleneck = nn.Dense(c.embed_dim)
    self.drop = nn.Dropout(c.dropout)
    self.head = nn.Dense(len(c.styles))

  def embed(self, audio_BxN: jax.Array) -> jax.Array:
    """The penultimate layer: (B, E), before its nonlinearity."""
    feats = self.encoder(mel_encoder.log_mel(audio_BxN, self.cfg.mel))
    return self.bottleneck(feats)

  def __call__(self, audio_BxN: jax.Array, deterministic: bool = True):
    emb_BxE = self.embed(audio_BxN)
    h = self.drop(nn.gelu(emb_BxE), deterministic=deterministic)
    return self.head(h), emb_BxE


def _init(cfg: JudgeConfig, key: jax.Array):
  # Parameter shapes do not depend on the clip length.
  audio = jnp.zeros((1, 16 * cfg.mel.hop), jnp.float32)
  return JudgeNet(cfg).init(key, audio)["params"]


def init_params(cfg: JudgeConfig, seed: int) -> dict:
  """Fresh JudgeNet parameters, deterministic in `seed`."""
  return jax.device_get(
      jax.jit(functools.partial(_init, cfg))(jax.random.PRNGKey(seed)))


class StyleJudge:
  """The style classifier and Fréchet embedding (see the module docstring).

  Args:
    params: JudgeNet parameters.
    config: its config (default `JudgeConfig()`).
    resample: resample audio at other rates with librosa (else refuse).
  """

  def __init__(self, params, config: JudgeConfig | None = None, *,
               resample: bool = True):
    self._cfg = config or JudgeConfig()
    self._params = params
    self._resample = bool(resample)
    net = JudgeNet(self._cfg)
    self._proba_fn = jax.jit(
        lambda p, a: jax.nn.softmax(net.apply({"params": p}, a)[0], axis=-1))
    self._embed_fn = jax.jit(
        lambda p, a: net.apply({"params": p}, a, method=JudgeNet.embed))

  @classmethod
  def init(cls, seed: int = 0, config: JudgeConfig | None = None,
           **kw) -> "StyleJudge":
    """An untrained judge (for tests and as the trainer's start)."""
    cfg = config or JudgeConfig()
    return cls(init_params(cfg, seed), cfg, **kw)

  @property
  def config(self) -> JudgeConfig:
    return self._cfg

  @property
  def params(self):
    return self._params

  @property
  def styles(self) -> tuple[str, ...]:
    return self._cfg.styles

  @property
  def num_params(self) -> int:
    return style_net.param_count(self._params)

  # ---- windows --------------------------------------------------------------
  def windows(self, audio, sample_rate: int, *, resample: bool | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Audio -> 4 s mono windows (W, window) at 16 kHz and owner clip (W,).

    Accepts (N,), (N, C) or (B, N, C) float audio; stereo is averaged;
    another sample rate is resampled (or refused when resample=False).
    """
    rs = self._resample if resample is None else resample
    mono = audio_windows.prepare_mono_audio(
        audio, sample_rate, self._cfg.mel.sample_rate, resample=rs,
        who="StyleJudge")
    wins, owner, _ = audio_windows.split_windows(
        mono, self._cfg.window_samples, keep_tail=False)
    return wins, owner

  def window_proba(self, windows_WxN: np.ndarray) -> np.ndarray:
    """float32 (W, P) style probabilities of exactly-one-window clips."""
    w = self._check_windows(windows_WxN)
    return buckets.run_in_buckets(
        functools.partial(self._proba_fn, self._params), w)

  def embed_windows(self, windows_WxN: np.ndarray) -> np.ndarray:
    """float32 (W, E) embeddings of exactly-one-window clips."""
    w = self._check_windows(windows_WxN)
    return buckets.run_in_buckets(
        functools.partial(self._embed_fn, self._params), w)

  def _check_windows(self, windows_WxN) -> np.ndarray:
    w = np.asarray(windows_WxN, np.float32)
    if w.ndim != 2 or w.shape[1] != self._cfg.window_samples:
      raise ValueError(
          f"windows of shape {w.shape}: expected (W, "
          f"{self._cfg.window_samples}) mono {self._cfg.mel.sample_rate} Hz")
    return w

  # ---- public API -----------------------------------------------------------
  def predict_proba(self, audio, sample_rate: int, *,
                    resample: bool | None = None) -> np.ndarray:
    """float32 (B, P) style probabilities (rows sum to 1): the mean of each
    clip's window probabilities. Unbatched input gives B = 1."""
    wins, owner = self.windows(audio, sample_rate, resample=resample)
    p_WxP = self.window_proba(wins)
    counts = np.bincount(owner)
    out = np.zeros((counts.shape[0], p_WxP.shape[1]), np.float64)
    np.add.at(out, owner, p_WxP)
    return (out / counts[:, None]).astype(np.float32)

  def classify(self, audio, sample_rate: int, **kw) -> list[str]:
    """The most likely style of each clip."""
    p = self.predict_proba(audio, sample_rate, **kw)
    return [self.styles[i] for i in np.argmax(p, axis=-1)]

  def embed(self, audio, sample_rate: int | None = None, *,
            resample: bool | None = None) -> np.ndarray:
    """float32 (W, E): one penultimate-layer embedding per 4 s window of
    every clip, clip-major (see `windows` for the windowing)."""
    rate = self._cfg.mel.sample_rate if sample_rate is None else sample_rate
    wins, _ = self.windows(audio, rate, resample=resample)
    return self.embed_windows(wins)

  # ---- persistence ----------------------------------------------------------
  def save(self, path, extra_meta: dict | None = None) -> pathlib.Path:
    """Write `path` (.npz) and `path`.json (config, sha256)."""
    meta = {"format": FORMAT, "config": self._cfg.to_json(),
            "num_params": self.num_params}
    meta.update(extra_meta or {})
    return weights_io.save_asset(
        path, weights_io.flatten_params(self._params), meta)

  @classmethod
  def load(cls, path, **kw) -> "StyleJudge":
    """Load a judge written by `save`, verifying its checksum.

    Raises:
      weights_io.AssetError (a ValueError): missing, corrupted or mismatched
        files; the message names the rebuild command.
    """
    arrays, meta = weights_io.load_asset(path, FORMAT, REBUILD_HINT)
    try:
      cfg = JudgeConfig.from_json(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
      raise weights_io.AssetError(
          f"{path}: bad sidecar config ({e}); rebuild with "
          f"`{REBUILD_HINT}`") from None
    params = weights_io.unflatten_params(arrays)
    expected = jax.eval_shape(functools.partial(_init, cfg),
                              jax.random.PRNGKey(0))
    params = weights_io.check_param_shapes(params, expected, str(path),
                                           REBUILD_HINT)
    return cls(params, cfg, **kw)


# ---- Fréchet distance --------------------------------------------------------
def _psd_sqrt(c_ExE: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix (negative eigenvalues
  from rounding are clipped to 0)."""
  w, v = np.linalg.eigh(c_ExE)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to two embedding sets.

  FD = |mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2)),
  with unbiased (N - 1) covariances. tr((C_a C_b)^(1/2)) is computed as
  tr((C_a^(1/2) C_b C_a^(1/2))^(1/2)), the same value (the two matrices are
  similar) from symmetric eigendecompositions only, which stays real and
  stable where `scipy.linalg.sqrtm` of the non-symmetric product can pick
  up imaginary parts. No shrinkage is applied.

  Args:
    emb_a: (N, E) embeddings.
    emb_b: (M, E) embeddings.

  Returns:
    The distance (>= 0; tiny negative rounding is clipped to 0).

  Raises:
    ValueError: not 2-D, widths differ, NaN/inf, or N or M < E + 1 (fewer
      samples cannot give a full-rank E x E covariance).
  """
  a = np.asarray(emb_a, np.float64)
  b = np.asarray(emb_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(
        f"embeddings of shapes {a.shape} and {b.shape}: expected (N, E) and "
        "(M, E) with the same E")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("embeddings contain NaN or inf")
  e = a.shape[1]
  if min(a.shape[0], b.shape[0]) < e + 1:
    raise ValueError(
        f"frechet_distance needs at least E + 1 = {e + 1} samples in each "
        f"set to estimate a full-rank {e}x{e} covariance; got N = "
        f"{a.shape[0]} and M = {b.shape[0]}. Embed more audio (each 4 s "
        "window is one sample).")
  mu = a.mean(axis=0) - b.mean(axis=0)
  ca = np.cov(a, rowvar=False)
  cb = np.cov(b, rowvar=False)
  sa = _psd_sqrt(ca)
  mid = sa @ cb @ sa
  tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2),
                                   0.0, None)))
  fd = float(mu @ mu + np.trace(ca) + np.trace(cb) - 2.0 * tr_sqrt)
  return max(fd, 0.0)


def hopped_windows(clips_BxS: np.ndarray, window: int, hop: int) -> np.ndarray:
  """(B, S) mono clips -> (W, window) windows every `hop` samples."""
  if clips_BxS.shape[1] < window:
    raise ValueError(f"clips of {clips_BxS.shape[1]} samples are shorter "
                     f"than the judge window ({window} samples): stream "
                     f"longer")
  out = []
  for clip in clips_BxS:
    for start in range(0, len(clip) - window + 1, hop):
      out.append(clip[start:start + window])
  return np.stack(out)


def judge_windows(judge, clips_BxSxC, sample_rate):
  """(B, S, C) clips -> judge embeddings of their windows, one every
  EMBED_HOP_SECONDS (for Fréchet distances)."""
  mono = clips_BxSxC.mean(axis=-1)
  win = judge.config.window_samples
  return judge.embed_windows(hopped_windows(
      mono, win, int(EMBED_HOP_SECONDS * sample_rate)))


def fd_or_none(a, b) -> float | None:
  """Fréchet distance, or None when a set has too few windows (a smoke
  run); the full build streams enough for every style."""
  if min(len(a), len(b)) < a.shape[1] + 1:
    log.warning("Fréchet distance skipped: %d and %d windows, needs %d each",
                len(a), len(b), a.shape[1] + 1)
    return None
  return frechet_distance(a, b)


# ---- tempo -------------------------------------------------------------------
# Onset-envelope hop in seconds: 8 ms (128 samples at 16 kHz) gives tempo
# bins ~1 BPM apart near 120 BPM; librosa's default 512-sample hop gives ~4.
_TEMPO_HOP_SECONDS = 0.008


def estimate_tempo(audio, sample_rate: int, *,
                   start_bpm: float = 120.0) -> float:
  """Global tempo in BPM from librosa's onset-autocorrelation estimate.

  Args:
    audio: (N,) or (N, C) float audio (channels are averaged).
    sample_rate: its rate in Hz.
    start_bpm: centre of librosa's log-normal tempo prior. Like every
      beat tracker it can answer at half or double the written tempo.

  Returns:
    The tempo estimate in BPM (float).
  """
  import librosa  # Slow to import; only tempo estimation needs it.
  x = np.asarray(audio)
  if x.ndim not in (1, 2):
    raise ValueError(
        f"audio of shape {x.shape}: estimate_tempo takes one clip, (N,) or "
        "(N, C)")
  mono = audio_windows.prepare_mono_audio(x, sample_rate, sample_rate,
                                      resample=False, who="estimate_tempo")[0]
  hop = max(1, int(round(_TEMPO_HOP_SECONDS * sample_rate)))
  env = librosa.onset.onset_strength(y=mono, sr=sample_rate, hop_length=hop)
  tempo = librosa.feature.tempo(onset_envelope=env, sr=sample_rate,
                                hop_length=hop, start_bpm=start_bpm)
  return float(np.ravel(tempo)[0])


def tempo_matches(estimate: float, truth: float, tolerance: float = 0.04,
                  octave: bool = False) -> bool:
  """Whether an estimate is within `tolerance` (relative) of the truth, or
  with octave=True of 1/3, 1/2, 2 or 3 times it (MIREX's 'Acc2')."""
  factors = (1.0, 1 / 3, 0.5, 2.0, 3.0) if octave else (1.0,)
  return any(abs(estimate - f * truth) <= tolerance * f * truth
             for f in factors)


def accuracy_by_style(pred: Sequence[int], labels: Sequence[int],
                      styles: Sequence[str]) -> dict[str, float]:
  pred, labels = np.asarray(pred), np.asarray(labels)
  return {s: float(np.mean(pred[labels == i] == i))
          for i, s in enumerate(styles) if np.any(labels == i)}
