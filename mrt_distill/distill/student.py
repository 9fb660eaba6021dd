"""The one-step student: a consistency model over a chunk of codec latents.

The student writes a whole chunk (C frames x D latent) in one call, given the
coarse context tokens and the style. Its backbone is the teacher's own
encoder and temporal stack (same parameter paths, weights copied from the
teacher and frozen), adapted with LoRA on every attention and MLP kernel;
small new heads map noisy latents and the noise level in and clean latents
out (Song et al. 2023, "Consistency Models"):

  f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, sigma)

One step from pure noise: x0 = f(sigma_max z, sigma_max). k steps re-noise
x0 to a smaller sigma and denoise again.

Coupled (`StudentConfig.coupled`, the default of the shipped configs): the
student also receives the coupling noise z (B, C, K, D) that made the
teacher's chunk (mrt_distill/coupling.py) through a `noise_in` head, and its
one-step input is x = sigma_max z[:, :, 0] (the level-0 slice, already in
latent space). One step then maps the very noise the teacher sampled with
to the chunk the teacher wrote from it: a function, not an average. k > 1
steps: step 1 as above; each later step re-noises x0 to a lower sigma with
fresh noise and denoises it with the same z (the consistency terms train
f(x0 + sigma n, sigma | z) towards the same teacher chunk).

Token head (`StudentConfig.token_head`, coupled only): instead of regressing
latents, the student writes, in the same one pass, logits over each
(frame, level)'s codes, trained by cross-entropy to the teacher's coupled
tokens; its chunk is then picked by the very flow map the teacher samples
with (`coupling.flow_map` of the student's distribution and the same z) and
summed into codec latents. Cross-entropy's optimum is a distribution, not a
mean: where the student cannot tell the teacher's token from z it still
*samples* a sharp code, so its chunks keep hits and notes. One step only.

Recurrent pick (`StudentConfig.token_feedback`): a student that picks every
token from the trunk's logits alone picks them independently where it
cannot read the teacher's choice from z: frame i apart from frame i-1 (it
changes code more often than the teacher, which writes frame i knowing
frame i-1: more onsets, fewer held notes), and RVQ level q apart from the
levels < q that it refines. With feedback the trunk still runs once per
chunk; a small head then picks the tokens in the teacher's order, frame by
frame and level by level: (frame i, level q)'s logits = token_out(h_i +
embeddings of frame i-1's codes and of frame i's codes on levels < q, then
an MLP) + a learned per-level bonus for repeating frame i-1's code, picked
with that token's noise by the same flow map (`recurrent_codes`: C steps of
K small matmuls each, inside the same jitted call). Trained teacher-forced
(every token reads the teacher's codes before it), so training stays one
parallel pass; where the student's picks equal the teacher's (the same
flow map, the same z), serving reads exactly what training read.

Cached streaming context: the encoder runs on each context chunk on its
own (chunk-local self-attention, positions local to the chunk), so a chunk's
encoder output and its cross-attention keys/values depend on that chunk
only and are computed once when it enters the window (serving relies on
this). The decoder learns where a chunk sits in the window from a learned
per-slot cross-attention bias (`cross_slot_bias`, H x (N + 1) for N context
chunks + the style segment), which is applied at attention time and so does
not invalidate cached keys.

Shapes: B batch, N context chunks, L tokens per context chunk (C frames x
context levels, frame-major), C chunk frames, D latent width, E style
embedding width, S style tokens, H heads, d model width.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mrt_distill import axes, coupling
from mrt_distill.distill.losses import NoiseSchedule
from mrt_distill.geometry import MASK_ID, Geometry
from mrt_distill.teacher.config import TeacherConfig
from mrt_distill.teacher.layers import Dense, RMSNorm
from mrt_distill.teacher.model import KV, Embed, Encoder, TemporalStack
from mrt_distill.teacher.system import context_frame_ids

# Top-level parameter scopes that are new in the student (trained in full);
# every other parameter comes from the teacher and is frozen, except LoRA.
HEAD_SCOPES = ("latent_in", "sigma_in", "sigma_hidden", "style_in",
               "latent_out", "cross_slot_bias", "noise_in", "token_out",
               "prev_in", "level_in", "prev_hidden", "prev_out",
               "repeat_logit", "state_decay", "state_out", "pick_blocks")
LORA_LEAVES = ("lora_a", "lora_b")


@dataclasses.dataclass(frozen=True)
class StudentConfig:
  """Everything that fixes the student's parameter shapes and numerics."""
  teacher: TeacherConfig
  lora_rank: int = 8
  sigma_features: int = 32  # Fourier features of log(sigma)
  # Std of the output head's initial kernel. 0: a fresh student is exactly
  # c_skip x; > 0: outputs depend on the noise from the first step, which
  # IMLE needs to tell its draws apart.
  head_init_scale: float = 0.0
  # Initial cross-attention bias of the style segment (the last slot of
  # `cross_slot_bias`): > 0 starts the decoder listening more to the style
  # than to the N x L context tokens (S style tokens against hundreds).
  style_bias_init: float = 0.0
  # Start `style_in` (the style embedding's projection onto the style
  # tokens) at zero, so a fresh student sees exactly the teacher's style
  # tokens; otherwise a random projection at about a tenth of their norm,
  # different for every seed.
  style_in_zero_init: bool = False
  noise: NoiseSchedule = NoiseSchedule()
  # Frames per student chunk; 0 = the teacher's chunk. Shorter chunks cut
  # the control delay (a control change is heard one chunk sooner) at the
  # cost of a shorter non-causal window per call (docs/serving.md).
  chunk_frames: int = 0
  # Coupled distillation: the student's input is the teacher's coupling
  # noise (see the module docstring and mrt_distill/coupling.py).
  coupled: bool = False
  # Coupled students only: logits over codes + the coupled flow pick, instead
  # of a latent regression head (see the module docstring).
  token_head: bool = False
  # Token heads only: each frame's code logits also read the codes picked
  # for the previous frame (the frame-recurrent pick; see the module
  # docstring). False: every frame is picked from the trunk's logits alone.
  token_feedback: bool = False
  # Token heads only: the temperature the head picks its codes at, as the
  # student is shipped (the serving control `Controls.token_temperature`
  # multiplies it). Training never picks (it is teacher-forced), so this is
  # a property of playing the student, measured after training: a
  # recurrent pick at 1 over-trusts its own previous picks and, over
  # minutes, settles into sustained noise (docs/distillation.md).
  pick_temperature: float = 1.0
  # token_feedback only: each frame's pick also reads a decaying sum of the
  # embeddings of every frame picked before it in the chunk (a linear
  # recurrence, s_i = a * s_(i-1) + e_(i-1), per-dimension decay a
  # learned), not only frame i-1's: the teacher's distribution for a frame
  # depends on all of them. Teacher-forced in training; carried through
  # the pick's scan when serving.
  frame_state: bool = False
  # token_feedback only: residual MLP blocks the pick's summed input goes
  # through before the logits (1: prev_hidden/prev_out; more: the blocks of
  # `pick_blocks` after it, each started at zero so a fresh block adds
  # nothing). The teacher's level-q distribution depends on the codes
  # below it non-linearly; one block may be too little.
  head_layers: int = 1

  def __post_init__(self):
    t = self.pick_temperature
    if (isinstance(t, bool) or not isinstance(t, (int, float))
        or not math.isfinite(t) or t <= 0):
      raise ValueError(f"student.pick_temperature must be a number > 0, got "
                       f"{t!r} (1 = the head's logits as trained)")
    if self.token_head and not self.coupled:
      raise ValueError("student.token_head=True needs student.coupled=True "
                       "(its codes are picked with the coupling noise)")
    if self.token_feedback and not self.token_head:
      raise ValueError("student.token_feedback=True needs "
                       "student.token_head=True (it feeds picked codes back); "
                       "for a latent head set "
                       "--config.student.token_feedback=False too")
    if self.frame_state and not self.token_feedback:
      raise ValueError("student.frame_state=True needs "
                       "student.token_feedback=True (it sums the picked "
                       "frames the recurrent pick feeds back)")
    n = self.head_layers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
      raise ValueError(f"student.head_layers must be a whole number >= 1, "
                       f"got {n!r}: set e.g. --config.student.head_layers=1")
    if n > 1 and not self.token_feedback:
      raise ValueError("student.head_layers > 1 needs "
                       "student.token_feedback=True (the blocks are the "
                       "recurrent pick's); set --config.student.head_layers=1")
    if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
      raise ValueError(f"lora_rank must be an int >= 1, got "
                       f"{self.lora_rank!r}")
    g = self.teacher.geometry
    f = self.chunk_frames
    if f and (not isinstance(f, int) or f < g.crossfade_frames
              or g.chunk_frames % f or g.context_frames % f):
      divisors = [d for d in range(max(1, g.crossfade_frames),
                                   g.chunk_frames + 1)
                  if g.chunk_frames % d == 0 and g.context_frames % d == 0]
      raise ValueError(
          f"student chunk_frames {f!r} must divide the teacher's chunk "
          f"({g.chunk_frames} frames) and context ({g.context_frames} "
          f"frames): use one of {divisors} (0 = the teacher's chunk)")

  @property
  def geometry(self) -> Geometry:
    """The teacher's geometry with the student's chunk length."""
    g = self.teacher.geometry
    if not self.chunk_frames or self.chunk_frames == g.chunk_frames:
      return g
    return g.replace(name=f"{g.name}-c{self.chunk_frames}",
                     chunk_frames=self.chunk_frames)

  @property
  def backbone(self) -> TeacherConfig:
    """The teacher's architecture with LoRA adapters and no dropout."""
    return self.teacher.replace(lora_rank=self.lora_rank, dropout_rate=0.0,
                                depth_dropout_rate=0.0)

  @property
  def context_chunks(self) -> int:
    g = self.geometry
    if g.context_frames % g.chunk_frames:
      raise ValueError(
          f"geometry {g.name!r}: context_frames {g.context_frames} is not a "
          f"whole number of chunks of {g.chunk_frames} frames; the cached "
          f"context needs whole chunks")
    return g.context_frames // g.chunk_frames

  @property
  def chunk_tokens(self) -> int:
    """L: encoder tokens per context chunk."""
    return self.geometry.chunk_frames * self.geometry.context_levels


