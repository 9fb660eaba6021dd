"""The reference style model's network: `ReferenceStyleConfig`, `StyleNet`
(audio and text towers) and their initialisation.

Shape letters: B batch, N audio samples, S style embedding width, Wd words per
text. The design is described in `mrt_distill.style.reference`.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill.style.mel_encoder import EncoderConfig
from mrt_distill.style.mel_encoder import WindowedMelConfig
from mrt_distill.style.mel_encoder import log_mel
from mrt_distill.style.mel_encoder import MelConfig
from mrt_distill.style.mel_encoder import MelEncoder


# ---- configuration -----------------------------------------------------------
def _default_vocab() -> tuple[str, ...]:
  # Imported lazily: `music` pulls pretty_midi, which only the world needs.
  from mrt_distill.world import music
  return tuple(music.DESCRIPTOR_VOCAB)


@dataclasses.dataclass(frozen=True)
class ReferenceStyleConfig(WindowedMelConfig):
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

  TUPLE_FIELDS = ("vocab",)


# ---- networks ----------------------------------------------------------------
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


def init_params_from_key(cfg: ReferenceStyleConfig, key: jax.Array):
  """StyleNet parameters from a PRNG key (`jax.eval_shape` of this gives the
  expected parameter shapes)."""
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
  fn = jax.jit(functools.partial(init_params_from_key, cfg))
  return jax.device_get(fn(jax.random.PRNGKey(seed)))


def param_count(params) -> int:
  return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))
