"""Held-out metrics of the reference style model (`train_style`).

Shape letters: N embeddings, S style width, W held-out windows, P styles.

Owns what `train_style` reports about a trained, quantised model, computed
on windows of pieces with seeds training never draws
(`piece_pool.heldout_windows`). Kept apart from the trainer because the
metrics need only a model and those windows, not the training loop:

* `zero_shot_accuracy`: each held-out 4 s window is assigned the style whose
  style-word prompt ("techno", ...) is nearest; top-1 style accuracy, also
  per style.
* `text_to_audio_top1` / `text_to_audio_precision_at_10`: each style prompt
  retrieves its nearest held-out windows; the fraction of the top 1 / top 10
  that are of that style.
* `prompt_audio_cosine`, `prompt_token_share_L{1,2}`,
  `prompt_code_seen_level{0,1}`: how close each style prompt's embedding is
  to its held-out audio, the share of that audio whose first 1 / 2 style
  tokens equal the prompt's, and the share of styles whose prompt code at
  level l is used by some of their audio at level l. The LM learns from
  audio tokens and is prompted with text tokens, so the prompt's codes must
  be codes it has seen with that style's music. (Whole 2-level tuples are
  rare even among audio windows of one style: level 1 is fine-grained.)
* `descriptor_auc`: for every other descriptor word ("piano", "fast", ...),
  how well its text embedding separates windows of pieces that have it from
  those that have not (ROC AUC; 0.5 is chance).
* `rvq`: quantiser error by depth, codes in use, and whether the style
  prompts stay distinct in the levels the LM sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrt_distill.geometry import Geometry
from mrt_distill.style import reference


def _auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
  """ROC AUC: P(a positive scores above a negative), ties count half."""
  diff = pos_scores[:, None] - neg_scores[None, :]
  return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def evaluate(model: reference.ReferenceStyleModel, windows_WxN: np.ndarray,
             labels_W: np.ndarray, styles: Sequence[str],
             owners_W: np.ndarray | None = None,
             descriptors: Sequence[Sequence[str]] | None = None) -> dict:
  """Held-out zero-shot and retrieval metrics (see the module docstring).

  With `owners_W` and `descriptors`, also the ROC AUC of every single
  descriptor word as a detector: cosine(text(word), window) for windows
  whose piece has the word vs windows whose piece has not. It shows whether
  single non-style words ("piano", "fast", "808") embed sensibly.
  """
  audio_WxS = model.embed_audio_windows(windows_WxN)
  text_PxS = model.embed_text(list(styles))
  sim_PxW = text_PxS @ audio_WxS.T
  pred = np.argmax(sim_PxW, axis=0)
  per_style = {s: float(np.mean(pred[labels_W == i] == i))
               for i, s in enumerate(styles)}
  order = np.argsort(-sim_PxW, axis=1)
  top10 = labels_W[order[:, :10]] == np.arange(len(styles))[:, None]
  out = {
      "zero_shot_accuracy": float(np.mean(pred == labels_W)),
      "zero_shot_accuracy_per_style": per_style,
      "text_to_audio_top1": float(np.mean(top10[:, 0])),
      "text_to_audio_precision_at_10": float(np.mean(top10)),
      "heldout_windows": int(windows_WxN.shape[0]),
  }
  # Do style prompts tokenise like their music? The LM is trained on audio
  # tokens and prompted with text tokens (module docstring of `reference`).
  unit = text_PxS / np.linalg.norm(text_PxS, axis=1, keepdims=True)
  out["prompt_audio_cosine"] = float(np.mean(
      [np.mean(audio_WxS[labels_W == i] @ unit[i])
       for i in range(len(styles))]))
  audio_codes = model.tokenize(audio_WxS)
  text_codes = model.tokenize(text_PxS)
  for depth in range(1, model.geometry.style_levels + 1):
    same = [np.all(audio_codes[labels_W == i, :depth] == text_codes[i, :depth],
                   axis=1) for i in range(len(styles))]
    out[f"prompt_token_share_L{depth}"] = float(np.mean(
        [np.mean(x) for x in same]))
    level = depth - 1
    out[f"prompt_code_seen_level{level}"] = float(np.mean(
        [np.isin(text_codes[i, level], audio_codes[labels_W == i, level])
         for i in range(len(styles))]))
  if owners_W is not None and descriptors is not None:
    words = sorted({w for d in descriptors for w in d} - set(styles))
    word_emb = model.embed_text(words)
    sims = word_emb @ audio_WxS.T
    aucs = {}
    for i, w in enumerate(words):
      has = np.asarray([w in descriptors[o] for o in owners_W])
      if has.any() and not has.all():
        aucs[w] = _auc(sims[i, has], sims[i, ~has])
    out["descriptor_auc"] = aucs
    out["descriptor_auc_mean"] = float(np.mean(list(aucs.values())))
  return out


def rvq_report(model: reference.ReferenceStyleModel, audio_NxS: np.ndarray,
               text_MxS: np.ndarray, styles: Sequence[str],
               geometry: Geometry) -> dict:
  """Relative RVQ error by depth (audio, text), codes in use, and whether
  style prompts stay distinct in the levels the LM sees."""
  books = model.codebooks

  def rel_err(x):
    if not len(x):
      return []
    codes = model.tokenize(x)
    recon = np.zeros_like(x)
    out = []
    for level in range(books.shape[0]):
      recon = recon + books[level][codes[:, level]]
      out.append(float(np.mean(np.sum((x - recon)**2, -1))
                       / np.mean(np.sum(x**2, -1))))
    return out

  codes = model.tokenize(audio_NxS)
  style_codes = model.tokenize(model.embed_text(list(styles)))
  lm = style_codes[:, :geometry.style_levels]
  return {
      "relative_sq_error_by_depth_audio": rel_err(audio_NxS),
      "relative_sq_error_by_depth_text": rel_err(text_MxS),
      "style_prompt_codes": {s: c.tolist() for s, c in zip(styles,
                                                             style_codes)},
      "distinct_style_tokens_seen_by_lm": len({tuple(c) for c in lm}),
      "codes_used_per_level_audio": [
          int(len(np.unique(codes[:, l]))) for l in range(codes.shape[1])],
  }