class _Stacks(nn.Module):
  """The teacher's inner `decoder` scope, temporal stack only."""
  cfg: TeacherConfig

  def setup(self):
    self.temporal_decoder = TemporalStack(self.cfg)


class _Decoder(nn.Module):
  """The teacher's outer `decoder` scope: stacks + decoder_norm."""
  cfg: TeacherConfig

  def setup(self):
    self.decoder = _Stacks(self.cfg)
    self.decoder_norm = RMSNorm(self.cfg.dtype)


class _PickBlocks(nn.Module):
  """`blocks` more residual MLP blocks of the recurrent pick (..., d) ->
  (..., d) (StudentConfig.head_layers - 1), each output zero-initialised:
  a fresh block adds nothing."""
  width: int
  blocks: int

  @nn.compact
  def __call__(self, u):
    for i in range(self.blocks):
      hidden = Dense(self.width, (axes.EMBED, axes.MLP), jnp.float32,
                     name=f"hidden_{i}")
      out = Dense(self.width, (axes.MLP, axes.EMBED), jnp.float32,
                  kernel_init=nn.initializers.zeros, name=f"out_{i}")
      u = u + out(nn.silu(hidden(u)))
    return u


class _LevelLogits(nn.Module):
  """The token head's output layer: d -> K x V code logits, one
  (kernel, bias) pair shaped like an `nn.Dense(K * V)` (kernel (d, K * V),
  bias (K * V,)), so files stay readable, but able to compute one level's
  logits alone (the recurrent pick needs one level at a time)."""
  width: int
  levels: int
  codes: int

  def setup(self):
    n = self.levels * self.codes
    self.kernel = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.zeros, (axes.EMBED, axes.VOCAB)), (self.width, n),
        jnp.float32)
    self.bias = self.param("bias", nn.with_logical_partitioning(
        nn.initializers.zeros, (axes.VOCAB,)), (n,), jnp.float32)

  def __call__(self, x_BxFxd):
    """Every level's logits from one input -> (B, F, K, V)."""
    y = jnp.dot(x_BxFxd, self.kernel)
    y = y + self.bias.reshape((1,) * (y.ndim - 1) + (-1,))
    return y.reshape(*x_BxFxd.shape[:-1], self.levels, self.codes)

  def level(self, u_Bxd, q: int):
    """One level's logits (B, V) from its input (B, d)."""
    lo = q * self.codes
    return (jnp.dot(u_Bxd, self.kernel[:, lo:lo + self.codes])
            + self.bias[None, lo:lo + self.codes])


