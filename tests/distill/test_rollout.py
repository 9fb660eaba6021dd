"""Tests for teacher rollouts (RolloutGenerator) and the replay buffer."""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
import pytest

from mrt_distill.codec.base import MinimalCodec
from mrt_distill.distill.prompts import iterator_state_to_json
from mrt_distill.distill.prompts import prompt_dataset
from mrt_distill.distill.prompts import PromptRecord
from mrt_distill.distill.prompts import restore_iterator
from mrt_distill.distill.rollout import ReplayBuffer
from mrt_distill.distill.rollout import RolloutGenerator
from mrt_distill.distill.student import context_ids
from mrt_distill.geometry import MASK_ID
from mrt_distill.style import mixing
from mrt_distill.style.base import MinimalStyleModel
from mrt_distill.teacher.decode import SamplingParams
from mrt_distill.teacher.load import load_teacher_config
from mrt_distill.teacher.model import init_params
from mrt_distill.teacher.system import TeacherSystem

B = 2  # One batch size everywhere: the tiny teacher compiles once.
KEYS = ("ctx_ids", "style_ids", "style_emb", "tokens", "latents",
        "session_chunk")


@pytest.fixture(scope="module")
def system():
  cfg = load_teacher_config("tiny")
  g = cfg.geometry
  return TeacherSystem(cfg, init_params(cfg, jax.random.PRNGKey(0)),
                       MinimalCodec(g), MinimalStyleModel(g),
                       SamplingParams())


def cycle(*records):
  return itertools.cycle([PromptRecord(*r).to_dict() if isinstance(r, tuple)
                          else PromptRecord(r).to_dict() for r in records])


def emb(system, text):
  return mixing.embed_prompt_mix(system.style_model, text)


def chunk_ids(g, codes):
  """(B, C, K) codes -> (B, C * context_levels) encoder ids, by hand."""
  lv = np.arange(g.context_levels)
  ids = g.codec_offset + g.codebook_size * lv + codes[..., :g.context_levels]
  return ids.reshape(codes.shape[0], -1)


