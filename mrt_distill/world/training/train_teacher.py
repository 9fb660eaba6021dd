"""Pretraining a Magenta-RT-architecture teacher on codec tokens.

The objective is v1's fine-tuning recipe (reference §7.2) at the teacher's
geometry:

* context: the `p` frames before the target, p = the whole context with
  probability 0.75, else uniform over whole seconds (or whole chunks, when a
  chunk is shorter than a second) below it; left-padded
  with MASK (-1 frames) exactly as a cold-starting stream sees it;
* style: the style model's audio embedding of the context-length window that
  holds the centre of the target, tokenised (MusicCoCa's role);
* target: the next chunk, C frames x K levels, frame-major codec ids;
* CFG condition dropout: the style tokens become MASK with probability 0.1.

Loss: token cross-entropy + 1e-4 z-loss (as t5x), averaged over tokens (v1
sums; with AdamW the mean keeps the learning rate independent of chunk size).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mrt_distill import atomic
from mrt_distill.codec.base import Codec
from mrt_distill.style.base import StyleModel
from mrt_distill.teacher.config import TeacherConfig
from mrt_distill.teacher.load import save_teacher, save_teacher_npz
from mrt_distill.teacher.model import TeacherModel, init_params
from mrt_distill.teacher.system import build_encoder_inputs
from mrt_distill.world import music
from mrt_distill.world.music import render
from mrt_distill.world.training.stage_checkpoints import StageCheckpoints

log = logging.getLogger(__name__)

FULL_CONTEXT_PROB = 0.75
STYLE_DROP_PROB = 0.1
# Players prompt with text, but the audio-derived tokens of training rarely
# coincide with a text prompt's tokens (MusicCoCa's towers are not aligned
# token for token either). A quarter of examples therefore carry the style
# tokens of the piece's text: its style word alone, or its descriptors.
TEXT_STYLE_PROB = 0.25
Z_LOSS = 1e-4


@dataclasses.dataclass
class TokenPiece:
  """One rendered piece as tokens: codes (T, K) and style codes (W, Ls)."""
  style: str
  text: str
  codes: np.ndarray  # int16 (T, target_levels)
  style_codes: np.ndarray  # int16 (W, style_rvq_depth), one per window
  text_codes: np.ndarray  # int16 (2, style_rvq_depth): style word, full text


def make_corpus(codec: Codec, style_model: StyleModel, *, pieces_per_style: int,
                seconds: float, seed: int, styles=None,
                bar_grid_hz: float | None = None) -> list[TokenPiece]:
  """Renders pieces of every style and tokenises them (codec + style)."""
  g = codec.geometry
  styles = list(styles or music.STYLES)
  win = g.context_samples
  out = []
  for si, style in enumerate(styles):
    for j in range(pieces_per_style):
      piece = music.generate_piece(style, seed * 100_003 + si * 1009 + j,
                                   seconds, bar_grid_hz=bar_grid_hz)
      audio = render.render(piece, g.sample_rate, g.channels)
      codes = codec.encode(audio, g.sample_rate)[:, :g.target_levels]
      n_win = max(1, len(audio) // win)
      windows = np.stack([audio[i * win:(i + 1) * win] for i in range(n_win)])
      emb = style_model.embed_audio(windows, g.sample_rate)
      text_emb = style_model.embed_text([style, piece.text])
      out.append(TokenPiece(style, piece.text, codes.astype(np.int16),
                            style_model.tokenize(emb).astype(np.int16),
                            style_model.tokenize(text_emb).astype(np.int16)))
  return out


def sample_batch(corpus: list[TokenPiece], rng: np.random.Generator,
                 batch: int, cfg: TeacherConfig, context: str = "recipe"):
  """-> (encoder ids (B, Le), target ids (B, C*K)) int32, v1's recipe.

  `context`: "recipe" draws the context length as v1 does; "full" and
  "none" fix it (probes of how much the teacher uses its context)."""
  if context not in ("recipe", "full", "none"):
    raise ValueError(f"context {context!r}: use 'recipe', 'full' or 'none'")
  g = cfg.geometry
  c, ctx_f = g.chunk_frames, g.context_frames
  # v1 draws prompt lengths in whole seconds; a geometry whose chunk is
  # shorter than a second draws them in whole chunks.
  fr = min(g.frame_rate, c)
  ctx = np.full((batch, ctx_f, g.target_levels), -1, np.int64)
  tgt = np.zeros((batch, c, g.target_levels), np.int64)
  style = np.zeros((batch, g.style_levels), np.int64)
  drop = np.zeros(batch, bool)
  for b in range(batch):
    piece = corpus[rng.integers(len(corpus))]
    t = len(piece.codes)
    max_p = min(ctx_f, t - c)
    if max_p <= 0:
      raise ValueError(f"pieces must be longer than a chunk ({c} frames)")
    if context != "recipe":
      p = max_p if context == "full" else 0
    elif rng.random() < FULL_CONTEXT_PROB or max_p < fr:
      p = max_p
    else:
      p = int(rng.integers(0, max_p // fr + 1)) * fr
    s = int(rng.integers(0, t - (p + c) + 1))
    if p:
      ctx[b, -p:] = piece.codes[s:s + p]
    tgt[b] = piece.codes[s + p:s + p + c]
    centre = (s + p + c // 2) * g.samples_per_frame // g.context_samples
    win = min(centre, len(piece.style_codes) - 1)
    if rng.random() < TEXT_STYLE_PROB:
      style[b] = piece.text_codes[rng.integers(2), :g.style_levels]
    else:
      style[b] = piece.style_codes[win, :g.style_levels]
    drop[b] = rng.random() < STYLE_DROP_PROB
  style_ids = g.style_to_ids(style)
  enc = build_encoder_inputs(g, ctx, style_ids)
  masked = build_encoder_inputs(g, ctx, None)
  enc = np.where(drop[:, None], masked, enc)
  targets = g.codec_to_ids(tgt).reshape(batch, -1)
  return enc, targets


def loss_fn(params, cfg: TeacherConfig, enc, targets, dropout_rng,
            deterministic=False):
  logits = TeacherModel(cfg).apply({"params": params}, enc, targets,
                                   deterministic=deterministic,
                                   rngs={"dropout": dropout_rng})
  logz = jax.nn.logsumexp(logits, axis=-1)
  ll = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  ce = jnp.mean(logz - ll)
  acc = jnp.mean(jnp.argmax(logits, -1) == targets)
  return ce + Z_LOSS * jnp.mean(jnp.square(logz)), {"ce": ce, "accuracy": acc}


def level_cross_entropy(params, cfg: TeacherConfig, held: list[TokenPiece],
                        *, batches: int = 6, batch: int = 16,
                        seed: int = 13) -> dict:
  """Held-out token cross-entropy (nats) per generated level, with the full
  context and with none (a cold start), and the context's worth: how much
  the teacher gains from what it could copy."""
  k = cfg.geometry.target_levels

  @jax.jit
  def token_ce(enc, targets):
    logits = TeacherModel(cfg).apply({"params": params}, enc, targets,
                                     deterministic=True)
    ll = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return jax.nn.logsumexp(logits, -1) - ll

  out = {}
  for context in ("full", "none"):
    rng = np.random.default_rng(seed)
    ce = [np.asarray(token_ce(*sample_batch(held, rng, batch, cfg,
                                            context=context)))
          for _ in range(batches)]
    out[f"ce_{context}_context"] = np.concatenate(ce).reshape(
        -1, k).mean(0).astype(np.float64).round(3).tolist()
  out["context_worth_nats"] = [round(n - f, 3) for f, n in zip(
      out["ce_full_context"], out["ce_none_context"])]
  return out


def lr_at(step: int, steps: int, peak: float, warmup: int,
          time_fraction: float = 0.0, end_fraction: float = 0.05) -> float:
  """Linear warmup over `warmup` steps, then cosine decay to
  `end_fraction * peak`, over the larger of the step fraction and
  `time_fraction` (the share of the time budget spent) -- so a run cut by
  its time budget still ends annealed instead of at mid-schedule."""
  if step < warmup:
    return peak * (step + 1) / warmup
  frac = (step - warmup) / max(1, steps - warmup)
  frac = min(1.0, max(frac, time_fraction))
  cos = 0.5 * (1.0 + np.cos(np.pi * frac))
  return float(peak * (end_fraction + (1.0 - end_fraction) * cos))


def train_teacher(out_dir, cfg: TeacherConfig, codec: Codec,
                  style_model: StyleModel, *, steps: int, batch: int,
                  lr: float = 1e-3, pieces_per_style: int = 24,
                  seconds: float = 24.0, seed: int = 0, log_every: int = 25,
                  time_budget_s: float | None = None,
                  gin_name: str = "reference",
                  bar_grid_hz: float | None = None,
                  checkpoints: StageCheckpoints | None = None,
                  stop_at_step: int | None = None) -> dict:
  """Pretrains the teacher and writes it with its metrics.

  `out_dir` ending in `.npz`: the shipped form (checksummed float16 npz,
  `save_teacher_npz`) with `<name>.metrics.json` beside it; otherwise an
  orbax teacher checkpoint directory with `metrics.json` inside.

  `checkpoints`: save the training state there every `every_s` seconds and
  resume from the newest readable one, bit-identical to an uninterrupted
  run (the token corpus is rebuilt: it is deterministic in `seed`).
  `stop_at_step`: save and return {"stopped_at_step": n} after that step.
  `time_budget_s` makes the weights depend on the machine's speed (the
  schedule anneals by time); the resumable build leaves it None.
  """
  out_dir = pathlib.Path(out_dir)
  t0 = time.perf_counter()
  corpus = make_corpus(codec, style_model, pieces_per_style=pieces_per_style,
                       seconds=seconds, seed=seed, bar_grid_hz=bar_grid_hz)
  held = make_corpus(codec, style_model, pieces_per_style=2, seconds=seconds,
                     seed=seed + 7919, bar_grid_hz=bar_grid_hz)
  log.info("corpus: %d pieces (%d held out) in %.0f s", len(corpus), len(held),
           time.perf_counter() - t0)
  warmup = min(200, steps // 10)
  opt = optax.chain(optax.clip_by_global_norm(1.0),
                    optax.inject_hyperparams(optax.adamw)(
                        learning_rate=0.0, b2=0.98, weight_decay=0.01))
  params = init_params(cfg, jax.random.PRNGKey(seed))
  opt_state = opt.init(params)
  # The time budget runs out first on a slow machine; the schedule follows
  # whichever limit is nearer so the rate is annealed when training stops.
  train_budget = (None if not time_budget_s else
                  max(1.0, time_budget_s - (time.perf_counter() - t0)))

  @jax.jit
  def step(params, opt_state, enc, targets, rng, lr_now):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, cfg, enc, targets, rng)
    clip_state, adam_state = opt_state
    adam_state = adam_state._replace(hyperparams={
        **adam_state.hyperparams, "learning_rate": lr_now})
    updates, opt_state = opt.update(grads, (clip_state, adam_state), params)
    return optax.apply_updates(params, updates), opt_state, loss, aux

  @jax.jit
  def evaluate(params, enc, targets):
    return loss_fn(params, cfg, enc, targets, jax.random.PRNGKey(0), True)[1]

  rng = np.random.default_rng(seed)
  key = jax.random.PRNGKey(seed + 1)
  curve, t_train, done, first = [], time.perf_counter(), 0, 0
  if checkpoints is not None:
    restored, meta, at = checkpoints.restore(
        {"params": params, "opt_state": opt_state, "key": key})
    if restored is not None:
      params, opt_state, key = (restored["params"], restored["opt_state"],
                                restored["key"])
      rng.bit_generator.state = meta["rng"]
      curve, first, done = meta["curve"], at, at
      log.info("teacher: resumed from the checkpoint at step %d in %s", at,
               checkpoints.directory)

  def save(at):
    checkpoints.save(at, {"params": params, "opt_state": opt_state,
                          "key": key},
                     {"rng": rng.bit_generator.state, "curve": curve})

  for i in range(first, steps):
    if stop_at_step is not None and i >= stop_at_step:
      save(i)
      log.info("teacher: stopped after step %d; rerun to continue", i)
      return {"stopped_at_step": i}
    if checkpoints is not None and i > first and checkpoints.due():
      save(i)
    enc, targets = sample_batch(corpus, rng, batch, cfg)
    key, sub = jax.random.split(key)
    elapsed = time.perf_counter() - t_train
    lr_now = lr_at(i, steps, lr, warmup,
                   elapsed / train_budget if train_budget else 0.0)
    params, opt_state, loss, aux = step(params, opt_state, enc, targets, sub,
                                        np.float32(lr_now))
    done = i + 1
    if done % log_every == 0 or done == steps:
      el = time.perf_counter() - t_train
      curve.append({"step": done, "lr": lr_now, "loss": float(loss),
                    "ce": float(aux["ce"]), "accuracy": float(aux["accuracy"])})
      rate = (done - first) / el
      log.info("teacher step %d/%d loss %.3f acc %.3f | %.2f steps/s, ETA %.0f s",
               done, steps, float(loss), float(aux["accuracy"]), rate,
               (steps - done) / max(rate, 1e-9))
    if time_budget_s and time.perf_counter() - t0 > time_budget_s:
      log.warning("time budget of %.0f s reached at step %d", time_budget_s,
                  done)
      break
  hrng = np.random.default_rng(seed + 13)
  evals = [evaluate(params, *sample_batch(held, hrng, batch, cfg))
           for _ in range(4)]
  metrics = {
      "steps": done, "batch": batch, "train_seconds": time.perf_counter() - t0,
      "held_out_ce": float(np.mean([float(e["ce"]) for e in evals])),
      "held_out_accuracy": float(np.mean([float(e["accuracy"])
                                          for e in evals])),
      "held_out_per_level": level_cross_entropy(
          params, cfg, held, batch=batch, batches=2 if steps < 100 else 6),
      "curve": curve,
  }
  summary = {"train": {k: v for k, v in metrics.items() if k != "curve"}}
  if out_dir.suffix == ".npz":
    save_teacher_npz(out_dir, params, cfg, gin_name=gin_name, extra=summary)
    atomic.write_text(out_dir.with_name(out_dir.stem + ".metrics.json"),
                      json.dumps(metrics, indent=2))
  else:
    save_teacher(out_dir, params, cfg, gin_name=gin_name, extra=summary)
    atomic.write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
  return metrics