@dataclasses.dataclass(frozen=True, eq=False)
class TokenBooks:
  """What a token-head student needs to turn code logits into latents: the
  flow codebooks (coupling space), the codec's codebooks and the latent
  scaler. Compared by identity (it holds arrays)."""
  flow: np.ndarray  # (K, V, D)
  codec: np.ndarray  # (K, V, D)
  scaler: "LatentScaler"

  @classmethod
  def for_codec(cls, codec, geometry: Geometry,
                scaler: "LatentScaler") -> "TokenBooks":
    k = geometry.target_levels
    return cls(coupling.flow_codebooks(codec.codebooks, k),
               np.asarray(codec.codebooks, np.float32)[:k], scaler)

  def codes(self, logits_BxCxKxV, z_BxCxKxD):
    """The coupled pick of each (frame, level) -> codes (B, C, K) int32."""
    b, c, k, v = logits_BxCxKxV.shape
    logp = jax.nn.log_softmax(logits_BxCxKxV.astype(jnp.float32), axis=-1)
    flow = jnp.asarray(self.flow)
    return jnp.stack([coupling.flow_map(
        logp[:, :, q].reshape(b * c, v),
        z_BxCxKxD[:, :, q].reshape(b * c, -1), flow[q]).reshape(b, c)
        for q in range(k)], axis=-1)

  def pick(self, logits_BxV, z_BxD, level: int):
    """The coupled pick of one level's tokens -> codes (B,) int32 (what
    `codes` does for every level at once)."""
    logp = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
    return coupling.flow_map(logp, z_BxD, jnp.asarray(self.flow)[level])

  def latents(self, codes_BxCxK):
    """Codes -> the student's scaled latents (B, C, D) (sum of codewords)."""
    books = jnp.asarray(self.codec)
    lat = sum(books[q][codes_BxCxK[..., q]] for q in range(books.shape[0]))
    return self.scaler.to_student(lat)