def take(gen, n):
  return [gen.next() for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(KEYS) == sorted(y)
    for k in KEYS:
      assert x[k].dtype == y[k].dtype, k
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


class ConstStudent:
  """A fake student: always the same chunk; records what it was given."""

  def __init__(self, g, value=3):
    self.g, self.value, self.calls = g, value, []

  def __call__(self, ctx_ids, style_ids, style_emb):
    self.calls.append((np.array(ctx_ids), np.array(style_ids),
                       np.array(style_emb)))
    b = ctx_ids.shape[0]
    return np.full((b, self.g.chunk_frames, self.g.target_levels),
                   self.value, np.int32)


# ---- one batch ---------------------------------------------------------------
def test_first_batch_is_a_cold_start_with_consistent_fields(system):
  g = system.geometry
  prompts = ["techno:1.0, flute:0.5", "jazz"]
  gen = RolloutGenerator(system, cycle(*prompts), batch=B, session_chunks=4,
                         seed=0)
  ex = gen.next()
  assert sorted(ex) == sorted(KEYS)
  n, l = g.context_frames // g.chunk_frames, g.chunk_frames * g.context_levels
  c, k, d = g.chunk_frames, g.target_levels, g.codec_latent_dim
  assert ex["ctx_ids"].dtype == np.int32 and ex["ctx_ids"].shape == (B, n, l)
  assert (ex["ctx_ids"] == MASK_ID).all()  # cold start: nothing heard yet
  assert ex["style_ids"].dtype == np.int32
  assert ex["style_ids"].shape == (B, g.style_levels)
  assert ex["style_emb"].dtype == np.float32
  assert ex["style_emb"].shape == (B, g.style_embed_dim)
  want = np.stack([emb(system, p) for p in prompts])
  np.testing.assert_array_equal(ex["style_emb"], want)
  assert not np.allclose(want[0], want[1])  # the prompts really differ
  np.testing.assert_array_equal(
      ex["style_ids"], mixing.style_tokens(system.style_model, g, want))
  assert ex["tokens"].dtype == np.int32 and ex["tokens"].shape == (B, c, k)
  assert ex["tokens"].min() >= 0 and ex["tokens"].max() < g.codebook_size
  assert ex["latents"].dtype == np.float32
  assert ex["latents"].shape == (B, c, d)
  np.testing.assert_allclose(ex["latents"],
                             system.codec.dequantize(ex["tokens"]),
                             rtol=1e-6, atol=1e-6)
  assert ex["session_chunk"].dtype == np.int32
  np.testing.assert_array_equal(ex["session_chunk"], [0, 0])
  assert gen.records == [PromptRecord(p) for p in prompts]
  assert gen.calls == 1


def test_context_rolls_by_one_chunk_per_call(system):
  g = system.geometry
  c = g.chunk_frames
  assert g.context_frames == 2 * c  # the tiny context holds two chunks
  gen = RolloutGenerator(system, cycle("techno", "jazz"), batch=B,
                         session_chunks=10, seed=1)
  tokens = []
  for t in range(4):
    ex = gen.next()
    np.testing.assert_array_equal(ex["session_chunk"], [t, t])
    # The chunk just written is the newest chunk of the context.
    np.testing.assert_array_equal(gen.contexts[:, -c:], ex["tokens"])
    if t == 0:
      assert (ex["ctx_ids"] == MASK_ID).all()
    elif t == 1:  # half warm: old half still MASK, new half the last chunk
      assert (ex["ctx_ids"][:, 0] == MASK_ID).all()
      np.testing.assert_array_equal(ex["ctx_ids"][:, 1],
                                    chunk_ids(g, tokens[0]))
    else:  # the oldest chunk dropped out
      np.testing.assert_array_equal(ex["ctx_ids"][:, 0],
                                    chunk_ids(g, tokens[t - 2]))
      np.testing.assert_array_equal(ex["ctx_ids"][:, 1],
                                    chunk_ids(g, tokens[t - 1]))
    if t:
      np.testing.assert_array_equal(ex["ctx_ids"][:, -1],
                                    context_ids(g, tokens[t - 1])[:, 0])
    tokens.append(ex["tokens"])
  assert not np.array_equal(tokens[2], tokens[3])  # sampling moves on


def test_sessions_restart_cold_with_the_next_prompt(system):
  prompts = cycle("techno", "jazz", "ambient")
  gen = RolloutGenerator(system, prompts, batch=B, session_chunks=3, seed=2)
  first = take(gen, 3)
  for t, ex in enumerate(first):
    np.testing.assert_array_equal(ex["session_chunk"], [t, t])
    np.testing.assert_array_equal(
        ex["style_emb"], np.stack([emb(system, "techno"),
                                   emb(system, "jazz")]))
  assert not (first[2]["ctx_ids"] == MASK_ID).all()
  assert gen.records == [PromptRecord("techno"), PromptRecord("jazz")]
  ex = gen.next()
  np.testing.assert_array_equal(ex["session_chunk"], [0, 0])
  assert (ex["ctx_ids"] == MASK_ID).all()
  assert gen.records == [PromptRecord("ambient"), PromptRecord("techno")]
  np.testing.assert_array_equal(
      ex["style_emb"], np.stack([emb(system, "ambient"),
                                 emb(system, "techno")]))
  # Exactly one prompt per restarted session was consumed.
  assert next(prompts) == PromptRecord("jazz").to_dict()
  np.testing.assert_array_equal(gen.next()["session_chunk"], [1, 1])


def test_transition_interpolates_style_embeddings_per_chunk(system):
  g = system.geometry
  gen = RolloutGenerator(system, cycle(("techno", "jazz", 2), "techno"),
                         batch=B, session_chunks=4, seed=3)
  a, b = emb(system, "techno"), emb(system, "jazz")
  want = [a, 0.5 * a + 0.5 * b, b, b]
  for t, ex in enumerate(take(gen, 4)):
    assert ex["style_emb"].dtype == np.float32
    np.testing.assert_allclose(ex["style_emb"][0], want[t], rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_array_equal(ex["style_emb"][1], a)  # plain: constant
    np.testing.assert_array_equal(
        ex["style_ids"],
        mixing.style_tokens(system.style_model, g, ex["style_emb"]))
  assert not np.allclose(a, b)


# ---- state -------------------------------------------------------------------
def test_state_round_trip_reproduces_the_next_batches(system):
  g = system.geometry
  records = [PromptRecord("techno"), PromptRecord("jazz"),
             PromptRecord("ambient"), PromptRecord("techno", "jazz", 2)]
  ds = prompt_dataset(records, seed=0)

  def make(prompts):
    return RolloutGenerator(system, prompts, batch=B, session_chunks=2,
                            seed=4, on_policy_prob=0.5,
                            student_fn=ConstStudent(g))

  it = iter(ds)
  gen = make(it)
  gen.next()
  state, it_state = gen.get_state(), iterator_state_to_json(it)
  text = json.dumps(state)
  assert json.loads(text) == state  # plain JSON, nothing lost
  # Three more calls cross a restart (new prompts, cold context) and use the
  # on-policy RNG.
  want = take(gen, 3)
  np.testing.assert_array_equal(want[1]["session_chunk"], [0, 0])

  other = make(restore_iterator(ds, it_state))
  other.set_state(json.loads(text))
  np.testing.assert_array_equal(other.contexts, np.asarray(state["contexts"]))
  assert other.calls == 1
  assert_batches_equal(take(other, 3), want)
  assert other.get_state() == gen.get_state()


def test_set_state_from_another_batch_size_is_refused(system):
  gen = RolloutGenerator(system, cycle("techno"), batch=B, session_chunks=2,
                         seed=0)
  state = json.loads(json.dumps(gen.get_state()))
  bigger = RolloutGenerator(system, cycle("techno"), batch=B + 1,
                            session_chunks=2, seed=0)
  with pytest.raises(ValueError, match="another config"):
    bigger.set_state(state)


def test_same_seed_same_batches_other_seed_other_tokens(system):
  def run(seed):
    gen = RolloutGenerator(system, cycle("techno", "jazz", "ambient"),
                           batch=B, session_chunks=2, seed=seed)
    return take(gen, 3)

  a = run(7)
  assert_batches_equal(a, run(7))
  c = run(8)
  assert not np.array_equal(a[0]["tokens"], c[0]["tokens"])
  # Same prompts, so the style side does not depend on the seed.
  np.testing.assert_array_equal(a[0]["style_emb"], c[0]["style_emb"])


# ---- on-policy ---------------------------------------------------------------
def test_on_policy_advances_the_context_with_the_student_chunk(system):
  g = system.geometry
  c = g.chunk_frames
  teacher_only = RolloutGenerator(system, cycle("techno", "jazz"), batch=B,
                                  session_chunks=4, seed=5)
  t0 = teacher_only.next()

  student = ConstStudent(g, 3)
  gen = RolloutGenerator(system, cycle("techno", "jazz"), batch=B,
                         session_chunks=4, seed=5, on_policy_prob=1.0,
                         student_fn=student)
  ex = gen.next()
  # The targets stay the teacher's; only the session's history is the
  # student's.
  np.testing.assert_array_equal(ex["tokens"], t0["tokens"])
  assert not (ex["tokens"] == 3).all()
  assert (gen.contexts[:, -c:] == 3).all()
  assert len(student.calls) == 1
  ctx, sty, e = student.calls[0]
  assert ctx.shape == (B, g.context_frames // c, c * g.context_levels)
  assert ctx.dtype == np.int32
  np.testing.assert_array_equal(ctx, ex["ctx_ids"])
  assert sty.shape == (B, g.style_levels)
  np.testing.assert_array_equal(sty, ex["style_ids"])
  assert e.shape == (B, g.style_embed_dim)
  np.testing.assert_array_equal(e, ex["style_emb"])
  # The next example's context is the student's chunk.
  nxt = gen.next()
  np.testing.assert_array_equal(
      nxt["ctx_ids"][:, -1], chunk_ids(g, np.full((B, c, g.target_levels), 3)))

  never = ConstStudent(g, 3)
  gen = RolloutGenerator(system, cycle("techno", "jazz"), batch=B,
                         session_chunks=4, seed=5, on_policy_prob=0.0,
                         student_fn=never)
  ex = gen.next()
  np.testing.assert_array_equal(gen.contexts[:, -c:], ex["tokens"])
  np.testing.assert_array_equal(ex["tokens"], t0["tokens"])
  assert never.calls == []


@pytest.mark.parametrize("kwargs", [
    dict(batch=0), dict(session_chunks=0), dict(on_policy_prob=1.5),
    dict(on_policy_prob=-0.1)])
def test_bad_arguments_are_refused(system, kwargs):
  args = dict(batch=B, session_chunks=2, seed=0) | kwargs
  with pytest.raises(ValueError):
    RolloutGenerator(system, cycle("techno"), **args)


# ---- replay buffer -----------------------------------------------------------
def rows(start, n):
  x = np.arange(start, start + n, dtype=np.int32)
  return {"x": x, "y": np.stack([x, -x], axis=1).astype(np.float32)}


def test_replay_ring_overwrites_the_oldest_rows():
  buf = ReplayBuffer(5, seed=0)
  buf.add(rows(10, 3))
  assert (buf.size, buf.cursor) == (3, 3)
  np.testing.assert_array_equal(buf.data["x"], [10, 11, 12, 0, 0])
  for _ in range(5):  # only the stored rows are drawn
    s = buf.sample(8)
    assert set(s["x"].tolist()) <= {10, 11, 12}
  buf.add(rows(13, 4))  # wraps: 13, 14 fill the end, 15, 16 replace 10, 11
  assert (buf.size, buf.cursor) == (5, 2)
  np.testing.assert_array_equal(buf.data["x"], [15, 16, 12, 13, 14])
  np.testing.assert_array_equal(buf.data["y"][:, 1], -buf.data["x"])
  assert buf.data["x"].dtype == np.int32 and buf.data["y"].shape == (5, 2)
  s = buf.sample(64)
  assert s["x"].shape == (64,) and s["y"].shape == (64, 2)
  assert set(s["x"].tolist()) <= {12, 13, 14, 15, 16}
  assert len(set(s["x"].tolist())) > 1
  np.testing.assert_array_equal(s["y"], np.stack([s["x"], -s["x"]], 1))


def test_replay_state_round_trip_gives_the_same_next_sample():
  buf = ReplayBuffer(5, seed=1)
  buf.add(rows(0, 4))
  buf.add(rows(4, 3))
  buf.sample(3)
  state = json.loads(json.dumps(buf.get_state()))
  arrays = {k: v.copy() for k, v in buf.arrays().items()}
  for v in arrays.values():  # e.g. arrays restored from a checkpoint
    v.setflags(write=False)
  other = ReplayBuffer(5, seed=99)
  other.set_state(state, arrays)
  assert (other.size, other.cursor) == (buf.size, buf.cursor) == (5, 2)
  a, b = buf.sample(6), other.sample(6)
  for k in ("x", "y"):
    np.testing.assert_array_equal(a[k], b[k])
  # The restored buffer keeps working and has its own copy of the rows.
  other.add(rows(100, 1))
  np.testing.assert_array_equal(other.data["x"], [5, 6, 100, 3, 4])
  np.testing.assert_array_equal(arrays["x"], [5, 6, 2, 3, 4])


def test_replay_rejects_empty_sampling_and_zero_capacity():
  with pytest.raises(ValueError, match="empty"):
    ReplayBuffer(3, seed=0).sample(1)
  with pytest.raises(ValueError, match="capacity"):
    ReplayBuffer(0, seed=0)
