"""The reference world's style model: a small MusicCoCa/MuLan-like embedding.

Shape letters: B batch, N audio samples, W analysis windows, T spectrogram
frames, M mel bands, S style embedding width, L style RVQ levels, V style
codebook size, Wd words per text.

Reference: reference/magenta_rt_v1.md §5.2 (MusicCoCa's interface). Like
MusicCoCa this is a two-tower joint embedding trained contrastively, with a
residual VQ on top so that `tokenize` gives style tokens:

* Audio tower. Mono 16 kHz audio is cut into 4 s windows (the reference
  geometry's context length; MusicCoCa uses 10 s), each window becomes a
  64-band log-mel spectrogram (computed in jax.numpy, so it jits with the
  network), a small patch-embedding net with dilated temporal blocks
  (`MelEncoder`), multi-head attention pooling over time and a linear
  projection to S = 128. Window embeddings of one clip are averaged
  (MusicCoCa averages its 10 s clips too).
* Text tower. Texts are bags of words from the reference world's fixed
  descriptor vocabulary (`music.DESCRIPTOR_VOCAB`): the mean of word
  embeddings followed by a small MLP. It is order-free on purpose, so unseen
  combinations of known words embed near the words they contain.
* Shared token space. Magenta RT's LM is trained on style tokens of
  *audio* embeddings and prompted with *text* embeddings, so a text prompt
  must tokenise like the audio it describes. Contrastive training alone
  leaves a "modality gap" (text and audio of one style sit apart on the
  sphere; after a contrastive-only run 10 % of held-out windows shared
  their style prompt's first token and none its first two). So the audio
  tower ends with L2 normalisation (embeddings are unit
  norm times `embed_scale`: 1.0 by default, like `MinimalStyleModel`;
  MusicCoCa's are not unit-norm, norms near 28 are reported), while the text
  tower is also trained to regress the audio embeddings it matches: it
  predicts their mean, so a text embedding lies at the centre of its music's
  audio embeddings and has norm below `embed_scale` (the more varied the
  music, the shorter). The contrastive loss uses the text embedding's
  direction only.
* Quantiser: `style_rvq_depth` levels of `style_codebook_size` codes, each
  level a k-means fit to the residual of the previous ones on training
  *audio* embeddings, so `tokenize` (greedy L2 RVQ, from the base class)
  behaves as MusicCoCa's and every code a text prompt can get is one the LM
  sees in training. (Codes fitted to text embeddings too would be codes no
  audio uses.)

Training lives in `mrt_distill.world.train_style`. Weights are stored with
`mrt_distill.checksummed` (X.npz plus X.npz.json holding config, geometry
and sha256); `load` verifies the checksum and says how to rebuild a
corrupted file.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import re
import warnings
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mrt_distill import checksummed
from mrt_distill.codec.base import seeded_rng
from mrt_distill.codec.base import seeded_rvq_codebooks
from mrt_distill.geometry import Geometry
from mrt_distill.geometry import get_geometry
from mrt_distill.geometry import REFERENCE
from mrt_distill.style.base import check_style_audio
from mrt_distill.style.base import check_texts
from mrt_distill.style.base import StyleModel

log = logging.getLogger(__name__)

FORMAT = "mrt_distill.reference_style/1"
REBUILD_HINT = "python tools/build_reference_world.py --stage style"


# ---- configuration -----------------------------------------------------------
def _default_vocab() -> tuple[str, ...]:
  # Imported lazily: `music` pulls pretty_midi, which only the world needs.
  from mrt_distill.world import music
  return tuple(music.DESCRIPTOR_VOCAB)


@dataclasses.dataclass(frozen=True)
class MelConfig:
  """Log-mel front end shared by the style model and the judges.

  Defaults: 64 ms Hann frames every 20 ms (so 200 frames per 4 s window at
  16 kHz), 64 mel bands from 30 Hz to Nyquist, and a floor `top_db` below
  each clip's loudest mel bin.
  """

  sample_rate: int = 16_000
  n_fft: int = 1024
  hop: int = 320
  n_mels: int = 64
  fmin: float = 30.0
  fmax: float = 8000.0
  top_db: float = 80.0


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """A `MelEncoder`: patch embedding, dilated temporal blocks, pooling.

  Defaults: 4-frame x 8-band patches (80 ms, 1/8 of the mel axis; the
  patch embedding still sees the 20 ms frames inside a patch) and three
  residual temporal blocks with 5 taps at dilations 1, 2, 4, so each step
  sees ~2.2 s (a bar at 110 BPM) before attention pooling. 2-frame patches
  cost twice as much per step.
  """

  patch_time: int = 4
  patch_mel: int = 8
  patch_dim: int = 64
  hidden: int = 256
  time_kernel: int = 5
  dilations: tuple[int, ...] = (1, 2, 4)
  pool_heads: int = 4


def front_end_from_json(d: dict) -> dict:
  """Rebuilds the nested MelConfig / EncoderConfig of a stored config dict
  (shared by the style model's and the judge's configs)."""
  d = dict(d)
  d["mel"] = MelConfig(**d["mel"])
  enc = dict(d["encoder"])
  enc["dilations"] = tuple(enc["dilations"])
  d["encoder"] = EncoderConfig(**enc)
  return d


@dataclasses.dataclass(frozen=True)
class ReferenceStyleConfig:
  """Hyperparameters of the reference style model (stored with the weights).

  Attributes:
    window_seconds: audio window the audio tower sees (the reference
      geometry's 4 s context).
    mel: the log-mel front end.
    encoder: the audio tower's patch / temporal / pooling stack.
    embed_dim: S; must equal the geometry's style_embed_dim.
    text_width: word embedding width.
    text_hidden: hidden width of the text MLP.
    vocab: the descriptor words the text tower knows, in id order. Stored
      with the weights so a later change of `DESCRIPTOR_VOCAB` cannot
      silently re-map ids.
    embed_scale: norm of audio window embeddings (text embeddings, means of
      them, are shorter).
  """

  window_seconds: float = 4.0
  mel: MelConfig = MelConfig()
  encoder: EncoderConfig = EncoderConfig()
  embed_dim: int = 128
  text_width: int = 128
  text_hidden: int = 256
  vocab: tuple[str, ...] = dataclasses.field(default_factory=_default_vocab)
  embed_scale: float = 1.0

  @property
  def window_samples(self) -> int:
    return int(round(self.window_seconds * self.mel.sample_rate))

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> "ReferenceStyleConfig":
    d = front_end_from_json(d)
    d["vocab"] = tuple(d["vocab"])
    return cls(**d)


# ---- log-mel front end -------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _mel_matrix(cfg: MelConfig) -> np.ndarray:
  """float32 (n_fft // 2 + 1, M) Slaney mel filterbank."""
  import librosa  # Slow to import; only needed once per config.
  fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft,
                           n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
  return np.ascontiguousarray(fb.T, np.float32)


# Log-mel values are centred per clip and divided by this, so the network
# sees roughly unit-scale inputs.
_LOG_MEL_SCALE = 4.0
# Absolute floor: only keeps log() finite for digital silence.
_LOG_MEL_EPS = 1e-10


def log_mel(audio_BxN: jax.Array, cfg: MelConfig) -> jax.Array:
  """Mono audio (B, N) -> normalised log-mel (B, T, M), T = N // hop.

  Frames are centred (zero padding of n_fft / 2 at both ends). Each clip's
  log-mel is floored `top_db` below its own loudest bin and centred on its
  own mean, so the features are invariant to gain and blind to what lies
  far below the music (rounding noise, dither, synth denormals), as
  librosa's `power_to_db(top_db=80)` is. Pure jax.numpy: safe under jit and
  grad.
  """
  x = jnp.asarray(audio_BxN, jnp.float32)
  n = x.shape[-1]
  num_frames = n // cfg.hop
  if num_frames < 1:
    raise ValueError(
        f"audio of {n} samples is shorter than one hop ({cfg.hop} samples)")
  pad = cfg.n_fft // 2
  x = jnp.pad(x, ((0, 0), (pad, pad)))
  idx_TxF = (np.arange(cfg.n_fft)[None, :]
             + cfg.hop * np.arange(num_frames)[:, None])
  window = np.hanning(cfg.n_fft + 1)[:-1].astype(np.float32)  # periodic
  frames_BxTxF = x[:, idx_TxF] * window[None, None, :]
  power = jnp.square(jnp.abs(jnp.fft.rfft(frames_BxTxF, axis=-1)))
  mel_BxTxM = jnp.matmul(power, _mel_matrix(cfg),
                         precision=jax.lax.Precision.HIGHEST)
  logm = jnp.log(mel_BxTxM + _LOG_MEL_EPS)
  floor = jnp.max(logm, axis=(1, 2), keepdims=True) - cfg.top_db * (
      np.log(10.0) / 10.0)
  logm = jnp.maximum(logm, floor)
  logm = logm - jnp.mean(logm, axis=(1, 2), keepdims=True)
  return logm / _LOG_MEL_SCALE


# ---- networks ----------------------------------------------------------------
def _time_taps(x_BxTxD: jax.Array, kernel: int, dilation: int) -> jax.Array:
  """Stack `kernel` time-shifted copies (zero-padded, centred) -> (B, T,
  kernel * D): a temporal conv then becomes one dense layer, which XLA runs
  far faster on CPU than a conv with few channels."""
  t = x_BxTxD.shape[1]
  half = (kernel // 2) * dilation
  xp = jnp.pad(x_BxTxD, ((0, 0), (half, half), (0, 0)))
  return jnp.concatenate(
      [xp[:, i * dilation:i * dilation + t] for i in range(kernel)], axis=-1)


class MelEncoder(nn.Module):
  """Log-mel (B, T, M) -> pooled features (B, hidden).

  Non-overlapping (time x mel) patches are embedded by a shared dense layer
  (so a pattern looks the same in every band, a cheap stand-in for a conv's
  translation sharing), the bands of one time step are concatenated and
  projected, residual dilated temporal blocks add rhythm context, and
  multi-head attention pooling (learned per-head scores over time) reduces
  the time axis. Dense layers only: a conv stack of the same size ran 3x
  slower on the 2-core CPU this is trained on.
  """

  cfg: EncoderConfig

  @nn.compact
  def __call__(self, mel_BxTxM: jax.Array) -> jax.Array:
    c = self.cfg
    b, t, m = mel_BxTxM.shape
    if m % c.patch_mel:
      raise ValueError(f"{m} mel bands do not split into patches of "
                       f"{c.patch_mel}")
    tp, mp = t // c.patch_time, m // c.patch_mel
    x = mel_BxTxM[:, :tp * c.patch_time]
    x = x.reshape(b, tp, c.patch_time, mp, c.patch_mel).transpose(0, 1, 3, 2,
                                                                  4)
    x = x.reshape(b, tp, mp, c.patch_time * c.patch_mel)
    x = nn.Dense(c.patch_dim, name="patch_embed")(x)
    x = nn.gelu(nn.LayerNorm(name="patch_norm")(x))
    x_BxTxD = nn.Dense(c.hidden, name="frame_proj")(
        x.reshape(b, tp, mp * c.patch_dim))
    for i, d in enumerate(c.dilations):
      h = nn.LayerNorm(name=f"block{i}_norm")(x_BxTxD)
      h = nn.Dense(c.hidden, name=f"block{i}_taps")(
          _time_taps(h, c.time_kernel, d))
      h = nn.Dense(c.hidden, name=f"block{i}_out")(nn.gelu(h))
      x_BxTxD = x_BxTxD + h
    x_BxTxD = nn.LayerNorm(name="pool_norm")(x_BxTxD)
    scores_BxTxH = nn.Dense(c.pool_heads, name="pool_scores")(x_BxTxD)
    w_BxTxH = jax.nn.softmax(scores_BxTxH, axis=1)
    heads = c.pool_heads
    x_BxTxHxE = x_BxTxD.reshape(b, tp, heads, c.hidden // heads)
    pooled = jnp.einsum("bth,bthe->bhe", w_BxTxH, x_BxTxHxE)
    return pooled.reshape(b, c.hidden)


def _l2_normalise(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


class StyleNet(nn.Module):
  """Both towers and the learned contrastive temperature.

  `embed_audio` gives unit-norm (B, S); `embed_text` gives (B, S) estimates
  of the mean audio embedding of matching music (not normalised; see the
  module docstring).
  """

  cfg: ReferenceStyleConfig

  def setup(self):
    c = self.cfg
    self.audio_encoder = MelEncoder(c.encoder)
    self.audio_head = nn.Dense(c.embed_dim)
    self.word_embed = nn.Embed(len(c.vocab), c.text_width,
                               embedding_init=nn.initializers.normal(1.0))
    self.text_norm = nn.LayerNorm()
    self.text_hidden = nn.Dense(c.text_hidden)
    # Small output init: the text embedding regresses unit-norm audio
    # embeddings, so it should start near norm 1, not near sqrt(S).
    small = nn.initializers.variance_scaling(1.0 / c.embed_dim, "fan_in",
                                             "truncated_normal")
    self.text_out = nn.Dense(c.embed_dim, kernel_init=small)
    self.text_skip = nn.Dense(c.embed_dim, kernel_init=small)
    # CLIP's initial temperature 0.07; stored as log(1 / T).
    self.logit_scale = self.param(
        "logit_scale", lambda _: jnp.asarray(np.log(1 / 0.07), jnp.float32))

  def embed_audio(self, audio_BxN: jax.Array) -> jax.Array:
    feats = self.audio_encoder(log_mel(audio_BxN, self.cfg.mel))
    return _l2_normalise(self.audio_head(feats))

  def embed_text(self, ids_BxWd: jax.Array, mask_BxWd: jax.Array) -> jax.Array:
    """Word ids and a {0, 1} mask (B, Wd) -> (B, S)."""
    mask = mask_BxWd.astype(jnp.float32)[..., None]
    e_BxWdxE = self.word_embed(ids_BxWd)
    # The mean, not the sum: texts of 1 word and of 10 words land at
    # similar scales, which keeps single words and combinations comparable.
    bag = jnp.sum(e_BxWdxE * mask, axis=1) / jnp.maximum(
        jnp.sum(mask, axis=1), 1.0)
    h = self.text_norm(bag)
    return self.text_out(nn.gelu(self.text_hidden(h))) + self.text_skip(h)

  def __call__(self, audio_BxN, ids_BxWd, mask_BxWd):
    return (self.embed_audio(audio_BxN), self.embed_text(ids_BxWd, mask_BxWd),
            self.logit_scale)


def _init(cfg: ReferenceStyleConfig, key: jax.Array):
  net = StyleNet(cfg)
  # Parameter shapes do not depend on the clip length: a short clip keeps
  # init cheap.
  audio = jnp.zeros((1, 16 * cfg.mel.hop), jnp.float32)
  ids = jnp.zeros((1, 4), jnp.int32)
  return net.init(key, audio, ids, jnp.ones((1, 4)))["params"]


def init_params(cfg: ReferenceStyleConfig, seed: int) -> dict:
  """Fresh StyleNet parameters, deterministic in `seed`."""
  # Jitted: eager init dispatches (and compiles) every op on its own, which
  # takes many seconds for the conv stack.
  fn = jax.jit(functools.partial(_init, cfg))
  return jax.device_get(fn(jax.random.PRNGKey(seed)))


def param_count(params) -> int:
  return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


# ---- text parsing ------------------------------------------------------------
# Words that carry no style and are dropped without a warning
# ("techno music with flute" is a fine prompt).
STOP_WORDS = frozenset({
    "a", "an", "and", "the", "with", "of", "in", "on", "some", "music",
    "style", "song", "track", "tune", "feat", "featuring", "plus"})

# Common spellings of vocabulary words. A key is a word sequence joined by "_"
# after lowercasing; phrases made of vocabulary words written with spaces or
# hyphens ("drum and bass", "bossa-nova") are matched without entries here.
ALIASES = {
    "dnb": "drum_and_bass",
    "d_n_b": "drum_and_bass",
    "drum_n_bass": "drum_and_bass",
    "drum_&_bass": "drum_and_bass",
    "drumandbass": "drum_and_bass",
    "hip_hop": "hiphop",
    "lo_fi": "lofi",
    "lofi_hip_hop": "lofi_hiphop",
    "lo_fi_hip_hop": "lofi_hiphop",
    "bossa": "bossa_nova",
    "bossanova": "bossa_nova",
    "strings_ensemble": "string_ensemble",
    "e_piano": "electric_piano",
    "epiano": "electric_piano",
    "sax": "saxophone",
}
_MAX_PHRASE = 4
_SPLIT = re.compile(r"[\s,;/|+]+")


def parse_text(text: str, vocab: Sequence[str]
               ) -> tuple[list[str], list[str]]:
  """A prompt -> (known vocabulary words, unknown words), both de-duplicated.

  Lowercase; split on whitespace, commas, semicolons, slashes, '|' and '+';
  '-' and '_' join parts of one descriptor ("drum_and_bass", "drum-and-bass"
  and "drum and bass" all give `drum_and_bass`). Longest matches win, so
  "jazz piano trio" is the style, while "piano trio jazz" is three words.
  Stop words ("with", "music", ...) are dropped silently.
  """
  vocab_set = set(vocab)
  parts: list[str] = []
  for tok in _SPLIT.split(text.strip().lower()):
    tok = tok.replace("-", "_").strip("_.!?:'\"()[]{}")
    if not tok:
      continue
    if tok in vocab_set or tok in ALIASES:
      parts.append(tok)  # Keep known multi-part descriptors whole.
    else:
      parts.extend(p for p in tok.split("_") if p)
  known, unknown = [], []
  i = 0
  while i < len(parts):
    for n in range(min(_MAX_PHRASE, len(parts) - i), 0, -1):
      phrase = "_".join(parts[i:i + n])
      word = phrase if phrase in vocab_set else ALIASES.get(phrase)
      if word is not None and word in vocab_set:
        known.append(word)
        i += n
        break
    else:
      if parts[i] not in STOP_WORDS:
        unknown.append(parts[i])
      i += 1
  return list(dict.fromkeys(known)), list(dict.fromkeys(unknown))


def encode_words(word_lists: Sequence[Sequence[str]], vocab: Sequence[str],
                 width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Lists of vocabulary words -> int32 ids (B, Wd) and float32 mask (B, Wd).

  Wd is `width`, or the longest list rounded up to a multiple of 8 (fewer
  distinct shapes, fewer recompiles).
  """
  index = {w: i for i, w in enumerate(vocab)}
  longest = max(len(w) for w in word_lists)
  if width is None:
    width = max(8, -(-longest // 8) * 8)
  if longest > width:
    raise ValueError(f"a text has {longest} words; width is {width}")
  ids = np.zeros((len(word_lists), width), np.int32)
  mask = np.zeros((len(word_lists), width), np.float32)
  for b, words in enumerate(word_lists):
    ids[b, :len(words)] = [index[w] for w in words]
    mask[b, :len(words)] = 1.0
  return ids, mask


# ---- audio preparation -------------------------------------------------------
def prepare_mono_audio(audio, sample_rate: int, target_rate: int, *,
                       resample: bool, who: str) -> np.ndarray:
  """(N,), (N, C) or (B, N, C) float audio -> float32 mono (B, N') at
  `target_rate`.

  Channels are averaged (MusicCoCa's default). A different sample rate is
  resampled with librosa (logged at INFO) when `resample`, else refused; both
  messages name the two rates.
  """
  mono_BxN = check_style_audio(audio, sample_rate)
  if sample_rate != target_rate:
    if not resample:
      raise ValueError(
          f"{who}: audio at {sample_rate} Hz, but the model runs at "
          f"{target_rate} Hz; resample it first or pass resample=True")
    import librosa  # Slow to import; only needed here.
    log.info("%s: resampling audio from %d Hz to %d Hz", who, sample_rate,
             target_rate)
    mono_BxN = librosa.resample(mono_BxN, orig_sr=int(sample_rate),
                                target_sr=int(target_rate), axis=-1)
  return np.ascontiguousarray(mono_BxN, np.float32)


def split_windows(mono_BxN: np.ndarray, window: int, *, keep_tail: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Cut each clip into non-overlapping windows.

  Args:
    mono_BxN: float32 mono audio.
    window: samples per window.
    keep_tail: keep a final partial window (zero-padded, weighted by its
      share of real samples) as MusicCoCa's `pad_end=True` does; otherwise
      drop it. A clip shorter than one window always gives one padded window.

  Returns:
    windows (W, window), owner clip index (W,), weight (W,) = fraction of
    real samples.
  """
  wins, owner, weight = [], [], []
  for b, x in enumerate(mono_BxN):
    n = x.shape[0]
    count = -(-n // window) if keep_tail else max(1, n // window)
    for k in range(count):
      seg = x[k * window:(k + 1) * window]
      wins.append(np.pad(seg, (0, window - seg.shape[0])))
      owner.append(b)
      weight.append(seg.shape[0] / window)
  return (np.stack(wins).astype(np.float32), np.asarray(owner),
          np.asarray(weight, np.float32))


def _bucket(n: int) -> int:
  """Batch sizes the jitted towers are compiled for."""
  for size in (1, 4, 16):
    if n <= size:
      return size
  return 16


def run_in_buckets(fn, x: np.ndarray, *extra: np.ndarray) -> np.ndarray:
  """Apply a jitted fn over axis 0 in padded buckets of 1, 4 or 16 rows."""
  out = []
  for start in range(0, x.shape[0], 16):
    rows = [a[start:start + 16] for a in (x, *extra)]
    n = rows[0].shape[0]
    pad = _bucket(n) - n
    rows = [np.pad(r, [(0, pad)] + [(0, 0)] * (r.ndim - 1)) for r in rows]
    out.append(np.asarray(fn(*rows))[:n])
  return np.concatenate(out)


# ---- residual k-means quantiser ----------------------------------------------
def _nearest(x_NxS: np.ndarray, c_VxS: np.ndarray) -> np.ndarray:
  d = np.sum(c_VxS * c_VxS, axis=-1)[None, :] - 2.0 * (x_NxS @ c_VxS.T)
  return np.argmin(d, axis=-1)


def kmeans(x_NxS: np.ndarray, k: int, rng: np.random.Generator,
           iters: int = 30) -> np.ndarray:
  """Lloyd's k-means with k-means++ seeding -> float32 (k, S) centroids.

  An emptied cluster is re-seeded at the point farthest from its centroid,
  so all k codes stay in use.
  """
  x = np.asarray(x_NxS, np.float64)
  n = x.shape[0]
  if n < k:
    raise ValueError(f"k-means needs at least k={k} points, got {n}")
  cent = np.empty((k, x.shape[1]))
  cent[0] = x[rng.integers(n)]
  d2 = np.sum((x - cent[0])**2, axis=-1)
  for j in range(1, k):
    p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
    cent[j] = x[rng.choice(n, p=p)]
    d2 = np.minimum(d2, np.sum((x - cent[j])**2, axis=-1))
  for _ in range(iters):
    assign = _nearest(x, cent)
    err = np.sum((x - cent[assign])**2, axis=-1)
    for j in range(k):
      members = assign == j
      if members.any():
        cent[j] = x[members].mean(axis=0)
      else:
        far = int(np.argmax(err))
        cent[j] = x[far]
        err[far] = 0.0
  return cent.astype(np.float32)


def fit_rvq_codebooks(x_NxS: np.ndarray, depth: int, size: int, seed: int,
                      iters: int = 30) -> np.ndarray:
  """Residual k-means: level l fits the residual after levels < l.

  Returns:
    float32 (depth, size, S) codebooks for `rvq_quantize`.
  """
  rng = seeded_rng(seed, "mrt_distill.style.reference.rvq")
  residual = np.asarray(x_NxS, np.float32).copy()
  books = []
  for _ in range(depth):
    c = kmeans(residual, size, rng, iters)
    residual = residual - c[_nearest(residual, c)]
    books.append(c)
  return np.stack(books).astype(np.float32)


# ---- checked .npz assets (shared with the judges) ----------------------------
# Weights go through the project's checksummed format: X.npz plus X.npz.json
# (meta + sha256), written deterministically so that the same weights give
# the same bytes.
AssetError = checksummed.ChecksumError  # A ValueError; names the rebuild.


def save_asset(path, arrays: dict, meta: dict) -> pathlib.Path:
  """Write arrays to `path` (.npz) and `meta` + sha256 to its sidecar."""
  path = pathlib.Path(path)
  if path.suffix != ".npz":
    raise ValueError(f"weights path {path} must end in .npz")
  return checksummed.save_npz(path, arrays, meta)


def load_asset(path, fmt: str, rebuild: str
               ) -> tuple[dict[str, np.ndarray], dict]:
  """Read and verify a file written by `save_asset` of format `fmt`.

  Raises:
    AssetError: missing file or sidecar, checksum mismatch, or another
      format; the message says how to rebuild (`rebuild`).
  """
  arrays, meta = checksummed.load_npz(path, rebuild)
  if meta.get("format") != fmt:
    raise AssetError(
        f"{path} holds {meta.get('format')!r}, not {fmt!r}; rebuild it with "
        f"`{rebuild}`")
  return arrays, meta


def flatten_params(params, prefix: str = "params/") -> dict[str, np.ndarray]:
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  return {prefix + k: np.asarray(v) for k, v in flat.items()}


def unflatten_params(arrays: dict, prefix: str = "params/") -> dict:
  flat = {k[len(prefix):]: jnp.asarray(v) for k, v in arrays.items()
          if k.startswith(prefix)}
  return traverse_util.unflatten_dict(flat, sep="/")


def check_param_shapes(params, expected, what: str, rebuild: str) -> dict:
  """Return `params` with 0-d leaves restored; AssetError naming missing,
  extra and mis-shaped parameters.

  `checksummed.save_npz` stores 0-d arrays (the temperature) as shape (1,)
  (np.ascontiguousarray promotes them), so those are reshaped back.
  """
  have = traverse_util.flatten_dict(params, sep="/")
  want = traverse_util.flatten_dict(expected, sep="/")
  for k in set(have) & set(want):
    if want[k].shape == () and np.shape(have[k]) == (1,):
      have[k] = jnp.reshape(have[k], ())
  problems = [f"missing {k}" for k in sorted(set(want) - set(have))]
  problems += [f"unexpected {k}" for k in sorted(set(have) - set(want))]
  problems += [f"{k}: {tuple(np.shape(have[k]))} != {tuple(want[k].shape)}"
               for k in sorted(set(want) & set(have))
               if tuple(np.shape(have[k])) != tuple(want[k].shape)]
  if problems:
    raise AssetError(f"{what} does not match its config: "
                     + "; ".join(problems[:8]) + f"; rebuild with `{rebuild}`")
  return traverse_util.unflatten_dict(have, sep="/")


# ---- the style model ---------------------------------------------------------
class ReferenceStyleModel(StyleModel):
  """The trained reference-world style model (see the module docstring).

  Args:
    params: StyleNet parameters.
    codebooks: float32 (style_rvq_depth, V, S) RVQ codebooks.
    config: the network config (defaults to `ReferenceStyleConfig()`).
    geometry: the token geometry (REFERENCE by default).
    resample: resample audio at another rate (else refuse it).
  """

  def __init__(self, params, codebooks: np.ndarray,
               config: ReferenceStyleConfig | None = None,
               geometry: Geometry = REFERENCE, *, resample: bool = True):
    super().__init__(geometry)
    cfg = config or ReferenceStyleConfig()
    g = geometry
    if cfg.embed_dim != g.style_embed_dim:
      raise ValueError(
          f"config embed_dim {cfg.embed_dim} != geometry {g.name!r} "
          f"style_embed_dim {g.style_embed_dim}")
    books = np.asarray(codebooks, np.float32)
    want = (g.style_rvq_depth, g.style_codebook_size, g.style_embed_dim)
    if books.shape != want:
      raise ValueError(
          f"codebooks of shape {books.shape}; geometry {g.name!r} needs "
          f"{want} (style_rvq_depth, style_codebook_size, style_embed_dim)")
    self._cfg = cfg
    self._params = params
    self._codebooks = books
    self._codebooks.setflags(write=False)
    self._resample = bool(resample)
    self._net = StyleNet(cfg)
    self._audio_fn = jax.jit(
        lambda p, a: self._net.apply({"params": p}, a,
                                     method=StyleNet.embed_audio))
    self._text_fn = jax.jit(
        lambda p, i, m: self._net.apply({"params": p}, i, m,
                                        method=StyleNet.embed_text))

  @classmethod
  def init(cls, seed: int = 0, config: ReferenceStyleConfig | None = None,
           geometry: Geometry = REFERENCE, **kw) -> "ReferenceStyleModel":
    """An untrained model: fresh weights and seeded random codebooks."""
    cfg = config or ReferenceStyleConfig()
    books = seeded_rvq_codebooks(
        seed, "mrt_distill.style.ReferenceStyleModel.codebooks",
        geometry.style_rvq_depth, geometry.style_codebook_size,
        geometry.style_embed_dim, cfg.embed_scale)
    return cls(init_params(cfg, seed), books, cfg, geometry, **kw)

  # ---- properties -----------------------------------------------------------
  @property
  def codebooks(self) -> np.ndarray:
    return self._codebooks

  @property
  def config(self) -> ReferenceStyleConfig:
    return self._cfg

  @property
  def params(self):
    return self._params

  @property
  def vocab(self) -> tuple[str, ...]:
    return self._cfg.vocab

  @property
  def num_params(self) -> int:
    return param_count(self._params)

  def with_codebooks(self, codebooks: np.ndarray) -> "ReferenceStyleModel":
    """The same network with other quantiser codebooks."""
    return ReferenceStyleModel(self._params, codebooks, self._cfg,
                               self.geometry, resample=self._resample)

  # ---- text -----------------------------------------------------------------
  def text_words(self, text: str) -> list[str]:
    """The vocabulary words a text embeds as (warns about unknown words).

    Raises:
      ValueError: no word of the text is in the vocabulary (the message lists
        the vocabulary).
    """
    known, unknown = parse_text(text, self.vocab)
    if not known:
      raise ValueError(
          f"style text {text!r} has no word the reference style model knows"
          + (f" (unknown: {', '.join(unknown)})" if unknown else "")
          + "; use words from its vocabulary: " + ", ".join(self.vocab))
    if unknown:
      warnings.warn(
          f"style text {text!r}: unknown word(s) {', '.join(unknown)} "
          f"ignored; embedding {' '.join(known)}", stacklevel=3)
    return known

  def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
    """One text or a list of texts -> float32 (B, S).

    Each row estimates the mean audio embedding of music the text describes
    (norm below `embed_scale`), so it tokenises like that music.
    """
    words = [self.text_words(t) for t in check_texts(texts)]
    ids, mask = encode_words(words, self.vocab)
    emb = run_in_buckets(functools.partial(self._text_fn, self._params), ids,
                         mask)
    return (emb * self._cfg.embed_scale).astype(np.float32)

  # ---- audio ----------------------------------------------------------------
  def embed_audio_windows(self, windows_WxN: np.ndarray) -> np.ndarray:
    """Exactly-one-window mono clips (W, window_samples) at the model rate ->
    float32 (W, S) unit-norm x `embed_scale` embeddings."""
    w = np.asarray(windows_WxN, np.float32)
    if w.ndim != 2 or w.shape[1] != self._cfg.window_samples:
      raise ValueError(
          f"windows of shape {w.shape}: expected (W, "
          f"{self._cfg.window_samples})")
    emb = run_in_buckets(functools.partial(self._audio_fn, self._params), w)
    return (emb * self._cfg.embed_scale).astype(np.float32)

  def audio_embedder(self):
    """A pure, differentiable JAX function: mono clips float32 (B, N) at
    `config.mel.sample_rate` -> (B, S) unit-norm x `embed_scale` embeddings.

    The parameters are closed over as constants, so the function can sit
    inside a jitted loss (the distillation's `style` term). Clips of any
    length work (the tower pools over time); no windowing, no resampling.
    """
    net, params, scale = self._net, self._params, self._cfg.embed_scale

    def embed(audio_BxN: jax.Array) -> jax.Array:
      return scale * net.apply({"params": params}, audio_BxN,
                               method=StyleNet.embed_audio)

    return embed

  @property
  def audio_embedder_sample_rate(self) -> int:
    return int(self._cfg.mel.sample_rate)

  def embed_audio(self, audio: np.ndarray, sample_rate: int, *,
                  resample: bool | None = None) -> np.ndarray:
    """(N,), (N, C) or (B, N, C) audio -> float32 (B, S).

    Stereo is averaged to mono; another sample rate is resampled (or refused
    with resample=False). Each clip is cut into 4 s windows, the last one
    zero-padded; the clip's embedding is the mean of its window embeddings,
    weighted by each window's share of real samples (so a short padded tail
    counts little). A clip longer than one window therefore has norm <=
    `embed_scale`, as a MusicCoCa average of clips is shorter than its parts.
    """
    rs = self._resample if resample is None else resample
    mono = prepare_mono_audio(audio, sample_rate, self._cfg.mel.sample_rate,
                              resample=rs, who="ReferenceStyleModel")
    wins, owner, weight = split_windows(mono, self._cfg.window_samples,
                                        keep_tail=True)
    emb_WxS = self.embed_audio_windows(wins)
    out = np.zeros((mono.shape[0], emb_WxS.shape[1]), np.float64)
    np.add.at(out, owner, emb_WxS * weight[:, None])
    out /= np.bincount(owner, weights=weight)[:, None]
    return out.astype(np.float32)

  # ---- persistence ----------------------------------------------------------
  def save(self, path, extra_meta: dict | None = None) -> pathlib.Path:
    """Write `path` (.npz: params + codebooks) and `path`.json (config,
    geometry, sha256)."""
    arrays = flatten_params(self._params)
    arrays["codebooks"] = np.asarray(self._codebooks)
    meta = {"format": FORMAT, "config": self._cfg.to_json(),
            "geometry": self.geometry.name, "num_params": self.num_params}
    meta.update(extra_meta or {})
    return save_asset(path, arrays, meta)

  @classmethod
  def load(cls, path, geometry: Geometry | None = None,
           **kw) -> "ReferenceStyleModel":
    """Load a model written by `save`, verifying its checksum.

    Raises:
      AssetError (a ValueError): missing, corrupted or mismatched files; the
        message names the rebuild command.
    """
    arrays, meta = load_asset(path, FORMAT, REBUILD_HINT)
    try:
      cfg = ReferenceStyleConfig.from_json(meta["config"])
      geom = geometry or get_geometry(meta["geometry"])
    except (KeyError, TypeError, ValueError) as e:
      raise AssetError(
          f"{path}: bad sidecar config ({e}); rebuild with "
          f"`{REBUILD_HINT}`") from None
    params = unflatten_params(arrays)
    expected = jax.eval_shape(functools.partial(_init, cfg),
                              jax.random.PRNGKey(0))
    params = check_param_shapes(params, expected, str(path), REBUILD_HINT)
    return cls(params, arrays["codebooks"], cfg, geom, **kw)

