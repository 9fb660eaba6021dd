"""Train the reference style model on rendered reference-world music.

Shape letters: B batch, N audio samples, S style width, W held-out windows,
P styles.

Data: pieces of every style in `music.STYLES` are generated and rendered at
16 kHz mono into a pool (`piece_pool.PiecePool`); each step draws a
style-balanced batch of random 4 s crops and pairs each crop with a text
made from its piece's descriptors (`sample_text`: the style word always, the
other descriptors as a random subset, sometimes none, so single words and
combinations both occur). A few pool pieces are replaced by freshly
generated ones every step, so the model keeps seeing new tempos, keys,
instruments and melodies.

Loss: symmetric InfoNCE with a learned temperature (CLIP), generalised to
several positives: a text is a positive for every crop in the batch whose
piece's descriptors contain all of the text's words (two techno crops in one
batch both match "techno"; treating one of them as a negative would push
apart exactly what should be close). Targets spread uniformly over the
positives. Plus `align_weight` x `alignment_loss`: the text embedding
regresses the (fixed) audio embeddings of its positives, which closes the
modality gap so that text prompts tokenise like their music (see
`reference`'s module docstring).

After training, the RVQ codebooks are k-means fitted on audio embeddings of
pool crops (see `rvq_fit.fit_rvq_codebooks`), and held-out metrics are
computed on pieces with seeds that training never draws (listed and
computed in `style_eval`: zero-shot style accuracy, text-to-audio
retrieval, prompt/audio token agreement, descriptor AUC, RVQ report).

`train_style` writes the weights (X.npz + checksum sidecar X.npz.json) and
the metrics as JSON next to them (X.metrics.json).

Run by hand (the build script `tools/build_reference_world.py --stage style`
calls `train_style` with the release settings):

  python -m mrt_distill.world.training.train_style /tmp/style.npz --steps 200
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import pathlib
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mrt_distill import atomic
from mrt_distill.codec.base import seeded_rng
from mrt_distill.geometry import Geometry
from mrt_distill.geometry import REFERENCE
from mrt_distill.style import reference
from mrt_distill.style import rvq_fit
from mrt_distill.style import style_net
from mrt_distill.style import text_parsing
from mrt_distill.world import music
from mrt_distill.world.music.piece_pool import heldout_windows
from mrt_distill.world.music.piece_pool import PiecePool
from mrt_distill.world.music.piece_pool import PieceRecord
from mrt_distill.world.training import style_eval

log = logging.getLogger(__name__)


# ---- training texts ----------------------------------------------------------
def sample_text(piece: PieceRecord, style: str,
                rng: np.random.Generator) -> list[str]:
  """A training text for a piece: its style word plus a random subset.

  A third of the texts are the style word alone; the rest keep each other
  descriptor with a probability drawn per text from U(0.15, 1), so lengths
  range from the style word alone to the full description.
  """
  others = [d for d in piece.descriptors if d != style]
  if rng.random() < 1 / 3 or not others:
    return [style]
  keep = rng.uniform(0.15, 1.0)
  chosen = [d for d in others if rng.random() < keep]
  words = [style] + chosen
  order = rng.permutation(len(words))  # The tower is order-free anyway.
  return [words[i] for i in order]


def positives(texts: Sequence[Sequence[str]],
              pieces: Sequence[PieceRecord]) -> np.ndarray:
  """float32 (B_text, B_audio): 1 where every word of text i describes
  piece j."""
  desc = [frozenset(p.descriptors) for p in pieces]
  return np.asarray([[float(set(t) <= d) for d in desc] for t in texts],
                    np.float32)


# ---- loss and step -----------------------------------------------------------
_MAX_LOGIT_SCALE = float(np.log(100.0))  # CLIP's clamp on 1 / temperature.


def multi_positive_infonce(logits_TxA: jax.Array,
                           pos_TxA: jax.Array) -> jax.Array:
  """Symmetric InfoNCE whose targets spread over all positives.

  Args:
    logits_TxA: scaled similarities, texts x audio.
    pos_TxA: {0, 1} positives; the diagonal must be 1.

  Returns:
    Scalar: mean of the text->audio and audio->text cross entropies.
  """
  t2a = pos_TxA / jnp.sum(pos_TxA, axis=1, keepdims=True)
  a2t = pos_TxA.T / jnp.sum(pos_TxA.T, axis=1, keepdims=True)
  loss_t = -jnp.sum(t2a * jax.nn.log_softmax(logits_TxA, axis=1), axis=1)
  loss_a = -jnp.sum(a2t * jax.nn.log_softmax(logits_TxA.T, axis=1), axis=1)
  return 0.5 * (jnp.mean(loss_t) + jnp.mean(loss_a))


def add_noise(audio_BxN: jax.Array, key: jax.Array, prob: float,
              snr_db: tuple[float, float]) -> jax.Array:
  """White noise at a random SNR on a random `prob` share of the batch.

  A mild robustness augmentation: generated and codec-decoded audio is
  noisier than the clean synth.
  """
  b = audio_BxN.shape[0]
  k1, k2, k3 = jax.random.split(key, 3)
  use = jax.random.uniform(k1, (b, 1)) < prob
  snr = jax.random.uniform(k2, (b, 1), minval=snr_db[0], maxval=snr_db[1])
  rms = jnp.sqrt(jnp.mean(jnp.square(audio_BxN), axis=1, keepdims=True))
  noise = jax.random.normal(k3, audio_BxN.shape) * rms * 10**(-snr / 20)
  return audio_BxN + jnp.where(use, noise, 0.0)


def make_optimizer(lr: float, steps: int, warmup: int,
                   weight_decay: float) -> optax.GradientTransformation:
  sched = optax.warmup_cosine_decay_schedule(
      0.0, lr, max(1, warmup), max(steps, warmup + 1), end_value=0.05 * lr)
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(sched, weight_decay=weight_decay))


def alignment_loss(t_TxS: jax.Array, a_AxS: jax.Array,
                   pos_TxA: jax.Array) -> jax.Array:
  """Mean over texts of sum_j w_ij |t_i - a_j|^2, w = positives normalised
  per text: minimised by t_i = the mean of its positive audio embeddings.

  The audio side is held fixed (stop_gradient): the audio tower defines the
  space the LM's tokens come from, and only the text tower moves into it.
  """
  w = pos_TxA / jnp.sum(pos_TxA, axis=1, keepdims=True)
  a = jax.lax.stop_gradient(a_AxS)
  # |t - a|^2 = |t|^2 - 2 t.a + |a|^2, without a (T, A, S) intermediate.
  d2 = (jnp.sum(t_TxS * t_TxS, axis=1, keepdims=True) - 2.0 * t_TxS @ a.T
        + jnp.sum(a * a, axis=1)[None, :])
  return jnp.mean(jnp.sum(w * d2, axis=1))


def _style_train_step(net, tx, noise_prob, align_weight, params, opt_state,
                      audio, ids, mask, pos, key):
  """One jitted step -> (params, opt_state, metrics)."""
  audio = add_noise(audio, key, noise_prob, (15.0, 40.0))

  def loss_fn(p):
    a_BxS, t_BxS, scale = net.apply({"params": p}, audio, ids, mask)
    # The contrastive term sees the text's direction only.
    t_unit = t_BxS * jax.lax.rsqrt(
        jnp.sum(t_BxS * t_BxS, axis=1, keepdims=True) + 1e-12)
    logits = jnp.exp(scale) * t_unit @ a_BxS.T
    nce = multi_positive_infonce(logits, pos)
    align = alignment_loss(t_BxS, a_BxS, pos)
    # In-batch accuracy: the audio's best text is one of its positives.
    hit = jnp.take_along_axis(pos.T, jnp.argmax(logits.T, axis=1)[:, None],
                              axis=1)
    return nce + align_weight * align, (nce, align, jnp.mean(hit))

  (loss, (nce, align, acc)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  params = {**params, "logit_scale": jnp.clip(params["logit_scale"], 0.0,
                                              _MAX_LOGIT_SCALE)}
  return params, opt_state, {"loss": loss, "nce": nce, "align": align,
                             "acc": acc,
                             "temperature": jnp.exp(-params["logit_scale"])}


# ---- progress ----------------------------------------------------------------
def _hms(seconds: float) -> str:
  seconds = int(max(0.0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
  """Progress log lines with rate and ETA (the ETA also honours a budget)."""

  def __init__(self, name: str, steps: int, time_budget_s: float | None):
    self.name, self.steps, self.budget = name, steps, time_budget_s
    self.start = time.perf_counter()
    self._last_t, self._last_step = self.start, 0

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def over_budget(self) -> bool:
    return self.budget is not None and self.elapsed() > self.budget

  def log(self, step: int, metrics: dict) -> None:
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_t, 1e-9)
    self._last_t, self._last_step = now, step
    eta = (self.steps - step) / max(rate, 1e-9)
    if self.budget is not None:
      eta = min(eta, self.budget - self.elapsed())
    vals = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    log.info("%s step %d/%d %s | %.2f steps/s, %s elapsed, ETA %s", self.name,
             step, self.steps, vals, rate, _hms(self.elapsed()), _hms(eta))


# ---- quantiser fitting ------------------------------------------------------
def codebook_training_set(model: reference.ReferenceStyleModel,
                          pool: PiecePool, crop: int, audio_count: int,
                          rng: np.random.Generator, text_count: int = 0
                          ) -> tuple[np.ndarray, np.ndarray]:
  """Embeddings to fit and to check the quantiser with.

  Returns:
    audio window embeddings (audio_count, S): the quantiser is fitted on
    these alone, the LM being trained on audio tokens; and embeddings of
    `text_count` training-style texts (T, S), to report how well text
    quantises onto audio codes.
  """
  # In chunks: 4096 crops of 4 s would be 1 GB of float32 audio at once.
  audio_emb, pieces = [], []
  for start in range(0, audio_count, 256):
    audio, _, chunk = pool.sample(min(256, audio_count - start), crop)
    audio_emb.append(model.embed_audio_windows(audio))
    pieces += chunk
  audio_emb = np.concatenate(audio_emb)
  texts = [" ".join(sample_text(p, pool.styles[p.style_index], rng))
           for p in pieces[:text_count]]
  text_emb = (model.embed_text(texts) if texts else
              np.zeros((0, audio_emb.shape[1]), np.float32))
  return audio_emb, text_emb


# ---- the trainer -------------------------------------------------------------
def train_style(out_path, *, steps: int, batch: int, seed: int,
                log_every: int = 50, time_budget_s: float | None = None,
                config: style_net.ReferenceStyleConfig | None = None,
                geometry: Geometry = REFERENCE, lr: float = 1e-3,
                warmup: int | None = None, weight_decay: float = 1e-4,
                noise_prob: float = 0.3, align_weight: float = 1.0,
                pieces_per_style: int = 24,
                piece_seconds: float = 12.0, refresh_per_step: int = 1,
                heldout_pieces_per_style: int = 12,
                heldout_seconds: float = 8.0, codebook_audio: int = 4096,
                codebook_text: int = 1024, codebook_iters: int = 30) -> dict:
  """Train, quantise, evaluate and save the reference style model.

  Args:
    out_path: weights path (.npz); its checksum sidecar (.npz.json) and
      `<name>.metrics.json` go next to it.
    steps: optimiser steps (the cosine schedule spans them).
    batch: crops (and texts) per step.
    seed: seeds init, data and codebooks; a run without `time_budget_s` is
      deterministic in it.
    log_every: steps between progress lines.
    time_budget_s: stop training early after this many seconds (then the
      schedule is cut short and the run is no longer step-deterministic).
      Pool rendering, quantiser fitting and evaluation are not counted.
    config: network config (default `ReferenceStyleConfig()`).
    geometry: token geometry (style sizes).
    lr, warmup, weight_decay: AdamW with linear warmup (default 5% of steps)
      and cosine decay to 5% of lr.
    noise_prob: share of crops that get white noise at 15-40 dB SNR.
    align_weight: weight of the text-to-audio regression
      (`alignment_loss`) next to the contrastive loss.
    pieces_per_style, piece_seconds, refresh_per_step: the training pool.
    heldout_pieces_per_style, heldout_seconds: held-out evaluation set (4 s
      windows with a 2 s hop).
    codebook_audio, codebook_iters: the quantiser's k-means fit (audio
      crops from the pool, Lloyd iterations per level).
    codebook_text: texts whose quantisation error is reported.

  Returns:
    The metrics dict (also written as JSON).
  """
  cfg = config or style_net.ReferenceStyleConfig(embed_dim=
                                                 geometry.style_embed_dim)
  out_path = pathlib.Path(out_path)
  styles = tuple(music.STYLES)
  crop = cfg.window_samples
  t0 = time.perf_counter()
  log.info("style: rendering a pool of %d x %d pieces of %.0f s",
           len(styles), pieces_per_style, piece_seconds)
  pool = PiecePool(seed, pieces_per_style, piece_seconds,
                   cfg.mel.sample_rate, styles)
  text_rng = seeded_rng(seed, "mrt_distill.world.train_style.text")
  log.info("style: pool ready in %.1f s", time.perf_counter() - t0)

  net = style_net.StyleNet(cfg)
  params = style_net.init_params(cfg, seed)
  n_params = style_net.param_count(params)
  log.info("style: %s parameters", f"{n_params:,}")
  warmup = max(1, steps // 20) if warmup is None else warmup
  tx = make_optimizer(lr, steps, warmup, weight_decay)
  opt_state = tx.init(params)
  step_fn = jax.jit(functools.partial(_style_train_step, net, tx, noise_prob,
                                      align_weight), donate_argnums=(0, 1))
  key = jax.random.PRNGKey(seed)

  width = 16  # Descriptors per piece are at most ~14.
  history = []
  progress = Progress("style", steps, time_budget_s)
  window_metrics = []
  step_times = []
  done = 0
  for step in range(1, steps + 1):
    t_step = time.perf_counter()
    audio, _, pieces = pool.sample(batch, crop)
    texts = [sample_text(p, styles[p.style_index], text_rng) for p in pieces]
    ids, mask = text_parsing.encode_words(texts, cfg.vocab, width)
    pos = positives(texts, pieces)
    params, opt_state, m = step_fn(params, opt_state, audio, ids, mask, pos,
                                   jax.random.fold_in(key, step))
    if refresh_per_step:
      # Rendered while the step runs (jax dispatch is asynchronous).
      pool.refresh(refresh_per_step)
    m = {k: float(v) for k, v in m.items()}
    history.append(m["loss"])
    window_metrics.append(m)
    step_times.append(time.perf_counter() - t_step)
    done = step
    if step % log_every == 0 or step == steps:
      avg = {k: float(np.mean([w[k] for w in window_metrics]))
             for k in window_metrics[0]}
      window_metrics = []
      progress.log(step, avg)
    if progress.over_budget():
      log.info("style: time budget of %.0f s reached at step %d",
               time_budget_s, step)
      break
  train_seconds = progress.elapsed()

  model = reference.ReferenceStyleModel(jax.device_get(params),
                                        np.zeros((geometry.style_rvq_depth,
                                                  geometry.style_codebook_size,
                                                  geometry.style_embed_dim),
                                                 np.float32), cfg, geometry)
  t1 = time.perf_counter()
  cb_rng = seeded_rng(seed, "mrt_distill.world.train_style.codebooks")
  cb_audio, cb_text = codebook_training_set(model, pool, crop, codebook_audio,
                                            cb_rng, codebook_text)
  books = rvq_fit.fit_rvq_codebooks(cb_audio, geometry.style_rvq_depth,
                                      geometry.style_codebook_size, seed,
                                      codebook_iters)
  model = model.with_codebooks(books)
  log.info("style: quantiser fitted on %d audio embeddings in %.1f s",
           len(cb_audio), time.perf_counter() - t1)

  t2 = time.perf_counter()
  wins, labels, owners, descriptors = heldout_windows(
      styles, heldout_pieces_per_style, heldout_seconds, crop, crop // 2,
      cfg.mel.sample_rate)
  metrics = style_eval.evaluate(model, wins, labels, styles, owners,
                                descriptors)
  metrics["rvq"] = style_eval.rvq_report(model, cb_audio, cb_text, styles,
                                         geometry)
  k = max(1, min(20, len(history) // 10))
  metrics.update({
      "steps": done,
      "steps_requested": steps,
      "batch": batch,
      "seed": seed,
      "num_params": n_params,
      "codebook_audio_windows": int(len(cb_audio)),
      "train_seconds": train_seconds,
      # The first steps include compilation; the median is the steady rate.
      "median_step_seconds": float(np.median(step_times)),
      "loss_first": float(np.mean(history[:k])),
      "loss_last": float(np.mean(history[-k:])),
      "temperature": float(np.exp(-params["logit_scale"])),
      "pieces_rendered": pool.rendered,
      "eval_seconds": time.perf_counter() - t2,
  })
  log.info("style: held-out zero-shot accuracy %.3f, text->audio P@10 %.3f, "
           "descriptor AUC %.3f, prompt/audio token share L1 %.2f L2 %.2f, "
           "%d/%d styles distinct in LM tokens",
           metrics["zero_shot_accuracy"],
           metrics["text_to_audio_precision_at_10"],
           metrics["descriptor_auc_mean"], metrics["prompt_token_share_L1"],
           metrics.get("prompt_token_share_L2", float("nan")),
           metrics["rvq"]["distinct_style_tokens_seen_by_lm"], len(styles))
  model.save(out_path, extra_meta={"metrics_summary": {
      "zero_shot_accuracy": metrics["zero_shot_accuracy"],
      "steps": done, "batch": batch, "seed": seed}})
  metrics_path = out_path.with_suffix(".metrics.json")
  atomic.write_text(metrics_path, json.dumps(metrics, indent=2, sort_keys=True))
  log.info("style: wrote %s and %s", out_path, metrics_path)
  return metrics


def _main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("out", help="weights path (.npz)")
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--log_every", type=int, default=20)
  p.add_argument("--time_budget_s", type=float, default=None)
  p.add_argument("--pieces_per_style", type=int, default=24)
  args = p.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  m = train_style(args.out, steps=args.steps, batch=args.batch,
                  seed=args.seed, log_every=args.log_every,
                  time_budget_s=args.time_budget_s,
                  pieces_per_style=args.pieces_per_style)
  print(json.dumps({k: v for k, v in m.items() if k != "rvq"}, indent=2))


if __name__ == "__main__":
  _main()
