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

The network is in `style_net` (front end in `mel_encoder`), prompt parsing in
`text_parsing`, audio windowing in `audio_windows`, codebook fitting in
`rvq_fit` and the weight-file format in `weights_io` (all under
`mrt_distill.style`).

Training lives in `mrt_distill.world.training.train_style`. Weights are
stored with `mrt_distill.checksummed` (X.npz plus X.npz.json holding config,
geometry and sha256); `load` verifies the checksum and says how to rebuild
a corrupted file.
"""

from __future__ import annotations

import functools
import pathlib
import warnings
from collections.abc import Sequence

import jax
import numpy as np

from mrt_distill import checksummed
from mrt_distill.codec.base import seeded_rvq_codebooks
from mrt_distill.geometry import Geometry
from mrt_distill.geometry import get_geometry
from mrt_distill.geometry import REFERENCE
from mrt_distill.style.audio_windows import prepare_mono_audio
from mrt_distill.style.audio_windows import split_windows
from mrt_distill.style.base import check_texts
from mrt_distill.style.base import StyleModel
from mrt_distill.style.buckets import run_in_buckets
from mrt_distill.style.style_net import init_params
from mrt_distill.style.style_net import init_params_from_key
from mrt_distill.style.style_net import param_count
from mrt_distill.style.style_net import ReferenceStyleConfig
from mrt_distill.style.style_net import StyleNet
from mrt_distill.style.text_parsing import encode_words
from mrt_distill.style.text_parsing import parse_text
from mrt_distill.style.weights_io import AssetError
from mrt_distill.style.weights_io import check_param_shapes
from mrt_distill.style.weights_io import flatten_params
from mrt_distill.style.weights_io import load_asset
from mrt_distill.style.weights_io import save_asset
from mrt_distill.style.weights_io import unflatten_params

FORMAT = "mrt_distill.reference_style/1"
REBUILD_HINT = checksummed.REFERENCE_REBUILD


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
    expected = jax.eval_shape(functools.partial(init_params_from_key, cfg),
                              jax.random.PRNGKey(0))
    params = check_param_shapes(params, expected, str(path), REBUILD_HINT)
    return cls(params, arrays["codebooks"], cfg, geom, **kw)