class StudentModel(nn.Module):
  """f(x, sigma | context, style): see the module docstring. `books`: a
  token-head student's `TokenBooks` (None otherwise)."""
  cfg: StudentConfig
  books: Any = None

  def setup(self):
    c, tc = self.cfg, self.cfg.backbone
    g = c.geometry
    self.token_embedder = Embed(tc.vocab_rows, tc.d_model, tc.dtype)
    self.encoder = Encoder(tc)
    self.decoder = _Decoder(tc)
    d = tc.d_model
    self.latent_in = Dense(d, (axes.LATENT, axes.EMBED), jnp.float32)
    if c.coupled:  # all K levels' noise of a frame -> the model width
      self.noise_in = Dense(d, (axes.LATENT, axes.EMBED), jnp.float32)
    self.sigma_in = Dense(d, (axes.LATENT, axes.MLP), jnp.float32)
    self.sigma_hidden = Dense(d, (axes.MLP, axes.EMBED), jnp.float32)
    self.style_in = Dense(d, (axes.LATENT, axes.EMBED), jnp.float32,
                          kernel_init=(nn.initializers.zeros
                                       if c.style_in_zero_init else None))
    # Zero output head by default: at init f = c_skip x.
    init = (nn.initializers.normal(c.head_init_scale) if c.head_init_scale
            else nn.initializers.zeros)
    self.latent_out = nn.Dense(
        g.codec_latent_dim, use_bias=False, dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(init,
                                                 (axes.EMBED, axes.LATENT)))
    def slot_bias_init(key, shape, dtype):
      del key  # deterministic: zeros, and the style slot's start value
      return jnp.zeros(shape, dtype).at[:, -1].set(c.style_bias_init)

    if c.token_head:  # logits over every level's codes, per frame
      self.token_out = _LevelLogits(d, g.target_levels, g.codebook_size)
    if c.token_feedback:  # the previous frame's picked codes -> the width
      # One row per (level, code), plus each level's "no previous frame"
      # row (the chunk's first frame).
      self.prev_in = nn.Embed(
          g.target_levels * (g.codebook_size + 1), d, dtype=jnp.float32,
          embedding_init=nn.with_logical_partitioning(
              nn.initializers.normal(0.02), (axes.VOCAB, axes.EMBED)))
      # Level q of a frame also reads the frame's own levels < q (RVQ level
      # q refines what levels < q wrote; picked apart, they clash).
      self.level_in = nn.Embed(
          g.target_levels * (g.codebook_size + 1), d, dtype=jnp.float32,
          embedding_init=nn.with_logical_partitioning(
              nn.initializers.normal(0.02), (axes.VOCAB, axes.EMBED)))
      self.prev_hidden = Dense(d, (axes.EMBED, axes.MLP), jnp.float32)
      # Zero: a fresh head adds the embedding and nothing else.
      self.prev_out = Dense(d, (axes.MLP, axes.EMBED), jnp.float32,
                            kernel_init=nn.initializers.zeros)
      # head_layers=1: no blocks, no parameters (the tree is unchanged).
      self.pick_blocks = _PickBlocks(d, c.head_layers - 1)
      if c.frame_state:
        # Decay 0.73 at the start (sigmoid(1)); zero output: a fresh
        # state adds nothing.
        self.state_decay = self.param(
            "state_decay", nn.with_logical_partitioning(
                nn.initializers.ones, (axes.EMBED,)), (d,), jnp.float32)
        self.state_out = Dense(d, (axes.EMBED, axes.MLP), jnp.float32,
                               kernel_init=nn.initializers.zeros)
      # Per level, a logit bonus for repeating the previous frame's code
      # (a held note, a sustained texture): the teacher repeats level-0
      # codes 2-3x as often as a student that picks frames independently.
      self.repeat_logit = self.param(
          "repeat_logit", nn.with_logical_partitioning(
              nn.initializers.zeros, (None,)), (g.target_levels,),
          jnp.float32)
    self.cross_slot_bias = self.param(
        "cross_slot_bias", nn.with_logical_partitioning(
            slot_bias_init, (axes.HEADS, axes.RELPOS)),
        (tc.num_heads, c.context_chunks + 1), jnp.float32)

  # ---- the cached context -------------------------------------------------
  def encode_chunks(self, ctx_ids_BxNxL):
    """Each context chunk on its own -> encoded (B, N, L, d)."""
    b, n, l = ctx_ids_BxNxL.shape
    ids = ctx_ids_BxNxL.reshape(b * n, l)
    enc = self.encoder(self.token_embedder(ids), ids)
    return enc.reshape(b, n, l, -1)

  def encode_style(self, style_ids_BxS, style_emb_BxE):
    """Style tokens (as the teacher sees them) plus a projection of the
    continuous embedding, so mixes between token boundaries still move the
    output -> (B, S, d)."""
    x = self.token_embedder(style_ids_BxS).astype(jnp.float32)
    x = x + self.style_in(style_emb_BxE)[:, None, :]
    return self.encoder(x.astype(self.cfg.backbone.dtype), style_ids_BxS)

  def cross_kv(self, encoded_BxLxD) -> list[KV]:
    """Per-layer cross-attention keys/values; position-wise, so the KV of a
    concatenation is the concatenation of the KVs (what the cache uses)."""
    return self.decoder.decoder.temporal_decoder.cross_kv(encoded_BxLxD)

  def cross_bias(self):
    """(1, H, 1, N*L + S): the learned per-slot bias, oldest chunk first."""
    c = self.cfg
    slots = np.concatenate([np.repeat(np.arange(c.context_chunks),
                                      c.chunk_tokens),
                            np.full(c.geometry.style_levels, c.context_chunks)])
    return self.cross_slot_bias[:, slots][None, :, None, :]

  # ---- the denoiser --------------------------------------------------------
  def sigma_embedding(self, sigma_B):
    """Fourier features of log(sigma) -> MLP -> (B, d)."""
    half = self.cfg.sigma_features // 2
    freqs = jnp.exp(jnp.linspace(0.0, jnp.log(100.0), half))
    ang = 0.25 * jnp.log(sigma_B)[:, None] * freqs[None, :]
    feats = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)
    return self.sigma_hidden(nn.silu(self.sigma_in(feats)))

  def denoise(self, x_BxCxD, sigma_B, cross: list[KV], z_BxCxKxD=None,
              seam_BxK=None):
    """The consistency function f(x, sigma | z) given cached cross KVs;
    z: the coupling noise, required iff the student is coupled. A token
    head returns the latents of its coupled pick (token_feedback: reading
    seam, the codes of the frame before the chunk, `seam_codes`)."""
    if self.cfg.token_head:
      if self.books is None:
        raise ValueError("a token-head student needs its TokenBooks: "
                         "StudentModel(cfg, books=TokenBooks.for_codec(...))")
      if self.cfg.token_feedback:
        h = self.token_features(x_BxCxD, sigma_B, cross, z_BxCxKxD)
        if seam_BxK is None:
          raise ValueError("a token_feedback student's first frame reads the "
                           "frame before the chunk: pass seam_BxK "
                           "(seam_codes of the context ids)")
        return self.books.latents(self.recurrent_codes(h[None], z_BxCxKxD,
                                                       seam_BxK))
      logits = self.token_logits(x_BxCxD, sigma_B, cross, z_BxCxKxD)
      return self.books.latents(self.books.codes(logits, z_BxCxKxD))
    h = self._trunk(x_BxCxD, sigma_B, cross, z_BxCxKxD)
    noise = self.cfg.noise
    out = self.latent_out(h)
    return (noise.c_skip(sigma_B)[:, None, None] * x_BxCxD
            + noise.c_out(sigma_B)[:, None, None] * out)

  def token_logits(self, x_BxCxD, sigma_B, cross: list[KV], z_BxCxKxD,
                   codes_BxCxK=None, seam_BxK=None):
    """A token head's code logits (B, C, K, V). codes: with token_feedback,
    the chunk's codes (teacher-forced in training: the teacher's); the
    logits of (frame i, level q) read frame i-1's codes and frame i's codes
    on levels < q, never their own. seam: with token_feedback, the codes of
    the frame before the chunk that frame 0 reads (`seam_codes`)."""
    if self.cfg.token_feedback and (codes_BxCxK is None or seam_BxK is None):
      raise ValueError("a token_feedback student's logits read the previous "
                       "codes: pass codes_BxCxK (teacher forcing) and "
                       "seam_BxK (seam_codes of the context) or pick with "
                       "recurrent_codes")
    h = self._trunk(x_BxCxD, sigma_B, cross, z_BxCxKxD)
    if not self.cfg.token_feedback:
      return self.frame_logits(h)
    return self.frame_logits(h, previous_frames(codes_BxCxK, seam_BxK),
                             codes_BxCxK.astype(jnp.int32))

  def token_features(self, x_BxCxD, sigma_B, cross: list[KV], z_BxCxKxD):
    """The trunk's per-frame features (B, C, d) that `frame_logits` reads
    (the one network pass of a token_feedback student)."""
    return self._trunk(x_BxCxD, sigma_B, cross, z_BxCxKxD)

  def frame_logits(self, h_BxFxd, prev_BxFxK=None, cur_BxFxK=None):
    """Code logits (B, F, K, V) of F frames from their trunk features and,
    with token_feedback, each frame's previous-frame codes (V = none) and
    its own codes, of which level q reads levels < q only."""
    g, c = self.cfg.geometry, self.cfg
    b, f = h_BxFxd.shape[:2]
    k, v = g.target_levels, g.codebook_size
    if not c.token_feedback:
      return self.token_out(h_BxFxd).reshape(b, f, k, v)
    offs = (v + 1) * jnp.arange(k)[None, None, :]
    e_prev = self.prev_in(prev_BxFxK + offs).sum(axis=-2)  # (B, F, d)
    base = h_BxFxd + e_prev
    if c.frame_state:  # teacher-forced: the recurrence over the F frames
      s, states = jnp.zeros_like(e_prev[:, 0]), []
      for i in range(f):
        s = self._next_state(s, e_prev[:, i])
        states.append(s)
      base = base + self.state_out(jnp.stack(states, axis=1))
    e = self.level_in(cur_BxFxK + offs)  # (B, F, K, d)
    # Level q gets the sum over levels < q (shifted, so its own code is
    # never added, not even to be subtracted again).
    below = jnp.cumsum(jnp.concatenate([jnp.zeros_like(e[:, :, :1]),
                                        e[:, :, :-1]], axis=2), axis=2)
    # Every level's logits from every level's input, then level q's from
    # its own u_q (the diagonal). Computing only the diagonal (an einsum)
    # sums in another order: the README run then no longer reproduces the
    # shipped student's weights bit for bit, so training keeps this form.
    every = self.token_out(self._pick_input(base[:, :, None, :] + below))
    logits = every[:, :, jnp.arange(k), jnp.arange(k)]  # (B, F, K, V)
    # one_hot of the "none" id v is all zeros.
    return logits + (self.repeat_logit[None, None, :, None]
                     * jax.nn.one_hot(prev_BxFxK, v))

  def _next_state(self, s_Bxd, e_prev_Bxd):
    """The frame state after reading frame i-1's embedding (frame_state)."""
    return (jax.nn.sigmoid(self.state_decay)[None, :] * s_Bxd
            + e_prev_Bxd)

  def _pick_input(self, u):
    """The feedback head's residual MLP blocks on a level's summed input
    (..., d) -> (..., d)."""
    u = u + self.prev_out(nn.silu(self.prev_hidden(u)))
    return self.pick_blocks(u)

  def recurrent_codes(self, h_GxBxCxd, z_BxCxKxD, seam_BxK, cfg_weight=0.0,
                      temperature=1.0):
    """The recurrent pick of a token_feedback student -> codes (B, C, K)
    int32.

    Frames in order (a scan of C small steps after the one trunk pass),
    and inside a frame its levels in order: (frame i, level q)'s logits
    read frame i-1's picked codes (frame 0: seam, the codes of the frame
    before the chunk, `seam_codes`) and frame i's levels < q, are guided and
    tempered, and are picked with that token's coupling noise by the flow
    map, as the teacher picks its tokens. h: G = 1 (unguided) or 2
    ([conditioned, unconditioned] features: (1 + w) cond - w uncond on the
    logits, both halves reading the same picks)."""
    if self.books is None:
      raise ValueError("a token-head student needs its TokenBooks: "
                       "StudentModel(cfg, books=TokenBooks.for_codec(...))")
    g = self.cfg.geometry
    k, v = g.target_levels, g.codebook_size
    groups, b, c = h_GxBxCxd.shape[:3]
    h = h_GxBxCxd.reshape(groups * b, c, -1)
    offs = (v + 1) * jnp.arange(k)

    def frame(carry, i):
      # frame_logits for one frame, one level at a time: level q's input
      # is built from the picks so far and only its own logits computed.
      prev_BxK, state = carry
      h_i = jax.lax.dynamic_index_in_dim(h, i, axis=1, keepdims=False)
      z_i = jax.lax.dynamic_index_in_dim(z_BxCxKxD, i, axis=1,
                                         keepdims=False)  # (B, K, D)
      prev = jnp.tile(prev_BxK, (groups, 1))  # (G*B, K)
      e_prev = self.prev_in(prev + offs[None]).sum(axis=-2)  # (G*B, d)
      u = h_i + e_prev
      if self.cfg.frame_state:
        state = self._next_state(state, e_prev)
        u = u + self.state_out(state)
      codes = []
      for q in range(k):
        lg = self.token_out.level(self._pick_input(u), q)
        lg = lg + self.repeat_logit[q] * jax.nn.one_hot(prev[:, q], v)
        lg = lg.reshape(groups, b, v)
        lg = lg[0] if groups == 1 else ((1 + cfg_weight) * lg[0]
                                        - cfg_weight * lg[1])
        codes.append(self.books.pick(lg / temperature, z_i[:, q], q))
        u = u + self.level_in(jnp.tile(codes[-1], groups) + offs[q])
      cur = jnp.stack(codes, axis=-1)
      return (cur, state), cur

    state0 = jnp.zeros((groups * b, h.shape[-1]), jnp.float32)
    _, codes_CxBxK = jax.lax.scan(
        frame, (jnp.asarray(seam_BxK, jnp.int32), state0), jnp.arange(c))
    return codes_CxBxK.transpose(1, 0, 2)

  def _trunk(self, x_BxCxD, sigma_B, cross: list[KV], z_BxCxKxD):
    """Heads in, the temporal stack, the final norm -> (B, C, d) f32."""
    noise = self.cfg.noise
    h = self.latent_in(x_BxCxD * noise.c_in(sigma_B)[:, None, None])
    h = h + self.sigma_embedding(sigma_B)[:, None, :]
    if self.cfg.coupled:
      if z_BxCxKxD is None:
        raise ValueError("a coupled student needs its coupling noise z "
                         "(B, C, K, D): draw it with coupling.draw_noise")
      b, c = z_BxCxKxD.shape[:2]
      h = h + self.noise_in(z_BxCxKxD.reshape(b, c, -1))
    elif z_BxCxKxD is not None:
      raise ValueError("coupling noise given to an uncoupled student "
                       "(student.coupled=False): it would be ignored")
    h = self.decoder.decoder.temporal_decoder(
        h, cross, causal=False, cross_bias=self.cross_bias())
    return self.decoder.decoder_norm(h).astype(jnp.float32)

  def context_kv(self, ctx_ids_BxNxL, style_ids_BxS, style_emb_BxE):
    """All cross KVs for one window: N chunks then style, per layer."""
    b, n, l = ctx_ids_BxNxL.shape
    enc = self.encode_chunks(ctx_ids_BxNxL).reshape(b, n * l, -1)
    enc = jnp.concatenate([enc, self.encode_style(style_ids_BxS,
                                                  style_emb_BxE)], axis=1)
    return self.cross_kv(enc)

  def __call__(self, ctx_ids_BxNxL, style_ids_BxS, style_emb_BxE, x_BxCxD,
               sigma_B, z_BxCxKxD=None, codes_BxCxK=None):
    cross = self.context_kv(ctx_ids_BxNxL, style_ids_BxS, style_emb_BxE)
    if self.cfg.token_head:  # (init needs no codebooks)
      seam = (seam_codes(self.cfg.geometry, ctx_ids_BxNxL)
              if self.cfg.token_feedback else None)
      return self.token_logits(x_BxCxD, sigma_B, cross, z_BxCxKxD,
                               codes_BxCxK, seam)
    return self.denoise(x_BxCxD, sigma_B, cross, z_BxCxKxD)


