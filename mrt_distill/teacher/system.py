"""The streaming teacher: Magenta RT's `generate_chunk` loop (reference §4).

State: the last `context_frames` frames of generated RVQ codes (-1 = "no
audio yet", encoded as MASK), the crossfade tail of the previous decode, and
the chunk index. Each call:

  1. builds the encoder input (coarse context levels, frame-major, then the
     style tokens) and its CFG negative (style -> MASK);
  2. samples a chunk of C x K tokens with the KV-cached decoder;
  3. decodes [last context frame(s), new chunk] with the codec and joins the
     chunk to the previous one with an equal-power crossfade (the output lags
     token time by `crossfade_frames`);
  4. rolls the context window.

`build_encoder_inputs` is batched and pure numpy, so rollouts for
distillation share it.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from mrt_distill import coupling
from mrt_distill.codec.base import Codec
from mrt_distill.geometry import MASK_ID, Geometry
from mrt_distill.style import mixing
from mrt_distill.style.base import StyleModel
from mrt_distill.teacher.config import TeacherConfig
from mrt_distill.teacher.decode import SamplingParams, generate_tokens
from mrt_distill.teacher.load import check_params


@dataclasses.dataclass
class StreamState:
  """Rolling stream state (v1 MagentaRTState)."""
  context_tokens: np.ndarray  # int32 (context_frames, target_levels); -1 empty
  crossfade_samples: np.ndarray  # float32 (crossfade_samples, channels)
  chunk_index: int = 0


def init_state(geometry: Geometry) -> StreamState:
  return StreamState(
      context_tokens=np.full(
          (geometry.context_frames, geometry.target_levels), -1, np.int32),
      crossfade_samples=np.zeros(
          (geometry.crossfade_samples, geometry.channels), np.float32),
      chunk_index=0)


def check_state(state: StreamState, geometry: Geometry) -> None:
  """Raises ValueError naming what in `state` does not fit the geometry."""
  if not isinstance(state, StreamState):
    raise TypeError(f"state must be a StreamState (from init_state()), got "
                    f"{type(state).__name__}")
  ctx = np.asarray(state.context_tokens)
  want = (geometry.context_frames, geometry.target_levels)
  if ctx.shape != want or ctx.dtype != np.int32:
    raise ValueError(
        f"state.context_tokens must be int32 {want} for geometry "
        f"{geometry.name!r}, got {ctx.dtype} {ctx.shape}; start from "
        f"init_state()")
  if ctx.size and (ctx.min() < -1 or ctx.max() >= geometry.codebook_size):
    raise ValueError(
        f"state.context_tokens holds codes outside [-1, "
        f"{geometry.codebook_size}): min {ctx.min()}, max {ctx.max()}")
  xf = np.asarray(state.crossfade_samples)
  want_xf = (geometry.crossfade_samples, geometry.channels)
  if xf.shape != want_xf:
    raise ValueError(f"state.crossfade_samples must be {want_xf}, got "
                     f"{xf.shape}")
  if int(state.chunk_index) < 0:
    raise ValueError("state.chunk_index must be >= 0")


def context_frame_ids(geometry: Geometry,
                      context_BxFxK: np.ndarray) -> np.ndarray:
  """Context codes (B, F, K >= context levels; -1 = no audio yet) -> ids
  (B, F, context_levels); a frame holding any -1 is MASK on every level."""
  g = geometry
  ctx = np.asarray(context_BxFxK)[..., :g.context_levels]
  empty = (ctx < 0).any(axis=-1, keepdims=True)
  lv = np.arange(g.context_levels)
  ids = g.codec_offset + g.codebook_size * lv + np.maximum(ctx, 0)
  return np.where(empty, MASK_ID, ids)


def build_encoder_inputs(geometry: Geometry, context_BxFxK: np.ndarray,
                         style_ids_BxL: np.ndarray | None) -> np.ndarray:
  """Encoder ids (B, Le): coarse context levels frame-major, then style ids.

  Frames holding any -1 ("no audio yet") become MASK on every level (cold
  start is left-padded with MASK). style_ids None -> MASK style (CFG negative
  or unconditioned).
  """
  g = geometry
  ids = context_frame_ids(g, context_BxFxK)
  b = ids.shape[0]
  ids = ids.reshape(b, -1)
  if style_ids_BxL is None:
    style = np.full((b, g.style_levels), MASK_ID, np.int64)
  else:
    style = np.asarray(style_ids_BxL).reshape(b, g.style_levels)
  return np.concatenate([ids, style], axis=1).astype(np.int32)


def equal_power_ramp(n: int) -> np.ndarray:
  """sin ramp 0 -> ~1 over n samples (endpoint excluded), as in v1."""
  return np.sin(np.linspace(0.0, np.pi / 2, n, endpoint=False)).astype(
      np.float32)


class TeacherSystem:
  """Streams music chunk by chunk from a teacher, a codec and a style model."""

  def __init__(self, cfg: TeacherConfig, params, codec: Codec,
               style_model: StyleModel,
               sampling: SamplingParams = SamplingParams()):
    g = cfg.geometry
    check_params(params, cfg)
    for what, obj in (("codec", codec), ("style model", style_model)):
      if obj.geometry != g:
        raise ValueError(
            f"the {what} is built for geometry {obj.geometry.name!r} but the "
            f"teacher uses {g.name!r}")
    self.cfg, self.params = cfg, params
    self.codec, self.style_model = codec, style_model
    self.sampling = sampling
    self._ramp = equal_power_ramp(g.crossfade_samples)
    self.stray_tokens = 0  # ids folded into range so far (see generate_chunk)
    self._flow_books = None

  @property
  def flow_books(self) -> np.ndarray:
    """The codec's codebooks normalised for coupled sampling (K, V, D)."""
    if self._flow_books is None:
      self._flow_books = coupling.flow_codebooks(
          self.codec.codebooks, self.geometry.target_levels)
    return self._flow_books

  @property
  def geometry(self) -> Geometry:
    return self.cfg.geometry

  def init_state(self) -> StreamState:
    return init_state(self.geometry)

  def embed_style(self, style) -> np.ndarray | None:
    """None | prompt-mix text ("techno:1, flute:0.5") | list of (text, w) |
    a (S,) embedding -> (S,) float32 embedding or None."""
    if style is None:
      return None
    if isinstance(style, (str, list, tuple)):
      return mixing.embed_prompt_mix(self.style_model, style)
    emb = np.asarray(style, np.float32)
    if emb.shape != (self.geometry.style_embed_dim,):
      raise ValueError(
          f"style embedding must have shape ({self.geometry.style_embed_dim},)"
          f", got {emb.shape}; pass prompt text or a mixed embedding")
    if not np.isfinite(emb).all():
      raise ValueError("style embedding contains NaN or Inf")
    return emb

  def generate_chunk(self, state: StreamState, style=None,
                     seed: int | None = None, **sampling_overrides):
    """-> (audio float32 (chunk_samples, channels), new StreamState)."""
    check_state(state, self.geometry)
    emb = self.embed_style(style)
    batched = StreamState(state.context_tokens[None],
                          state.crossfade_samples[None], state.chunk_index)
    audio, new = self.generate_chunks(
        batched, None if emb is None else emb[None], seed,
        **sampling_overrides)
    return audio[0], StreamState(new.context_tokens[0],
                                 new.crossfade_samples[0], new.chunk_index)

  def init_states(self, batch: int) -> StreamState:
    """B independent streams advanced together by `generate_chunks`."""
    s = self.init_state()
    return StreamState(np.repeat(s.context_tokens[None], batch, 0),
                       np.repeat(s.crossfade_samples[None], batch, 0), 0)

  def generate_chunks(self, states: StreamState, styles_BxS=None,
                      seed: int | None = None, **sampling_overrides):
    """Advances B streams by one chunk in one batched decode.

    states: batched StreamState (context (B, F, K), crossfade (B, N, C)).
    styles_BxS: (B, S) mixed embeddings, or None for unconditioned streams.
    Returns (audio (B, chunk_samples, channels), new batched state).
    """
    g = self.geometry
    ctx = np.asarray(states.context_tokens)
    if ctx.ndim != 3:
      raise ValueError(f"batched state context must be (B, "
                       f"{g.context_frames}, {g.target_levels}), got "
                       f"{ctx.shape}; use init_states(batch)")
    for i in range(ctx.shape[0]):
      check_state(StreamState(ctx[i], states.crossfade_samples[i],
                              states.chunk_index), g)
    new_codes = self.sample_codes(ctx, styles_BxS, seed, states.chunk_index,
                                  **sampling_overrides)
    return self._render(states, new_codes)

  def sample_codes(self, context_BxFxK: np.ndarray, styles_BxS=None,
                   seed: int | None = None, chunk_index: int = 0,
                   noise=None, with_log_probs: bool = False,
                   **sampling_overrides):
    """The decode alone: contexts (B, F, K) -> the next chunk's codes
    int32 (B, C, K), keyed by PRNGKey(seed + chunk_index) (no audio).

    noise: coupling noise (B, C, K, D) (`coupling.draw_noise`): coupled
    sampling, the chunk a deterministic function of (context, style,
    noise); seed and chunk_index are then unused. with_log_probs (coupled
    only): -> (codes, log p (B, C, K, V) f32), each token's distribution
    over its level's codes (`generate_tokens`)."""
    g = self.geometry
    ctx = np.asarray(context_BxFxK)
    b = ctx.shape[0]
    sampling = self.sampling._replace(**sampling_overrides)
    if seed is None:
      seed = int(np.random.randint(0, 2**31 - 1))
    style_ids = None
    if styles_BxS is not None:
      emb = np.asarray(styles_BxS, np.float32)
      if emb.shape != (b, g.style_embed_dim) or not np.isfinite(emb).all():
        raise ValueError(f"styles must be finite ({b}, {g.style_embed_dim}) "
                         f"embeddings, got {emb.shape}")
      style_ids = mixing.style_tokens(self.style_model, g, emb)
    pos = build_encoder_inputs(g, ctx, style_ids)
    neg = build_encoder_inputs(g, ctx, None)
    key = jax.random.PRNGKey(int(seed) + int(chunk_index))
    use_cfg = style_ids is not None and sampling.guidance_weight > 0
    out = generate_tokens(
        self.cfg, self.params, pos, neg if use_cfg else None, key, sampling,
        noise=noise, flow_books=None if noise is None else self.flow_books,
        with_log_probs=with_log_probs)
    ids, logp = out if with_log_probs else (out, None)
    ids = np.asarray(ids)
    # v1 folds ids sampled outside their level's range; count them instead
    # of warning every chunk (a diagnostic of teacher quality).
    self.stray_tokens += g.count_stray_ids(ids)
    codes = g.ids_to_codec(ids, safe=False, warn=False).astype(np.int32)
    return (codes, np.asarray(logp)) if with_log_probs else codes

  def _render(self, states: StreamState, new_BxCxK: np.ndarray):
    """Codec-decodes [lead frame(s), chunk] and crossfades onto the stream."""
    g = self.geometry
    xf_frames, n = g.crossfade_frames, g.crossfade_samples
    lead = np.maximum(states.context_tokens[:, -xf_frames:], 0)  # cold: 0
    audio = self.codec.decode(np.concatenate([lead, new_BxCxK], axis=1))
    out = audio[:, :g.chunk_samples].copy()
    out[:, :n] = (out[:, :n] * self._ramp[None, :, None]
                  + states.crossfade_samples * self._ramp[None, ::-1, None])
    context = np.concatenate([states.context_tokens, new_BxCxK.astype(
        np.int32)], axis=1)[:, -g.context_frames:]
    new = StreamState(context_tokens=context,
                      crossfade_samples=audio[:, -n:].astype(np.float32),
                      chunk_index=states.chunk_index + 1)
    return out.astype(np.float32), new
