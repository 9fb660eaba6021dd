"""The serving chunk step: one jitted call per chunk, cached context, donated
state, no recompiles when controls change.

  state = init_state(...)
  audio, state = chunk_step(params, state, controls, rng)

Cached streaming context: the student encodes every context chunk on its
own (see `distill/student.py`), so each chunk's cross-attention keys/values
are computed once, when the chunk enters the window, and shifted along while
it stays there. Per chunk the encoder runs on the new chunk (C x context
levels tokens) and the style tokens only, never on the whole window.

Controls are traced arrays, so changing them never recompiles:
  style_emb (B, E)  the (already mixed) style embedding; its style tokens are
                    computed inside the step with the style model's RVQ;
  cfg_weight ()     classifier-free guidance w: (1 + w) f(cond) - w f(uncond)
                    (one network pass when w == 0, via lax.cond);
  steps ()          student steps k in 1..max_steps (fixed-size loop, the
                    extra steps masked off);
  token_temperature ()
                    a token-head student's code logits are divided by it
                    times the student's own `pick_temperature` before its
                    coupled pick (1 = as shipped; below 1 sharpens its
                    distribution towards its modes);
  inject_audio (B, Sc, channels), inject_gain ()
                    audio injection (Magenta RT paper, section 4.2 and
                    appendix E): when gain > 0 the chunk that enters the
                    context window is the codec encoding of (the chunk's own
                    audio + gain * inject_audio), quantised to context
                    tokens, instead of the student's own latents. The played
                    audio never contains the injected audio; the model hears
                    it in its context and continues from it. At gain 0 a
                    lax.cond skips the encoder entirely.

Audio injection into the whole window (`inject_context`, a second jitted
function): the state keeps the last W = context samples of the student's own
decoded audio, so the host can re-encode any window chunks from (own audio +
gain * given audio) in one call. The streaming session uses it for "looper"
mode (the previous loop's input over the whole window) and for "free" mode
input that arrives after its chunk already entered the window.

Shapes: B streams, N context chunks, L tokens per chunk, H heads, Hd head
dim, C chunk frames, D latent width, E style width, X crossfade samples,
Sc chunk samples, W context samples.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill.codec.neural import rvq_encode_jnp
from mrt_distill.distill import student as S
from mrt_distill.geometry import MASK_ID
from mrt_distill.teacher.model import KV
from mrt_distill.teacher.system import equal_power_ramp


class StepState(NamedTuple):
  """Device state of B streams (donated to every step)."""
  cross_k: jax.Array  # (layers, B, N*L, H, Hd), oldest chunk first
  cross_v: jax.Array  # (layers, B, N*L, H, Hd)
  lead: jax.Array  # (B, crossfade_frames, D) codec latents of the last frames
  tail: jax.Array  # (B, X, channels) the previous chunk's crossfade tail
  index: jax.Array  # () int32, chunks produced so far
  # (B, W, channels) the student's own audio of the window's chunks (codec
  # decode of each chunk's latents, before crossfading), oldest first; what
  # injected audio is mixed into.
  ctx_audio: jax.Array
  # (B, K) int32 the codes of the window's last frame as its ids hold them
  # (`S.seam_codes`): what a token_feedback student's first frame reads.
  seam: jax.Array


class Controls(NamedTuple):
  style_emb: jax.Array  # (B, E) float32
  cfg_weight: jax.Array  # () float32
  steps: jax.Array  # () int32, 1..max_steps
  # (B, Sc, channels) float32, user audio at the new chunk's time (silence
  # where none arrived); any shape that broadcasts to it (zeros by default).
  inject_audio: jax.Array
  inject_gain: jax.Array  # () float32, 0 = no injection
  token_temperature: jax.Array  # () float32, x student.pick_temperature


def controls(style_emb, cfg_weight: float = 0.0, steps: int = 1,
             inject_audio=None, inject_gain: float = 0.0,
             token_temperature: float = 1.0) -> Controls:
  """Controls from host values; `inject_audio` None = silence (a (B, 1, 1)
  zero that `ChunkStepper.chunk_step` broadcasts to a whole chunk)."""
  emb = jnp.asarray(style_emb, jnp.float32)
  emb = emb if emb.ndim == 2 else emb[None]
  inj = (jnp.zeros((emb.shape[0], 1, 1), jnp.float32) if inject_audio is None
         else jnp.asarray(inject_audio, jnp.float32))
  return Controls(emb, jnp.asarray(cfg_weight, jnp.float32),
                  jnp.asarray(steps, jnp.int32), inj,
                  jnp.asarray(inject_gain, jnp.float32),
                  jnp.asarray(token_temperature, jnp.float32))


class ChunkStepper:
  """Builds `init_state`, the jitted `chunk_step` and `inject_context` for
  one student (model, geometry, chunk length); `compiles` counts traces of
  the chunk step, `context_compiles` those of `inject_context`."""

  # Frames of the previous chunk's audio the codec encoder sees on the left
  # of an injected chunk (the reference codec's encoder reaches ~3 frames).
  INJECT_LEFT_FRAMES = 4

  def __init__(self, model: S.StudentModel, codec, style_model,
               scaler: S.LatentScaler, max_steps: int = 4):
    self.model, self.codec, self.scaler = model, codec, scaler
    self.max_steps = int(max_steps)
    g = self.geometry = model.cfg.geometry
    self._codec_books = jnp.asarray(codec.codebooks[:g.target_levels],
                                    jnp.float32)
    self._style_books = jnp.asarray(style_model.codebooks[:g.style_levels],
                                    jnp.float32)
    ladders = np.zeros((self.max_steps, max(self.max_steps - 1, 1)),
                       np.float32)
    for k in range(2, self.max_steps + 1):
      ladders[k - 1, :k - 1] = model.cfg.noise.sampling_ladder(k)
    self._ladders = jnp.asarray(ladders)
    self._ramp = jnp.asarray(equal_power_ramp(g.crossfade_samples))
    self.can_inject = self._has_traceable_encoder(codec, g)
    self.compiles = 0
    self.context_compiles = 0
    self._step_jit = jax.jit(self._chunk_step, donate_argnums=(1,))
    self._context_jit = jax.jit(self._inject_context, donate_argnums=(1,))
    self._init_jit = jax.jit(self._init_state, static_argnums=(1,))
    self._window_jit = jax.jit(self._window_state)

  @staticmethod
  def _has_traceable_encoder(codec, g) -> bool:
    """Audio injection needs `codec.encode_latents_jnp`; without it the step
    is built without the injection branch (and refuses gain > 0)."""
    audio = jax.ShapeDtypeStruct((1, g.samples_per_frame, g.channels),
                                 jnp.float32)
    try:
      jax.eval_shape(codec.encode_latents_jnp, audio)
    except (AttributeError, NotImplementedError):
      return False
    return True

  def require_injection(self) -> None:
    """Raises ValueError when this stepper cannot inject audio."""
    if not self.can_inject:
      raise ValueError(
          f"audio injection needs a codec with a traceable encoder "
          f"(encode_latents_jnp); {type(self.codec).__name__} has none")

  # ---- pieces --------------------------------------------------------------
  def _apply(self, params, *args, method):
    return self.model.apply({"params": params}, *args, method=method)

  def style_ids(self, style_emb_BxE):
    """Style tokens inside the step: the style model's RVQ, in jnp."""
    g = self.geometry
    b = style_emb_BxE.shape[0]
    codes, _, _ = rvq_encode_jnp(style_emb_BxE, self._style_books)  # (Ls, B)
    lv = jnp.arange(g.style_levels, dtype=jnp.int32)[:, None]
    ids = g.style_offset + g.style_codebook_size * lv + codes
    return ids.T.reshape(b, g.style_levels).astype(jnp.int32)

  def chunk_kv(self, params, chunk_ids_BxL):
    """(layers, B, L, H, Hd) keys and values of one context chunk."""
    enc = self._apply(params, chunk_ids_BxL[:, None],
                      method=S.StudentModel.encode_chunks)[:, 0]
    kvs = self._apply(params, enc, method=S.StudentModel.cross_kv)
    return (jnp.stack([kv.k for kv in kvs]), jnp.stack([kv.v for kv in kvs]))

  def window_kv(self, params, ids_BxNxL):
    """(layers, B, N*L, H, Hd) keys and values of a whole context window,
    each chunk encoded on its own (as `chunk_kv`), in one call."""
    b, n, l = ids_BxNxL.shape
    enc = self._apply(params, ids_BxNxL, method=S.StudentModel.encode_chunks)
    kvs = self._apply(params, enc.reshape(b, n * l, -1),
                      method=S.StudentModel.cross_kv)
    return (jnp.stack([kv.k for kv in kvs]), jnp.stack([kv.v for kv in kvs]))

  def style_cross(self, params, cross_k, cross_v, style_ids, style_emb
                  ) -> list[KV]:
    """Per layer, the window's cached keys/values (layers, B, N*L, H, Hd)
    followed by those of a style (ids (B, S), embedding (B, E)): the cross
    KVs one denoiser pass reads."""
    enc = self._apply(params, style_ids, style_emb,
                      method=S.StudentModel.encode_style)
    kv_style = self._apply(params, enc, method=S.StudentModel.cross_kv)
    return [KV(jnp.concatenate([cross_k[i], kv.k], axis=1),
               jnp.concatenate([cross_v[i], kv.v], axis=1))
            for i, kv in enumerate(kv_style)]

  def sample_cached(self, params, cross_k, cross_v, style_ids, style_emb,
                    ctl: Controls, rng, seam, z=None):
    """`sample` for a context window's cached keys/values (layers, B, N*L,
    H, Hd) and a style: the guided pass adds only the unconditioned style's
    keys/values -> student latents (B, C, D). The chunk step's sampler, and
    `sample_window`'s."""
    cross = lambda ids, emb: self.style_cross(params, cross_k, cross_v, ids,
                                              emb)
    return self.sample(params, cross(style_ids, style_emb),
                       lambda: cross(jnp.full_like(style_ids, MASK_ID),
                                     jnp.zeros_like(style_emb)),
                       ctl, rng, seam, z)

  def sample_window(self, params, ctx_ids_BxNxL, style_ids, style_emb,
                    ctl: Controls, rng, z=None):
    """`sample_cached` for a whole window of ids (B, N, L), outside the
    chunk step's cache: the window encoded once, its first frame reading
    the window's last (the seam). For callers holding windows rather than a
    `StepState` (on-policy rollouts; the paired measurement, which passes
    the teacher's z)."""
    k, v = self.window_kv(params, ctx_ids_BxNxL)
    return self.sample_cached(params, k, v, style_ids, style_emb, ctl, rng,
                              S.seam_codes(self.geometry, ctx_ids_BxNxL), z)

  def window_state(self, params, ctx_ids_BxNxL) -> StepState:
    """The cold state with its whole context window replaced by the ids
    (B, N, L): every chunk's keys/values and the seam; the other fields
    keep their cold-start values (jitted, one compile per batch size)."""
    return self._window_jit(params, jnp.asarray(ctx_ids_BxNxL, jnp.int32))

  def _window_state(self, params, ids_BxNxL) -> StepState:
    k, v = self.window_kv(params, ids_BxNxL)
    return self._init_state(params, ids_BxNxL.shape[0])._replace(
        cross_k=k, cross_v=v, seam=S.seam_codes(self.geometry, ids_BxNxL))

  def context_ids(self, codes_BxCxK):
    """Codes (B, C, K >= context levels) -> context ids (B, C * levels)."""
    g = self.geometry
    b = codes_BxCxK.shape[0]
    lv = jnp.arange(g.context_levels, dtype=jnp.int32)
    return (g.codec_offset + g.codebook_size * lv[None, None, :]
            + codes_BxCxK[..., :g.context_levels]).reshape(b, -1)

  def audio_context_ids(self, audio_BxSxC):
    """Audio (B, F * spf, channels) -> context ids (B, F * levels): codec
    encoder, then the first context levels of its RVQ."""
    g = self.geometry
    lat = self.codec.encode_latents_jnp(audio_BxSxC)  # (B, F, D)
    b, f, d = lat.shape
    codes, _, _ = rvq_encode_jnp(lat.reshape(-1, d),
                                 self._codec_books[:g.context_levels])
    return self.context_ids(codes.T.reshape(b, f, g.context_levels))

  def init_state(self, params, batch: int = 1) -> StepState:
    """Cold start: every context chunk is an all-MASK chunk (jitted, one
    compile per batch size)."""
    return self._init_jit(params, int(batch))

  def _init_state(self, params, batch: int) -> StepState:
    g, c = self.geometry, self.model.cfg
    ids = jnp.full((batch, c.chunk_tokens), MASK_ID, jnp.int32)
    k, v = self.chunk_kv(params, ids)
    n = c.context_chunks
    return StepState(
        jnp.concatenate([k] * n, axis=2), jnp.concatenate([v] * n, axis=2),
        jnp.zeros((batch, g.crossfade_frames, g.codec_latent_dim)),
        jnp.zeros((batch, g.crossfade_samples, g.channels)),
        jnp.zeros((), jnp.int32),
        jnp.zeros((batch, g.context_samples, g.channels)),
        S.no_seam(g, batch))

  def denoise_guided(self, params, x, sigma, cross_c, cross_u, w, z=None,
                     temperature=1.0, seam=None):
    """(1 + w) f(x | style) - w f(x | no style); z: a coupled student's
    coupling noise (the same for both halves); seam: a token_feedback
    student's codes of the frame before the chunk (`S.seam_codes`).

    w == 0: one pass at batch B. w > 0: still one pass, at batch 2B (the
    conditioned and unconditioned halves side by side), so guidance adds
    work but no sequential network call. cross_u: the unconditioned cross
    KVs, or a function returning them (then only computed when w > 0).

    A token-head student is guided on its code logits, as the teacher is,
    divides them by `temperature` (traced) and then picks its codes with
    z."""
    model = self.model
    token = model.cfg.token_head
    if model.cfg.token_feedback:
      return self._recurrent_guided(params, x, sigma, cross_c, cross_u, w, z,
                                    temperature, seam)
    den = lambda xx, ss, cross, zz: self._apply(
        params, xx, ss, cross, zz, method=(S.StudentModel.token_logits
                                           if token else
                                           S.StudentModel.denoise))
    done = ((lambda out: model.books.latents(model.books.codes(
        out / temperature, z))) if token else (lambda out: out))

    def guided():
      both = self._both_halves(cross_c, cross_u)
      out = den(jnp.concatenate([x, x]), jnp.concatenate([sigma, sigma]),
                both, None if z is None else jnp.concatenate([z, z]))
      cond, uncond = jnp.split(out, 2)
      return done((1 + w) * cond - w * uncond)

    return jax.lax.cond(w > 0, guided,
                        lambda: done(den(x, sigma, cross_c, z)))

  @staticmethod
  def _both_halves(cross_c, cross_u) -> list[KV]:
    """The conditioned and unconditioned cross KVs side by side (batch 2B);
    cross_u may be a function returning them."""
    unc = cross_u() if callable(cross_u) else cross_u
    return [KV(jnp.concatenate([c.k, u.k]), jnp.concatenate([c.v, u.v]))
            for c, u in zip(cross_c, unc)]

  def _recurrent_guided(self, params, x, sigma, cross_c, cross_u, w, z,
                        temperature, seam):
    """`denoise_guided` of a token_feedback student: one trunk pass (2B
    when guided), then the frame-recurrent pick, where guidance and the
    temperature act on each frame's logits."""
    model = self.model
    feats = lambda xx, ss, cross, zz: self._apply(
        params, xx, ss, cross, zz, method=S.StudentModel.token_features)
    pick = lambda h_GxBxCxd, ww: model.books.latents(self._apply(
        params, h_GxBxCxd, z, seam, ww, temperature,
        method=S.StudentModel.recurrent_codes))

    def guided():
      both = self._both_halves(cross_c, cross_u)
      h = feats(jnp.concatenate([x, x]), jnp.concatenate([sigma, sigma]),
                both, jnp.concatenate([z, z]))
      return pick(jnp.stack(jnp.split(h, 2)), w)

    return jax.lax.cond(w > 0, guided,
                        lambda: pick(feats(x, sigma, cross_c, z)[None], 0.0))

  def sample(self, params, cross_c, cross_u, ctl: Controls, rng, seam=None,
             z=None):
    """k-step consistency sampling with traced k -> student latents.

    Steps 2..k run in a fori_loop with a traced trip count, so k = 1 costs
    one network pass and changing k never recompiles. A coupled student
    draws its coupling noise here from `rng` (no teacher at serve time)
    unless `z` (B, C, K, D) is given (tools/paired_fidelity.py passes the
    teacher's).
    """
    g, noise = self.geometry, self.model.cfg.noise
    b = ctl.style_emb.shape[0]
    shape = (b, g.chunk_frames, g.codec_latent_dim)
    x, z = S.first_step_input(self.model.cfg, jax.random.fold_in(rng, 0), b,
                              z)
    # The control is relative to the temperature the student ships with.
    temperature = ctl.token_temperature * self.model.cfg.pick_temperature
    x0 = self.denoise_guided(params, x, jnp.full((b,), noise.sigma_max),
                             cross_c, cross_u, ctl.cfg_weight, z,
                             temperature, seam)
    if self.model.cfg.token_head:
      return x0  # one step: the steps control does not apply
    steps = jnp.clip(ctl.steps, 1, self.max_steps)
    ladder = self._ladders[steps - 1]

    def body(i, x0):
      s = ladder[i - 1]
      s_noise = jnp.sqrt(jnp.maximum(s * s - noise.sigma_min ** 2, 0.0))
      xi = x0 + s_noise * jax.random.normal(jax.random.fold_in(rng, i), shape)
      return self.denoise_guided(params, xi, jnp.full((b,), s), cross_c,
                                 cross_u, ctl.cfg_weight, z)

    return jax.lax.fori_loop(1, steps, body, x0)

  # ---- the step --------------------------------------------------------------
  def chunk_step(self, params, state: StepState, ctl: Controls, rng):
    """One chunk for B streams -> (audio (B, Sc, channels), new state).

    `state` is donated. `ctl.inject_audio` is broadcast to (B, Sc, channels)
    here, outside jit, so the compiled step always sees one shape.
    """
    g = self.geometry
    b = ctl.style_emb.shape[0]
    want = (b, g.chunk_samples, g.channels)
    inj = jnp.asarray(ctl.inject_audio, jnp.float32)
    if inj.shape != want:
      try:
        inj = jnp.broadcast_to(inj, want)
      except ValueError:
        raise ValueError(
            f"inject_audio of shape {inj.shape}: expected {want} (streams, "
            f"chunk samples, channels) or a shape that broadcasts to it"
        ) from None
    if not self.can_inject and float(np.asarray(ctl.inject_gain)) > 0:
      self.require_injection()
    return self._step_jit(params, state, ctl._replace(inject_audio=inj), rng)

  def _chunk_step(self, params, state: StepState, ctl: Controls, rng):
    self.compiles += 1  # runs at trace time only
    g = self.geometry
    b = ctl.style_emb.shape[0]
    ids = self.style_ids(ctl.style_emb)
    x0 = self.sample_cached(params, state.cross_k, state.cross_v, ids,
                            ctl.style_emb, ctl, rng, state.seam)
    lat = self.scaler.to_codec(x0)  # (B, C, D) codec latents
    # Decode [lead frame(s), chunk]; audio[:, n:] is the chunk's own audio.
    audio = self.codec.decode_latents(jnp.concatenate([state.lead, lat],
                                                      axis=1))
    n = g.crossfade_samples
    own_audio = audio[:, n:]  # (B, Sc, channels)

    # The new chunk enters the context window: its tokens are the student's
    # own latents quantised, or (injection) the codec encoding of its audio
    # mixed with the user's. Encoded alone, then the cache shifts one chunk.
    def own_ids():
      codes, _, _ = rvq_encode_jnp(lat.reshape(-1, g.codec_latent_dim),
                                   self._codec_books)
      return self.context_ids(
          codes.T.reshape(b, g.chunk_frames, g.target_levels))

    def injected_ids():
      left = min(self.INJECT_LEFT_FRAMES, g.context_frames)
      left_s = left * g.samples_per_frame
      mix = jnp.concatenate([state.ctx_audio[:, -left_s:],
                             own_audio + ctl.inject_gain * ctl.inject_audio],
                            axis=1)
      return self.audio_context_ids(mix)[:, left * g.context_levels:]

    ctx = (jax.lax.cond(ctl.inject_gain > 0, injected_ids, own_ids)
           if self.can_inject else own_ids())
    k_new, v_new = self.chunk_kv(params, ctx)
    l_tok = self.model.cfg.chunk_tokens
    cross_k = jnp.concatenate([state.cross_k[:, :, l_tok:], k_new], axis=2)
    cross_v = jnp.concatenate([state.cross_v[:, :, l_tok:], v_new], axis=2)
    ctx_audio = jnp.concatenate(
        [state.ctx_audio[:, g.chunk_samples:], own_audio], axis=1)
    # Crossfade onto the previous tail.
    ramp = self._ramp.reshape(1, n, 1)
    out = audio[:, :g.chunk_samples]
    out = out.at[:, :n].set(out[:, :n] * ramp + state.tail * ramp[:, ::-1])
    new = StepState(cross_k, cross_v, lat[:, -g.crossfade_frames:],
                    audio[:, -n:], state.index + 1, ctx_audio,
                    S.seam_codes(g, ctx[:, None]))
    return out, new

  # ---- injection into the whole window ---------------------------------------
  def inject_context(self, params, state: StepState, audio, gain,
                     chunks) -> StepState:
    """Re-encode window chunks from (own audio + gain * audio).

    Args:
      params: student params.
      state: the stream state (donated).
      audio: float (B, W, channels) audio aligned with `state.ctx_audio`
        (oldest chunk first), silence where there is none.
      gain: () float gain of `audio`.
      chunks: bool (N,) which window chunks to re-encode (oldest first); the
        others keep their cached keys/values untouched, so a window that
        never saw injected audio keeps the student's own tokens.

    Returns:
      The new state; only cross_k, cross_v and (when the last chunk is
      re-encoded) seam change. Control values never
      recompile (one compile per batch size).
    """
    self.require_injection()
    g = self.geometry
    b = state.ctx_audio.shape[0]
    want = (b, g.context_samples, g.channels)
    audio = jnp.asarray(audio, jnp.float32)
    if audio.shape != want:
      raise ValueError(f"window audio of shape {audio.shape}: expected "
                       f"{want} (streams, context samples, channels)")
    n = self.model.cfg.context_chunks
    chunks = jnp.asarray(chunks, bool)
    if chunks.shape != (n,):
      raise ValueError(f"chunks of shape {chunks.shape}: expected ({n},), "
                       f"one flag per window chunk")
    return self._context_jit(params, state, audio,
                             jnp.asarray(gain, jnp.float32), chunks)

  def _inject_context(self, params, state: StepState, audio_BxWxC, gain,
                      chunks_N):
    self.context_compiles += 1  # trace time only
    c = self.model.cfg
    n, l_tok = c.context_chunks, c.chunk_tokens
    b = audio_BxWxC.shape[0]
    ids = self.audio_context_ids(state.ctx_audio + gain * audio_BxWxC)
    ids = ids.reshape(b, n, l_tok)
    k, v = self.window_kv(params, ids)  # (layers, B, N*L, H, Hd)
    sel = jnp.repeat(chunks_N, l_tok).reshape(1, 1, n * l_tok, 1, 1)
    # The window's last chunk re-encoded: its last frame is the new seam.
    seam = jnp.where(chunks_N[-1], S.seam_codes(self.geometry, ids),
                     state.seam)
    return state._replace(cross_k=jnp.where(sel, k, state.cross_k),
                          cross_v=jnp.where(sel, v, state.cross_v),
                          seam=seam)