# ---- parameters ----------------------------------------------------------------
def _dummy_inputs(cfg: StudentConfig):
  g = cfg.geometry
  return (jnp.full((1, cfg.context_chunks, cfg.chunk_tokens), MASK_ID,
                   jnp.int32),
          jnp.full((1, g.style_levels), MASK_ID, jnp.int32),
          jnp.zeros((1, g.style_embed_dim), jnp.float32),
          jnp.zeros((1, g.chunk_frames, g.codec_latent_dim), jnp.float32),
          jnp.ones((1,), jnp.float32),
          (jnp.zeros(coupling.noise_shape(g, 1), jnp.float32) if cfg.coupled
           else None),
          (jnp.zeros((1, g.chunk_frames, g.target_levels), jnp.int32)
           if cfg.token_feedback else None))


def previous_frames(codes_BxCxK, seam_BxK):
  """Each frame's previous-frame codes (B, C, K): codes shifted one frame
  later, the first frame's = seam (`seam_codes`, the frame before the
  chunk). What a token_feedback head reads when trained on the teacher's
  codes (teacher forcing); serving feeds its own picks
  (`recurrent_codes`)."""
  first = jnp.asarray(seam_BxK, jnp.int32)[:, None]
  return jnp.concatenate([first, codes_BxCxK[:, :-1].astype(jnp.int32)],
                         axis=1)


