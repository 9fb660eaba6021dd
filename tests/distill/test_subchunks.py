"""The chunk-length knob: teacher chunks split into shorter student chunks,
a short-chunk student trains and serves with the same code."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mrt_distill.distill import checkpoints, config_io, loop
from mrt_distill.distill import student as S
from mrt_distill.distill.subchunks import split_examples
from mrt_distill.geometry import MASK_ID, TINY
from mrt_distill.teacher.load import load_teacher_config
from mrt_distill.teacher.system import context_frame_ids


def _examples(b=3, seed=0):
  g, rng = TINY, np.random.default_rng(seed)
  ctx = rng.integers(0, g.codebook_size, (b, g.context_frames,
                                          g.target_levels))
  ctx[0] = -1  # a cold start
  tokens = rng.integers(0, g.codebook_size, (b, g.chunk_frames,
                                             g.target_levels))
  return {
      "ctx_ids": S.context_ids(g, ctx), "tokens": tokens.astype(np.int32),
      "latents": rng.standard_normal((b, g.chunk_frames, g.codec_latent_dim)
                                     ).astype(np.float32),
      "style_ids": rng.integers(0, 9, (b, g.style_levels)).astype(np.int32),
      "style_emb": rng.standard_normal((b, g.style_embed_dim)).astype(
          np.float32)}, ctx, tokens


def test_split_is_every_slice_of_the_stream_with_its_own_past():
  ex, ctx, tokens = _examples()
  student = TINY.replace(chunk_frames=2)
  out = split_examples(ex, TINY, student)
  b, f, w = 3, 2, TINY.context_frames
  assert out["ctx_ids"].shape == (b * 2, w // f, f * TINY.context_levels)
  assert out["latents"].shape == (b * 2, f, TINY.codec_latent_dim)
  stream = np.concatenate([ctx, tokens], axis=1)  # (B, W + C, K)
  for j in range(2):
    want = S.context_ids(student, stream[:, j * f:j * f + w])
    np.testing.assert_array_equal(out["ctx_ids"][j * b:(j + 1) * b], want)
    np.testing.assert_array_equal(out["latents"][j * b:(j + 1) * b],
                                  ex["latents"][:, j * f:(j + 1) * f])
    np.testing.assert_array_equal(out["style_emb"][j * b:(j + 1) * b],
                                  ex["style_emb"])
  # The cold start's second slice sees the first slice's tokens at the end
  # of an otherwise empty window.
  second = out["ctx_ids"][b].reshape(w, -1)
  assert (second[:-f] == MASK_ID).all()
  np.testing.assert_array_equal(second[-f:],
                                context_frame_ids(TINY, tokens[:1, :f])[0])


def test_same_chunk_length_is_the_identity():
  ex, _, _ = _examples()
  out = split_examples(ex, TINY, TINY)
  for k in ("ctx_ids", "latents", "style_ids", "style_emb"):
    np.testing.assert_array_equal(out[k], ex[k])


def test_chunk_frames_must_tile_the_teacher_chunk_and_context():
  cfg = load_teacher_config("tiny")
  with pytest.raises(ValueError, match=r"must divide .* use one of \[1, 2, 4\]"):
    S.StudentConfig(cfg, chunk_frames=3)
  g = S.StudentConfig(cfg, chunk_frames=2).geometry
  assert (g.chunk_frames, g.context_frames, g.chunk_samples) == (
      2, 8, TINY.chunk_samples // 2)


def test_short_chunk_student_trains_and_serves(tmp_path):
  cfg = config_io.load_config("reference_cpu:tiny")
  cfg.train.update(steps=2, log_every=1, eval_every=2, checkpoint_every=2)
  cfg.student.chunk_frames = 2
  summary, run, state = loop.train(cfg, tmp_path)
  assert summary["steps"] == 2
  assert np.isfinite(summary["final_metrics"]["loss/total"])
  assert summary["final_metrics"]["eval/loss/total"] > 0
  assert run.model.cfg.geometry.chunk_frames == 2
  # The serving step runs the short-chunk student: half a teacher chunk of
  # audio per call.
  from mrt_distill.serve.chunk_step import ChunkStepper, controls
  params = S.merge_params(state.params, state.frozen)
  stepper = ChunkStepper(run.model, run.world.codec, run.world.style_model,
                         run.scaler)
  st = stepper.init_state(params, 1)
  emb = np.zeros((1, TINY.style_embed_dim), np.float32)
  audio, st = stepper.chunk_step(params, st, controls(emb), 
                                 jax.random.PRNGKey(0))
  assert audio.shape == (1, TINY.chunk_samples // 2, TINY.channels)
  assert np.isfinite(np.asarray(audio)).all()
  # A checkpoint of another chunk length is refused on resume.
  cfg.student.chunk_frames = 4
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match="chunk_frames"):
    loop.train(cfg, tmp_path)
