"""Train the reference world's neural RVQ codec on procedurally rendered music.

Shape letters: B batch, S samples, C channels, T codec frames, D latent
width, L RVQ levels, V codebook size, N latent vectors in a batch (B T).

Data: every batch is `batch` random crops of `seconds_per_example` seconds
from a pool of rendered pieces (random style and seed, see
`mrt_distill.world.music`), refreshed round-robin as training goes, with a
random gain so that quiet passages are seen too. Piece seeds for training lie
in [0, TRAIN_SEED_LIMIT); held-out evaluation pieces use seeds from
EVAL_SEED_BASE up, so evaluation never hears a training piece.

Schedule:
  1. `ae_warmup_steps` steps as a plain autoencoder (no quantiser), so the
     encoder's latents mean something before codebooks are fitted to them;
  2. k-means init of all 12 levels, level by level on the residuals of
     encoder outputs from a few batches;
  3. quantised training: greedy RVQ through all levels, codebooks follow
     the encoder by EMA (with dead-code restarts from the batch), decoder
     input is the sum of the first n levels with n drawn per example
     (quantizer dropout: all levels with probability `full_depth_prob`,
     else uniform in 1..L), straight-through gradient to the encoder.

Loss: multi-resolution STFT (`mrt_distill.audio_losses`) + wave_weight x
waveform L1 + lowband_weight x relative complex-STFT error below lowband_hz
+ commit_weight x relative commitment |z - sg(q)|^2 / |z|^2 (made scale-free
so that the encoder cannot lower it by shrinking its latents).

Why the low-band term: the decoder predicts STFT magnitude and phase, and
magnitude losses say nothing about phase, so with them (and a small
waveform L1) alone the held-out SNR sits at -1.5 dB (random phase). A
phase-sensitive, scale-free error on the bins below 300 Hz, where bass and
kick drums hold most of the energy, teaches coherent low-frequency phase:
in a 400-step dev run it lifted SNR at 8 levels from -1.5 to +2.2 dB and
also improved MR-STFT (1.55 -> 1.52).

Modules: this one holds the hyperparameters, the gradient step and the
loop; the crop stream and the train/held-out seed split live in
`codec_data`, codebook k-means init and EMA upkeep in `codec_codebooks`, and
the held-out scoring in `codec_eval`.

Determinism: the same arguments give the same weights (numpy and jax keys
come from `seed`; XLA on CPU reduces in a fixed order). `time_budget_s` is a
safety cap: a run it cuts short is deterministic only up to the step it
stopped at, and the metrics say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import pathlib
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mrt_distill import atomic
from mrt_distill.audio_losses import DEFAULT_FFT_SIZES
from mrt_distill.audio_losses import complex_stft_loss
from mrt_distill.audio_losses import multi_resolution_stft_loss
from mrt_distill.codec.neural import CodecModel
from mrt_distill.codec.neural import NeuralCodec
from mrt_distill.codec.neural import NeuralCodecConfig
from mrt_distill.codec.neural import count_params
from mrt_distill.codec.neural import init_params
from mrt_distill.codec.neural import metrics_path
from mrt_distill.codec.neural import rvq_encode_jnp
from mrt_distill.codec.neural import rvq_partial_sum
from mrt_distill.geometry import REFERENCE
from mrt_distill.geometry import Geometry
from mrt_distill.world.training.codec_codebooks import ema_update
from mrt_distill.world.training.codec_codebooks import kmeans_rvq
from mrt_distill.world.training.codec_codebooks import level_dim_masks
from mrt_distill.world.training.codec_codebooks import limit_levels
from mrt_distill.world.training.codec_codebooks import vq_state_from_books
from mrt_distill.world.training.codec_data import CropSampler
from mrt_distill.world.training.codec_eval import evaluate_codec
from mrt_distill.world.training.stage_checkpoints import StageCheckpoints


@dataclasses.dataclass(frozen=True)
class TrainHParams:
  """Optimisation and quantiser settings (sizes live in NeuralCodecConfig)."""

  lr: float = 1.5e-3
  warmup_steps: int = 100
  end_lr_fraction: float = 0.05
  weight_decay: float = 1e-4
  clip_norm: float = 1.0
  b1: float = 0.9
  b2: float = 0.99
  wave_weight: float = 1.0
  commit_weight: float = 0.25
  # Phase-sensitive relative complex-STFT error below lowband_hz (bass and
  # kick carry most of the energy, and their phase fits in a low-rate code).
  lowband_weight: float = 1.0
  lowband_hz: float = 300.0
  lowband_fft: int = 1024
  fft_sizes: tuple[int, ...] = DEFAULT_FFT_SIZES
  # Shift consistency: the same audio delayed by a random sub-frame amount
  # (uniform in +-half a frame) must encode to nearly the same latents,
  # relative MSE |z(x) - z(shift x)|^2 / |z|^2 over the aligned frames.
  # Without it a 20 ms delay changes 88% of level-0 tokens, so a teacher
  # cannot copy a repeated bar (docs/benchmarks.md, probe_codec_tokens).
  # The coarse levels' cells are large next to a small latent difference,
  # the fine levels' small: the coarse tokens become a function of the
  # music, and the fine ones still carry where inside the frame it lands.
  shift_weight: float = 0.0
  # What the shift term's difference is relative to. "energy": the latents'
  # mean square, which a latent constant in time meets most cheaply: at
  # weight 2 the coarse levels' chroma agreement fell 0.36 -> 0.14
  # (docs/benchmarks.md, "Which lever empties the coarse levels").
  # "temporal": each example's variation over its frames (about its own
  # mean over time), so a latent that stops following the music makes the
  # ratio large instead of small: phase may not move it, the music must.
  shift_norm: str = "energy"
  # Split latent: with coarse_dims > 0 the shift term applies to the first
  # coarse_dims latent dimensions only, and the first coarse_levels RVQ
  # levels' codewords live in those dimensions alone (zero elsewhere), so
  # the coarse tokens are a function of the invariant part, and the other
  # dimensions, quantised by the finer levels, keep the timing.
  coarse_dims: int = 0
  coarse_levels: int = 2
  # Each coarse level quantises its own slice of the coarse dimensions.
  coarse_split: bool = False
  # Codes the coarse levels use (of the geometry's codebook_size): fewer,
  # larger cells, so a small latent change rarely crosses into another.
  coarse_codes: int | None = None
  ema_decay: float = 0.99
  # A code unused for this many consecutive steps is dead and restarts at a
  # random residual of the batch. A step-count rule (rather than a threshold
  # on the EMA usage) reacts within a few dozen steps, which matters in a
  # run of a few thousand steps: level 0 otherwise settles on ~15 codes.
  restart_after_steps: int = 30
  full_depth_prob: float = 0.5
  kmeans_batches: int = 8
  kmeans_iters: int = 12
  gain_db: tuple[float, float] = (-12.0, 0.0)
  piece_seconds: float = 6.0
  pool_size: int = 48
  refresh_per_step: int = 2

  def __post_init__(self):
    if self.shift_norm not in ("energy", "temporal"):
      raise ValueError(f"shift_norm {self.shift_norm!r}: give 'energy' or "
                       f"'temporal'")


def shift_ratio(z_BxTxD, z_shifted_BxTxD, norm: str = "energy"):
  """The shift-consistency term: mean |z - z_shifted|^2 relative to
  "energy" (the latents' mean square) or "temporal" (their variation over
  each example's frames). Not stop-gradient in the denominator: the ratio
  is invariant to the latents' scale, so shrinking them cannot lower it.
  With "energy", shrinking only their variation in time does lower it
  (towards a latent constant in time, which says nothing about the music);
  with "temporal" it does not."""
  z, z_s = z_BxTxD, z_shifted_BxTxD
  diff = jnp.mean((z - z_s)**2)
  if norm == "temporal":
    ref = jnp.mean((z - jnp.mean(z, axis=1, keepdims=True))**2)
  elif norm == "energy":
    ref = jnp.mean(z**2)
  else:
    raise ValueError(f"shift_norm {norm!r}: give 'energy' or 'temporal'")
  return diff / (ref + 1e-8)


def level_sizes(hp: TrainHParams, g: Geometry) -> tuple[int, ...]:
  """Codes used per RVQ level."""
  coarse = min(hp.coarse_codes or g.codebook_size, g.codebook_size)
  return tuple(coarse if lv < hp.coarse_levels and hp.coarse_codes else
               g.codebook_size for lv in range(g.codec_rvq_depth))


# ---- training step -----------------------------------------------------------
def _make_optimizer(hp: TrainHParams, steps: int):
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=hp.lr,
      warmup_steps=max(1, min(hp.warmup_steps, steps // 2)),
      decay_steps=max(steps, 2), end_value=hp.lr * hp.end_lr_fraction)
  # No weight decay on biases, norms, layer scales and depthwise kernels.
  mask = lambda p: jax.tree_util.tree_map(lambda x: x.ndim == 2 and  # noqa
                                          x.shape[0] > 16, p)
  tx = optax.chain(
      optax.clip_by_global_norm(hp.clip_norm),
      optax.adamw(schedule, b1=hp.b1, b2=hp.b2, weight_decay=hp.weight_decay,
                  mask=mask))
  return tx, schedule


def _make_steps(model: CodecModel, tx, hp: TrainHParams, geometry: Geometry,
                dim_masks: np.ndarray, sizes: tuple[int, ...]):
  depth = geometry.codec_rvq_depth

  spf = geometry.samples_per_frame

  def shift_consistency(params, audio, z, key):
    """Relative MSE between the latents of `audio` and of the same audio
    delayed by d in [-spf/2, spf/2] samples (per example), over the frames
    away from the padded ends."""
    b, s, _ = audio.shape
    half = spf // 2
    delays = jax.random.randint(key, (b,), -half, half + 1)
    padded = jnp.pad(audio, ((0, 0), (half, half), (0, 0)))
    shifted = jax.vmap(lambda a, d: jax.lax.dynamic_slice_in_dim(
        a, half - d, s, axis=0))(padded, delays)
    z_s = model.apply({"params": params}, shifted, method=CodecModel.encode)
    if hp.coarse_dims:
      z, z_s = z[..., :hp.coarse_dims], z_s[..., :hp.coarse_dims]
    inner = slice(1, -1) if z.shape[1] > 2 else slice(None)
    return shift_ratio(z[:, inner], z_s[:, inner], hp.shift_norm)

  masks = jnp.asarray(dim_masks)
  code_masks = jnp.arange(geometry.codebook_size)[None, :] < jnp.asarray(
      sizes)[:, None]

  def loss_fn(params, books, audio, num_levels, quantize, key):
    z = model.apply({"params": params}, audio, method=CodecModel.encode)
    b, t, d = z.shape
    aux = {}
    if quantize:
      flat = z.reshape(b * t, d)
      codes, inputs, chosen = rvq_encode_jnp(jax.lax.stop_gradient(flat),
                                             books)
      q = rvq_partial_sum(chosen, jnp.repeat(num_levels, t))
      # Straight-through: forward uses q, backward treats it as identity.
      zq = flat + jax.lax.stop_gradient(q - flat)
      q_all = chosen.sum(0)
      commit = jnp.mean((flat - q_all)**2) / (
          jax.lax.stop_gradient(jnp.mean(flat**2)) + 1e-8)
      z_dec = zq.reshape(b, t, d)
      aux.update(codes=codes, inputs=inputs)
    else:
      commit = jnp.zeros(())
      z_dec = z
    recon = model.apply({"params": params}, z_dec, method=CodecModel.decode)
    mr, parts = multi_resolution_stft_loss(recon, audio, hp.fft_sizes,
                                           axis=-2, return_parts=True)
    wave = jnp.mean(jnp.abs(recon - audio))
    loss = mr + hp.wave_weight * wave + hp.commit_weight * commit
    if hp.shift_weight:
      shift = shift_consistency(params, audio, z, key)
      loss = loss + hp.shift_weight * shift
    else:
      shift = jnp.zeros(())
    if hp.lowband_weight:
      max_bin = int(math.ceil(hp.lowband_hz * hp.lowband_fft /
                              geometry.sample_rate)) + 1
      low = complex_stft_loss(recon, audio, hp.lowband_fft, max_bin=max_bin,
                              axis=-2)
      loss = loss + hp.lowband_weight * low
    else:
      low = jnp.zeros(())
    metrics = {"loss": loss, "mr_stft": mr, "sc": parts["sc"],
               "log_mag": parts["log_mag"], "wave_l1": wave,
               "commit": commit, "lowband": low, "shift": shift,
               "latent_rms": jnp.sqrt(jnp.mean(z**2))}
    return loss, (metrics, aux)

  @functools.partial(jax.jit, static_argnames=("quantize",),
                     donate_argnums=(0, 1, 2))
  def train_step(params, opt_state, vq, audio, key, *, quantize):
    k_drop, k_levels, k_dead, k_shift = jax.random.split(key, 4)
    b = audio.shape[0]
    full = jax.random.uniform(k_drop, (b,)) < hp.full_depth_prob
    some = jax.random.randint(k_levels, (b,), 1, depth + 1)
    num_levels = jnp.where(full, depth, some)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (metrics, aux)), grads = grad_fn(params, vq["books"], audio,
                                         num_levels, quantize, k_shift)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics["grad_norm"] = jnp.sqrt(sum(
        jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
    if quantize:
      vq, stats = ema_update(vq, aux["codes"], aux["inputs"], k_dead,
                             hp.ema_decay, hp.restart_after_steps)
      vq = limit_levels(vq, masks, code_masks)
      metrics["perplexity"] = stats["perplexity"].mean()
      metrics["perplexity_l0"] = stats["perplexity"][0]
      metrics["restarted"] = stats["restarted"].astype(jnp.float32)
    return params, opt_state, vq, metrics

  encode = jax.jit(lambda p, a: model.apply({"params": p}, a,
                                            method=CodecModel.encode))
  return train_step, encode


# ---- the loop ----------------------------------------------------------------
def _fmt_time(sec: float) -> str:
  sec = max(0.0, sec)
  return f"{int(sec // 60)}m{int(sec % 60):02d}s"


def train_codec(out_path,
                *,
                steps: int,
                batch: int,
                seconds_per_example: float,
                seed: int,
                log_every: int = 50,
                time_budget_s: float | None = None,
                geometry: Geometry = REFERENCE,
                config: NeuralCodecConfig | None = None,
                hparams: TrainHParams | None = None,
                ae_warmup_steps: int | None = None,
                eval_seconds: float = 4.0,
                eval_pieces_per_style: int = 1,
                eval_styles: Sequence[str] | None = None,
                train_styles: Sequence[str] | None = None,
                bar_grid_hz: float | None = None,
                checkpoints: StageCheckpoints | None = None,
                stop_at_step: int | None = None,
                log=print) -> dict:
  """Train, save, reload and evaluate the neural codec.

  Args:
    out_path: weights file (.npz); the checksum manifest and the metrics json
      go next to it (`sidecar_path`, `metrics_path`).
    steps: optimiser steps (the LR schedule spans exactly this many).
    batch: crops per step.
    seconds_per_example: crop length, rounded to whole codec frames.
    seed: everything random derives from it.
    log_every: steps between progress lines.
    time_budget_s: stop the training loop early when the next step would
      pass this many seconds (the evaluation runs after it regardless).
    geometry: codec geometry (REFERENCE).
    config: model sizes (default NeuralCodecConfig()).
    hparams: optimiser/quantiser settings (default TrainHParams()).
    ae_warmup_steps: steps before the quantiser is switched on; default
      min(300, steps // 10).
    eval_seconds: length of each held-out piece.
    eval_pieces_per_style: held-out pieces per style.
    eval_styles: styles to evaluate (all by default).
    train_styles: styles to train on (all by default).
    bar_grid_hz: the training pieces' tempo option (`music.generate_piece`).
    checkpoints: save the whole training state there every
      `checkpoints.every_s` seconds and resume from its newest readable
      checkpoint (bit-identical to an uninterrupted run).
    stop_at_step: save a checkpoint and return after this step, as a run
      stopped there would (the build's --stop-after-steps; tests).
    log: where progress lines go.

  Returns:
    Metrics dict (also written to metrics_path(out_path)), or
    {"stopped_at_step": n} when `stop_at_step` stopped the run.
  """
  t_start = time.time()
  g = geometry
  config = NeuralCodecConfig() if config is None else config
  hp = TrainHParams() if hparams is None else hparams
  if steps < 1 or batch < 1:
    raise ValueError(f"steps and batch must be >= 1, got {steps}, {batch}")
  warm = min(300, steps // 10) if ae_warmup_steps is None else ae_warmup_steps
  warm = max(0, min(int(warm), steps))
  spf = g.samples_per_frame
  frames = max(1, round(seconds_per_example * g.frame_rate))
  crop = frames * spf
  vectors_per_step = batch * frames

  model = CodecModel(g, config)
  params = init_params(g, config, seed)
  n_params = count_params(params)
  tx, schedule = _make_optimizer(hp, steps)
  opt_state = tx.init(params)
  # Which latent dims and how many codes each level uses: the k-means
  # init and every EMA step keep to them.
  dim_masks = level_dim_masks(g.codec_rvq_depth, g.codec_latent_dim,
                              hp.coarse_levels, hp.coarse_dims,
                              hp.coarse_split)
  sizes = level_sizes(hp, g)
  train_step, encode = _make_steps(model, tx, hp, g, dim_masks, sizes)
  sampler = CropSampler(seed, g, batch, crop, hp, train_styles,
                        bar_grid_hz=bar_grid_hz)
  np_rng = np.random.default_rng([int(seed), 0x4B4D])
  key = jax.random.PRNGKey(seed)
  log(f"[codec] {n_params:,} params; {steps} steps x batch {batch} x "
      f"{crop / g.sample_rate:.2f} s; quantiser on after {warm} steps")

  # Placeholder codebooks for the autoencoder phase (unused there).
  vq = vq_state_from_books(
      np.zeros((g.codec_rvq_depth, g.codebook_size, g.codec_latent_dim),
               np.float32), vectors_per_step)
  curve, window, stopped_early = [], [], False
  t_loop = time.time()
  t_window = t_loop
  step_times = []
  step = 0
  first = 0
  audio_next = sampler.next()
  if checkpoints is not None:
    state = {"params": params, "opt_state": opt_state, "vq": vq,
             "audio_next": audio_next}
    restored, meta, at = checkpoints.restore(state)
    if restored is not None:
      params, opt_state, vq = (restored["params"], restored["opt_state"],
                               restored["vq"])
      audio_next = np.asarray(restored["audio_next"])
      sampler.set_state(meta["sampler"])
      np_rng.bit_generator.state = meta["np_rng"]
      curve, first = meta["curve"], at
      log(f"[codec] resumed from the checkpoint at step {at} in "
          f"{checkpoints.directory}")

  def save(done):
    checkpoints.save(done, {"params": params, "opt_state": opt_state,
                            "vq": vq, "audio_next": audio_next},
                     {"sampler": sampler.get_state(),
                      "np_rng": np_rng.bit_generator.state, "curve": curve})

  for step in range(first, steps):
    if stop_at_step is not None and step >= stop_at_step:
      save(step)
      log(f"[codec] stopped after step {step} (--stop-after-steps); rerun "
          f"the same command to continue")
      return {"stopped_at_step": step}
    if checkpoints is not None and step > first and checkpoints.due():
      save(step)
    quantize = step >= warm
    if quantize and step == warm:
      # Fit codebooks to what the encoder produces now.
      zs = [np.asarray(encode(params, jnp.asarray(sampler.next()))).reshape(
          -1, g.codec_latent_dim) for _ in range(hp.kmeans_batches)]
      books = kmeans_rvq(np.concatenate(zs), g.codec_rvq_depth,
                         g.codebook_size, hp.kmeans_iters, np_rng, dim_masks,
                         sizes)
      vq = vq_state_from_books(books, vectors_per_step)
      log(f"[codec] step {step}: k-means init of {g.codec_rvq_depth} levels "
          f"from {sum(len(z) for z in zs)} latents")
    if time_budget_s is not None and step_times:
      per_step = float(np.median(step_times[-20:]))
      if time.time() - t_start + per_step > time_budget_s:
        stopped_early = True
        log(f"[codec] time budget {time_budget_s:.0f} s reached at step "
            f"{step}; stopping")
        break
    t0 = time.time()
    params, opt_state, vq, metrics = train_step(
        params, opt_state, vq, jnp.asarray(audio_next),
        jax.random.fold_in(key, step), quantize=quantize)
    # Render the next batch while the step runs (dispatch is asynchronous).
    audio_next = sampler.next()
    metrics["loss"].block_until_ready()
    step_times.append(time.time() - t0)
    window.append(metrics)
    if (step + 1) % log_every == 0 or step + 1 == steps:
      host = [jax.device_get(m) for m in window]
      avg = {k: float(np.mean([m[k] for m in host if k in m]))
             for k in host[-1]}
      now = time.time()
      rate = len(window) / max(now - t_window, 1e-9)
      eta = (steps - step - 1) / max(rate, 1e-9)
      curve.append({"step": step + 1, **avg, "lr": float(schedule(step)),
                    "steps_per_s": rate})
      extra = (f" ppl {avg['perplexity']:.0f} (L0 {avg['perplexity_l0']:.0f})"
               f" restarts {avg['restarted']:.1f}"
               if "perplexity" in avg else " (autoencoder phase)")
      log(f"[codec] step {step + 1}/{steps} loss {avg['loss']:.4f} "
          f"mr {avg['mr_stft']:.4f} (sc {avg['sc']:.3f} "
          f"logmag {avg['log_mag']:.3f}) wave {avg['wave_l1']:.4f} "
          f"low {avg['lowband']:.3f} commit {avg['commit']:.3f} "
          f"shift {avg['shift']:.3f} "
          f"z_rms {avg['latent_rms']:.2f}{extra} "
          f"| {rate:.2f} steps/s, {1 / max(rate, 1e-9):.2f} s/step, "
          f"ETA {_fmt_time(eta)}")
      window, t_window = [], now
  steps_run = step + 1 if not stopped_early else step
  train_seconds = time.time() - t_loop

  books = np.asarray(vq["books"])
  if steps_run <= warm:
    # Never quantised (tiny runs): fit codebooks now so the file is usable.
    zs = [np.asarray(encode(params, jnp.asarray(sampler.next()))).reshape(
        -1, g.codec_latent_dim) for _ in range(hp.kmeans_batches)]
    books = kmeans_rvq(np.concatenate(zs), g.codec_rvq_depth,
                       g.codebook_size, hp.kmeans_iters, np_rng, dim_masks,
                         sizes)
  # Latent statistics on fresh training crops, for latent-space users.
  zs = np.concatenate([
      np.asarray(encode(params, jnp.asarray(sampler.next()))).reshape(
          -1, g.codec_latent_dim) for _ in range(4)])
  stats = {"mean": zs.mean(0), "std": zs.std(0)}
  codec = NeuralCodec(g, jax.device_get(params), books, config, stats)
  out_path = pathlib.Path(out_path)
  summary = {"steps": steps, "steps_run": steps_run, "batch": batch,
             "seconds_per_example": crop / g.sample_rate, "seed": seed}
  codec.save(out_path, extra=summary)
  # Evaluate what ships: the float16 weights read back from disk.
  codec = NeuralCodec.load(out_path)
  t_eval = time.time()
  ev = evaluate_codec(codec, seconds=eval_seconds,
                      pieces_per_style=eval_pieces_per_style,
                      styles=eval_styles, fft_sizes=hp.fft_sizes)
  eval_seconds_taken = time.time() - t_eval
  first = curve[0] if curve else {}
  last = curve[-1] if curve else {}
  result = {
      **summary,
      "stopped_early": stopped_early,
      "param_count": n_params,
      "config": config.to_dict(),
      "hparams": dataclasses.asdict(hp),
      "ae_warmup_steps": warm,
      "train_seconds": train_seconds,
      "sec_per_step": (float(np.median(step_times)) if step_times else None),
      "pieces_rendered": sampler.pieces_rendered,
      "first_loss": first.get("loss"),
      "final_loss": last.get("loss"),
      "final_mr_stft": last.get("mr_stft"),
      "loss_curve": curve,
      "eval": ev,
      "eval_seconds_taken": eval_seconds_taken,
      "total_seconds": time.time() - t_start,
      "weights": str(out_path),
  }
  atomic.write_text(metrics_path(out_path), json.dumps(result, indent=2) + "\n")
  snr = ", ".join(f"K={k}: {v:.2f} dB" for k, v in ev["snr_db"].items())
  mr = ", ".join(f"K={k}: {v:.3f}" for k, v in ev["mr_stft"].items())
  log(f"[codec] held-out SNR {snr}; continuous {ev['continuous']['snr_db']:.2f}"
      f" dB")
  log(f"[codec] held-out MR-STFT {mr}; continuous "
      f"{ev['continuous']['mr_stft']:.3f}")
  log(f"[codec] wrote {out_path} and {metrics_path(out_path).name} "
      f"({result['total_seconds']:.0f} s total)")
  return result


def _main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", help="weights path (.npz)")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seconds_per_example", type=float, default=1.6)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--log_every", type=int, default=50)
  parser.add_argument("--time_budget_s", type=float, default=None)
  parser.add_argument("--eval_seconds", type=float, default=4.0)
  parser.add_argument("--ae_warmup_steps", type=int, default=None)
  parser.add_argument("--lr", type=float, default=None)
  parser.add_argument("--shift_weight", type=float, default=None)
  parser.add_argument("--shift_norm", choices=("energy", "temporal"),
                      default=None)
  parser.add_argument("--coarse_dims", type=int, default=None)
  parser.add_argument("--magnitude_dims", type=int, default=0,
                      help="codec config: the first M latent dimensions "
                           "from a phase-free (magnitude) encoder")
  parser.add_argument("--coarse_codes", type=int, default=None)
  parser.add_argument("--coarse_split", action="store_true")
  parser.add_argument("--bar_grid", action="store_true")
  args = parser.parse_args()
  hp = TrainHParams()
  if args.lr is not None:
    hp = dataclasses.replace(hp, lr=args.lr)
  if args.shift_weight is not None:
    hp = dataclasses.replace(hp, shift_weight=args.shift_weight)
  if args.shift_norm is not None:
    hp = dataclasses.replace(hp, shift_norm=args.shift_norm)
  if args.coarse_dims is not None:
    hp = dataclasses.replace(hp, coarse_dims=args.coarse_dims)
  hp = dataclasses.replace(hp, coarse_codes=args.coarse_codes,
                           coarse_split=args.coarse_split)
  config = dataclasses.replace(NeuralCodecConfig(),
                               magnitude_dims=args.magnitude_dims)
  train_codec(args.out, steps=args.steps, batch=args.batch, config=config,
              seconds_per_example=args.seconds_per_example, seed=args.seed,
              log_every=args.log_every, time_budget_s=args.time_budget_s,
              hparams=hp, ae_warmup_steps=args.ae_warmup_steps,
              eval_seconds=args.eval_seconds,
              bar_grid_hz=(REFERENCE.frame_rate if args.bar_grid else None))


if __name__ == "__main__":
  _main()