def seam_codes(geometry: Geometry, ctx_ids_BxNxL):
  """The codes (B, K) int32 of the frame before a chunk, as the context
  holds them: the last context frame's coarse levels (context_levels);
  `codebook_size` ("none") on the finer levels, which the context does
  not keep, and on every level of an empty (MASK) frame, a cold start.

  What a token_feedback head's first frame reads in place of a previous
  frame, in training (from the rollout's context ids) and serving (from
  the ids the chunk step puts in its cache), so a chunk continues the one
  before it instead of starting afresh at every seam."""
  g = geometry
  b = ctx_ids_BxNxL.shape[0]
  last = jnp.asarray(ctx_ids_BxNxL)[:, -1, -g.context_levels:]
  codes = (last - g.codec_offset
           - g.codebook_size * jnp.arange(g.context_levels)[None, :])
  ok = (codes >= 0) & (codes < g.codebook_size)
  codes = jnp.where(ok, codes, g.codebook_size).astype(jnp.int32)
  return jnp.concatenate([codes, no_seam(g, b)[:, g.context_levels:]],
                         axis=1)


def no_seam(geometry: Geometry, batch: int):
  """`seam_codes` of a cold start: "none" (codebook_size) on every level."""
  return jnp.full((batch, geometry.target_levels), geometry.codebook_size,
                  jnp.int32)


