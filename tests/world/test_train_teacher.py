"""The reference teacher's pretraining recipe (v1 §7.2) and a mini training."""

import numpy as np
import pytest

from mrt_distill.codec.base import MinimalCodec
from mrt_distill.geometry import MASK_ID, TINY
from mrt_distill.style.base import MinimalStyleModel
from mrt_distill.teacher.load import load_teacher, load_teacher_config
from mrt_distill.world.training import train_teacher as tt


@pytest.fixture(scope="module")
def cfg():
  return load_teacher_config("tiny")


@pytest.fixture(scope="module")
def corpus():
  return tt.make_corpus(MinimalCodec(TINY), MinimalStyleModel(TINY),
                        pieces_per_style=1, seconds=2.0, seed=0,
                        styles=["techno", "ambient_pads"])


def test_corpus_tokens(corpus):
  g = TINY
  assert [p.style for p in corpus] == ["techno", "ambient_pads"]
  for p in corpus:
    assert p.codes.shape == (2 * g.frame_rate, g.target_levels)
    assert p.codes.min() >= 0 and p.codes.max() < g.codebook_size
    assert p.style_codes.shape[1] == g.style_rvq_depth
  assert not np.array_equal(corpus[0].codes, corpus[1].codes)


def test_batch_recipe(cfg, corpus):
  g = TINY
  rng = np.random.default_rng(0)
  enc, tgt = tt.sample_batch(corpus, rng, 400, cfg)
  assert enc.shape == (400, g.encoder_length) and tgt.shape == (
      400, g.decoder_length)
  # Targets are codec ids of the right level, frame-major.
  codes = g.ids_to_codec(tgt.reshape(400, g.chunk_frames, g.target_levels))
  assert codes.min() >= 0
  ctx = enc[:, :-g.style_levels].reshape(400, g.context_frames,
                                         g.context_levels)
  masked_frames = (ctx == MASK_ID).all(-1).sum(-1)
  # Left padding only: a masked frame is never after a real one.
  for row in ctx:
    m = (row == MASK_ID).all(-1)
    assert not np.any(m[1:] & ~m[:-1])
  # Pieces of 50 frames leave room for the whole 8-frame context; 0.75 of
  # rows use it, the rest draw whole chunks below it: 0 or 4 frames of
  # context, i.e. 8 or 4 masked frames (one of each for two choices).
  full = (masked_frames == 0).mean()
  assert 0.8 < full < 0.95  # 0.75 + 0.25 * P(draw the full 8 frames) = 0.833
  assert set(np.unique(masked_frames)) == {0, 4, 8}
  # CFG condition dropout: about 10% of rows have a MASK style.
  dropped = (enc[:, -g.style_levels:] == MASK_ID).all(-1).mean()
  assert 0.04 < dropped < 0.17
  kept = enc[:, -g.style_levels:][enc[:, -1] != MASK_ID]
  assert (kept >= g.style_offset).all() and (kept < g.vocab_size).all()


def test_mini_training_learns_and_saves(cfg, tmp_path):
  m = tt.train_teacher(tmp_path / "t", cfg, MinimalCodec(TINY),
                       MinimalStyleModel(TINY), steps=40, batch=8, lr=3e-3,
                       pieces_per_style=1, seconds=2.0, log_every=20,
                       gin_name="tiny")
  first, last = m["curve"][0]["loss"], m["curve"][-1]["loss"]
  assert last < first
  # Better than uniform over the vocabulary rows.
  assert m["held_out_ce"] < np.log(cfg.vocab_rows)
  per = m["held_out_per_level"]
  k = cfg.geometry.target_levels
  assert len(per["ce_full_context"]) == len(per["ce_none_context"]) == k
  np.testing.assert_allclose(
      per["context_worth_nats"],
      np.subtract(per["ce_none_context"], per["ce_full_context"]), atol=2e-3)
  # Per level, the same scale as the overall held-out figure.
  assert 0 < min(per["ce_full_context"]) and max(
      per["ce_none_context"]) < np.log(cfg.vocab_rows)
  params, cfg2 = load_teacher(tmp_path / "t")
  assert cfg2 == cfg


def test_lr_schedule_warms_up_then_anneals_by_steps_or_time():
  peak, steps, warm = 2e-3, 1000, 100
  assert tt.lr_at(0, steps, peak, warm) == pytest.approx(peak / warm)
  assert tt.lr_at(warm - 1, steps, peak, warm) == pytest.approx(peak)
  assert tt.lr_at(warm, steps, peak, warm) == pytest.approx(peak)
  assert tt.lr_at(steps, steps, peak, warm) == pytest.approx(0.05 * peak)
  mid = tt.lr_at(550, steps, peak, warm)
  assert mid == pytest.approx(peak * (0.05 + 0.95 * 0.5))
  # A run whose time budget is 90% spent at step 200 is nearly annealed,
  # though only a fifth of its steps ran.
  late = tt.lr_at(200, steps, peak, warm, time_fraction=0.9)
  assert late < 0.1 * peak
  assert late == pytest.approx(
      peak * (0.05 + 0.95 * 0.5 * (1 + np.cos(0.9 * np.pi))))
  # Time never pulls the schedule backwards.
  assert tt.lr_at(900, steps, peak, warm, time_fraction=0.1) == (
      tt.lr_at(900, steps, peak, warm))


def test_batch_context_modes_fix_the_context_length(cfg, corpus):
  g = TINY
  for context, masked in (("full", 0), ("none", g.context_frames)):
    enc, _ = tt.sample_batch(corpus, np.random.default_rng(1), 64, cfg,
                             context=context)
    ctx = enc[:, :-g.style_levels].reshape(64, g.context_frames,
                                           g.context_levels)
    assert set((ctx == MASK_ID).all(-1).sum(-1).tolist()) == {masked}
  with pytest.raises(ValueError, match="context 'some'"):
    tt.sample_batch(corpus, np.random.default_rng(1), 2, cfg, context="some")