def init_student_params(cfg: StudentConfig, rng: jax.Array):
  """Random student params (f32, unboxed); see `from_teacher` for the
  teacher-initialised backbone."""
  return nn.unbox(StudentModel(cfg).init(rng, *_dummy_inputs(cfg))["params"])


def student_partition_spec(cfg: StudentConfig):
  """Logical PartitionSpec tree of the student params."""
  boxed = jax.eval_shape(StudentModel(cfg).init, jax.random.key(0),
                         *_dummy_inputs(cfg))
  return nn.get_partition_spec(boxed["params"])


def is_trainable(path: tuple[str, ...]) -> bool:
  """LoRA factors and the new heads train; the teacher's weights do not."""
  return path[0] in HEAD_SCOPES or path[-1] in LORA_LEAVES


def split_params(params):
  """-> (trainable, frozen) nested dicts with disjoint leaves."""
  flat = traverse_util.flatten_dict(params)
  train = {k: v for k, v in flat.items() if is_trainable(k)}
  frozen = {k: v for k, v in flat.items() if not is_trainable(k)}
  return (traverse_util.unflatten_dict(train),
          traverse_util.unflatten_dict(frozen))


def merge_params(trainable, frozen):
  flat = dict(traverse_util.flatten_dict(frozen))
  flat.update(traverse_util.flatten_dict(trainable))
  return traverse_util.unflatten_dict(flat)


def from_teacher(cfg: StudentConfig, teacher_params, rng: jax.Array):
  """Student params whose frozen backbone equals the teacher's weights.

  Raises:
    ValueError: a backbone parameter is missing from the teacher or has
      another shape (a teacher of another config), naming the path.
  """
  student = traverse_util.flatten_dict(init_student_params(cfg, rng))
  teacher = traverse_util.flatten_dict(teacher_params)
  out = {}
  for path, value in student.items():
    if is_trainable(path):
      out[path] = value
      continue
    if path not in teacher:
      raise ValueError(
          f"teacher params lack {'/'.join(path)}: the student config's "
          f"teacher ({cfg.teacher.name!r}) is not the checkpoint's "
          f"architecture")
    t = teacher[path]
    if tuple(t.shape) != tuple(value.shape):
      raise ValueError(
          f"teacher param {'/'.join(path)} has shape {tuple(t.shape)}, the "
          f"student expects {tuple(value.shape)}: teacher config mismatch")
    # A copy: the train step donates its state, and the teacher (still
    # streaming rollouts) must keep its own buffers.
    out[path] = jnp.array(t, jnp.float32, copy=True)
  return traverse_util.unflatten_dict(out)


def count(tree) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


# ---- inputs --------------------------------------------------------------------
def context_ids(geometry: Geometry, context_BxFxK) -> np.ndarray:
  """Context codes (B, F, K>=context levels; -1 = no audio yet) ->
  encoder ids (B, N, L), chunk by chunk, frame-major inside a chunk, with
  the teacher's id layout (MASK for empty frames)."""
  g = geometry
  b, f = np.shape(context_BxFxK)[:2]
  if f % g.chunk_frames:
    raise ValueError(f"context of {f} frames is not a whole number of "
                     f"{g.chunk_frames}-frame chunks")
  ids = context_frame_ids(g, context_BxFxK)
  return ids.reshape(b, f // g.chunk_frames, -1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class LatentScaler:
  """Codec latents <-> the student's space: sigma_data (l - mean) / std, so
  every latent dimension has the spread the noise schedule assumes."""
  mean: np.ndarray  # (D,)
  std: np.ndarray  # (D,)
  sigma_data: float

  @classmethod
  def for_codec(cls, codec, sigma_data: float) -> "LatentScaler":
    stats = getattr(codec, "latent_stats", None)
    d = codec.codebooks.shape[-1]
    if stats is None:  # codecs without stats: the codebooks' own spread
      books = np.asarray(codec.codebooks, np.float32)
      scale = np.sqrt(np.sum(np.var(books, axis=1), axis=0))
      return cls(np.zeros(d, np.float32),
                 np.maximum(scale, 1e-3).astype(np.float32), sigma_data)
    return cls(np.asarray(stats["mean"], np.float32),
               np.maximum(np.asarray(stats["std"], np.float32), 1e-3),
               sigma_data)

  def _lift(self, v, x):
    # Explicit rank (the project runs with rank promotion = 'raise').
    return v.reshape((1,) * (x.ndim - 1) + (-1,))

  def to_student(self, latents):
    return (self.sigma_data * (latents - self._lift(self.mean, latents))
            / self._lift(self.std, latents))

  def to_codec(self, x):
    return (x * self._lift(self.std, x) / self.sigma_data
            + self._lift(self.mean, x))


def first_step_input(cfg: StudentConfig, key: jax.Array, batch: int,
                     z_BxCxKxD=None):
  """-> (x at sigma_max (B, C, D), coupling noise z or None).

  Uncoupled: x = sigma_max * N(0, I). Coupled: z is drawn from `key` when
  not given (serving draws its own; training passes the teacher's), and
  x = sigma_max * z's level-0 slice, so one step is a function of z alone.
  """
  g, sigma_max = cfg.geometry, cfg.noise.sigma_max
  if cfg.coupled:
    if z_BxCxKxD is None:
      z_BxCxKxD = coupling.draw_noise(key, g, batch)
    return sigma_max * coupling.student_latent_noise(z_BxCxKxD), z_BxCxKxD
  if z_BxCxKxD is not None:
    raise ValueError("coupling noise given to an uncoupled student")
  shape = (batch, g.chunk_frames, g.codec_latent_dim)
  return jax.random.normal(key, shape) * sigma_max, None


def sample(model: StudentModel, params, cross: list[KV], key: jax.Array,
           batch: int, steps, sigmas=None, z_BxCxKxD=None, seam_BxK=None):
  """k-step consistency sampling -> student-space latents (B, C, D).

  steps: number of network calls (1 = one step from pure noise). sigmas:
  the noise levels of steps 2..k (default: a geometric ladder from
  sigma_max/20 down). z: a coupled student's coupling noise (drawn from
  `key` when None). seam: a token_feedback student's `seam_codes` of the
  context. Pure function of its inputs: jit it with `steps` static.
  """
  cfg = model.cfg
  noise, g = cfg.noise, cfg.geometry
  shape = (batch, g.chunk_frames, g.codec_latent_dim)
  ladder = (sigmas if sigmas is not None else noise.sampling_ladder(steps))
  key, sub = jax.random.split(key)
  x, z = first_step_input(cfg, sub, batch, z_BxCxKxD)
  x0 = model.apply({"params": params}, x, jnp.full((batch,), noise.sigma_max),
                   cross, z, seam_BxK, method=StudentModel.denoise)
  if cfg.token_head:
    return x0  # a token head writes its chunk in one step
  for s in ladder[:steps - 1]:
    key, sub = jax.random.split(key)
    s_noise = jnp.sqrt(jnp.maximum(s * s - noise.sigma_min ** 2, 0.0))
    x = x0 + s_noise * jax.random.normal(sub, shape)
    x0 = model.apply({"params": params}, x, jnp.full((batch,), s), cross, z,
                     method=StudentModel.denoise)
  return x0
