"""The host streaming session: determinism (threaded == synchronous), controls
at chunk boundaries without recompiles, bad controls never stop the music,
transitions, underruns, audio injection, stats."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mrt_distill.codec.base import MinimalCodec
from mrt_distill.distill import student as S
from mrt_distill.distill.losses import NoiseSchedule
from mrt_distill.serve.chunk_step import ChunkStepper, controls
from mrt_distill.serve.session import StreamSession
from mrt_distill.style.base import MinimalStyleModel
from mrt_distill.teacher.load import load_teacher_config

STAT_KEYS = {"chunks", "underruns", "chunk_ms_p50", "chunk_ms_p95",
             "lead_seconds", "control_delay_ms_p50", "control_delay_ms_p95",
             "prompt", "weights", "cfg_weight", "steps"}


class _VocabStyleModel(MinimalStyleModel):
  """A style model that, like the reference one, rejects unknown words."""
  VOCAB = ("techno", "flute", "jazz", "rock")

  def embed_text(self, texts):
    for t in [texts] if isinstance(texts, str) else texts:
      if t.strip().lower() not in self.VOCAB:
        raise ValueError(f"style text {t!r} has no word the model knows")
    return super().embed_text(texts)


@pytest.fixture(scope="module")
def student():
  """A random tiny student with every weight random (so the output depends
  on context, style and noise), built from shapes alone: no flax init."""
  cfg = load_teacher_config("tiny")
  g = cfg.geometry
  scfg = S.StudentConfig(cfg, lora_rank=2, noise=NoiseSchedule())
  shapes = jax.eval_shape(lambda r: S.init_student_params(scfg, r),
                          jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  flat = {}
  for k, v in traverse_util.flatten_dict(shapes).items():
    if k[-1] == "scale":
      x = np.ones(v.shape)
    elif k[-1] == "lora_b":
      x = 0.3 * rng.standard_normal(v.shape)
    elif k[-1] == "kernel" or k[-1] == "lora_a":
      x = rng.standard_normal(v.shape) / np.sqrt(v.shape[0])
    else:
      x = 0.5 * rng.standard_normal(v.shape)
    flat[k] = jnp.asarray(x, jnp.float32)
  params = traverse_util.unflatten_dict(flat)
  codec = MinimalCodec(g)
  style = _VocabStyleModel(g)
  stepper = ChunkStepper(S.StudentModel(scfg), codec, style,
                         S.LatentScaler.for_codec(codec,
                                                  scfg.noise.sigma_data),
                         max_steps=3)
  StreamSession(stepper, params, style).next_chunk()  # compile once
  return stepper, params, style


def _session(student, **kw):
  stepper, params, style = student
  kw.setdefault("prompt", "techno:1.0")
  return StreamSession(stepper, params, style, **kw)


def _emb(style, text):
  return np.asarray(style.embed_text(text)[0], np.float32)


def test_threaded_audio_equals_next_chunk_and_seed_decides(student):
  sync = _session(student, seed=3)
  assert (sync.sample_rate, sync.channels) == (8000, 1)
  chunks = [sync.next_chunk() for _ in range(5)]
  assert chunks[0].shape == (sync.chunk_samples, 1)
  assert chunks[0].dtype == np.float32
  live = _session(student, seed=3, lead_chunks=2)
  live.start(wait=True, timeout=30)
  got = np.concatenate([live.read(sync.chunk_samples // 2, timeout=10)
                        for _ in range(10)])
  live.stop()
  np.testing.assert_array_equal(got, np.concatenate(chunks))
  other = _session(student, seed=4).next_chunk()
  assert np.abs(other - chunks[0]).max() > 1e-3
  assert live.stats()["underruns"] == 0


def test_controls_apply_at_the_next_chunk_without_recompiles(student):
  stepper = student[0]
  base = _session(student, seed=1)
  ref = [base.next_chunk() for _ in range(2)]
  s = _session(student, seed=1)
  np.testing.assert_array_equal(s.next_chunk(), ref[0])
  compiles = stepper.compiles
  s.set_controls(cfg_weight=2.0, steps=3)
  assert (s.stats()["cfg_weight"], s.stats()["steps"]) == (2.0, 3)
  assert np.abs(s.next_chunk() - ref[1]).max() > 1e-3
  for mix in ("jazz:1", {"rock": 0.5, "flute": 2.0}, "techno:1, jazz:0.1"):
    s.set_prompt(mix)
    s.set_controls(cfg_weight=0.5, steps=2)
    s.next_chunk()
  s.inject_audio(np.full((3 * s.chunk_samples, 1), 0.2, np.float32),
                 s.sample_rate, gain=0.7)
  s.next_chunk()
  assert stepper.compiles == compiles
  for bad in ({"cfg_weight": -1.0}, {"cfg_weight": float("nan")},
              {"steps": 0}, {"steps": 4}, {"steps": True}, {"steps": 2.5},
              {"cfg_weight": 1.0, "steps": 9}):
    with pytest.raises(ValueError):
      s.set_controls(**bad)
  assert (s.stats()["cfg_weight"], s.stats()["steps"]) == (0.5, 2)


def test_bad_prompts_raise_and_the_stream_keeps_playing(student):
  _, _, style = student
  s = _session(student, prompt="techno:1")
  s.start(wait=True, timeout=30)
  before = s.style_embedding
  np.testing.assert_allclose(before, _emb(style, "techno"), atol=1e-6)
  for bad in ("", "techno:-1", "techno:0, jazz:0", "saxophone:1", {},
              {"techno": "loud"}, {"techno": -2.0}, 7, "techno:1,,jazz:1"):
    with pytest.raises(ValueError, match="keeps playing 'techno:1'"):
      s.set_prompt(bad)
    with pytest.raises(ValueError):
      s.schedule_transition("techno", bad, 1.0)
  np.testing.assert_array_equal(s.style_embedding, before)
  n = s.stats()["chunks"]
  s.read(3 * s.chunk_samples, timeout=10)  # the producer refills the lead
  deadline = time.monotonic() + 10
  while s.stats()["chunks"] < n + 3 and time.monotonic() < deadline:
    time.sleep(0.01)
  st = s.stats()
  assert st["running"] and st["chunks"] >= n + 3 and st["errors"] == 0
  assert st["prompt"] == "techno:1" and st["weights"] == {"techno": 1.0}
  # A good mix is sum(w e) / sum(w), whether written as text or a dict.
  s.set_prompt("techno:1, flute:0.5")
  want = (_emb(style, "techno") + 0.5 * _emb(style, "flute")) / 1.5
  np.testing.assert_allclose(s.style_embedding, want, atol=1e-6)
  s.set_prompt({"flute": 0.5, "techno": 1.0})
  np.testing.assert_allclose(s.style_embedding, want, atol=1e-6)
  s.stop()
  assert not s.running


def test_transition_moves_the_embedding_from_a_to_b_per_chunk(student):
  stepper, params, style = student
  s = _session(student, prompt="jazz:1", seed=5)
  seen = []
  s.subscribe(lambda chunk, info: seen.append(info["transition_alpha"]))
  a, b = _emb(style, "techno"), _emb(style, "flute")
  s.schedule_transition("techno:1", "flute:1", seconds=4 * s.chunk_seconds)
  state = stepper.init_state(params, 1)
  for j, alpha in enumerate([0.0, 0.25, 0.5, 0.75, 1.0, 1.0]):
    want = (1 - alpha) * a + alpha * b
    np.testing.assert_allclose(s.style_embedding, want, atol=1e-6)
    got = s.next_chunk()
    # The chunk is exactly the step with the interpolated embedding.
    ref, state = stepper.chunk_step(
        params, state, controls(want[None]),
        jax.random.fold_in(jax.random.PRNGKey(5), j))
    np.testing.assert_allclose(got, np.asarray(ref)[0], atol=1e-6)
  assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, None]
  st = s.stats()
  assert st["transition"] is None and st["prompt"] == "flute:1"


def test_read_counts_underruns_only_when_the_producer_is_late(student):
  slow = _session(student)
  slow.subscribe(lambda chunk, info: time.sleep(0.3))  # a slow producer
  slow.start()
  out = [slow.read(slow.chunk_samples, timeout=0.01) for _ in range(4)]
  slow.stop()
  assert all(x.shape == (slow.chunk_samples, 1) for x in out)
  assert slow.stats()["underruns"] >= 3
  assert np.all(out[0] == 0)  # nothing was ready: silence
  fast = _session(student, lead_chunks=3)
  fast.start(wait=True, timeout=30)
  lead = fast.stats()["lead_seconds"]
  assert lead == pytest.approx(3 * fast.chunk_seconds)
  got = [fast.read(fast.chunk_samples // 4) for _ in range(8)]  # no waiting
  fast.stop()
  assert fast.stats()["underruns"] == 0
  sync = _session(student)
  np.testing.assert_array_equal(np.concatenate(got), np.concatenate(
      [sync.next_chunk(), sync.next_chunk()]))


def test_injection_steers_the_context_never_the_output(student):
  stepper = student[0]
  sc = 1280  # tiny geometry: 0.16 s chunks at 8 kHz
  loud = np.random.default_rng(0).standard_normal((3 * sc, 1)).astype(
      np.float32)
  ref_s = _session(student, seed=2)
  ref = [ref_s.next_chunk() for _ in range(4)]
  # Off (gain 0) is exactly no injection.
  off = _session(student, seed=2)
  off.inject_audio(loud, 8000, gain=0.0)
  np.testing.assert_array_equal(
      np.stack([off.next_chunk() for _ in range(4)]), np.stack(ref))
  # Free mode, input there before its chunk: the chunk plays unchanged, the
  # next one hears it.
  free = _session(student, seed=2)
  assert free.inject_audio(loud, 8000) == stepper.geometry.crossfade_samples
  np.testing.assert_array_equal(free.next_chunk(), ref[0])
  assert np.abs(free.next_chunk() - ref[1]).max() > 1e-3
  # Free mode, input that arrives late for chunks already in the window:
  # they are re-encoded before the next chunk.
  late = _session(student, seed=2)
  late.next_chunk(), late.next_chunk()
  ctx_compiles = stepper.context_compiles
  late.inject_audio(loud[:sc], 8000, at=0)
  assert np.abs(late.next_chunk() - ref[2]).max() > 1e-3
  # Looper: the loop tiles the whole window, from the next chunk on.
  loop = _session(student, seed=2)
  loop.next_chunk()
  loop.inject_audio(loud[:500], 8000, gain=0.5, mode="looper",
                    loop_seconds=0.1)
  assert loop.stats()["inject_mode"] == "looper"
  assert np.abs(loop.next_chunk() - ref[1]).max() > 1e-3
  loop.inject_audio(loud[:10], 8000, gain=0.0)
  assert loop.stats()["inject_mode"] is None
  assert stepper.context_compiles - ctx_compiles <= 1


def test_inject_audio_rejects_what_does_not_fit(student):
  s = _session(student)
  x = np.zeros((100, 1), np.float32)
  with pytest.raises(ValueError, match="44100 Hz, expected 8000 Hz"):
    s.inject_audio(x, 44100)
  with pytest.raises(ValueError, match=r"shape \(100, 2\), expected "
                                       r"\(samples, 1\)"):
    s.inject_audio(np.zeros((100, 2), np.float32), 8000)
  with pytest.raises(ValueError, match="shape"):
    s.inject_audio(np.zeros((0, 1), np.float32), 8000)
  with pytest.raises(ValueError, match="dtype"):
    s.inject_audio(np.zeros((100, 1), np.int16), 8000)
  with pytest.raises(ValueError, match="mode"):
    s.inject_audio(x, 8000, mode="loop")
  with pytest.raises(ValueError, match="loop_seconds"):
    s.inject_audio(x, 8000, mode="looper")
  with pytest.raises(ValueError, match="gain"):
    s.inject_audio(x, 8000, gain=-1.0)
  with pytest.raises(ValueError, match="NaN"):
    s.inject_audio(np.full((100, 1), np.nan, np.float32), 8000)
  assert s.stats()["inject_mode"] is None
  s.inject_audio(x[:, 0], 8000)  # mono may drop its channel axis
  assert s.stats()["inject_mode"] == "free"


def test_stats_subscribers_and_control_delay(student):
  s = _session(student)
  got, infos = [], []

  def listener(chunk, info):
    got.append(chunk)
    infos.append(info)

  def broken(chunk, info):
    raise RuntimeError("a listener bug")

  s.subscribe(listener)
  s.subscribe(broken)
  st = s.stats()
  assert STAT_KEYS <= set(st) and st["control_delay_ms_p50"] is None
  s.set_prompt("jazz:1")
  first = s.next_chunk()
  np.testing.assert_array_equal(got[0], first)
  assert infos[0]["index"] == 0 and infos[0]["prompt"] == "jazz:1"
  s.unsubscribe(listener)
  s.next_chunk()
  assert len(got) == 1
  st = s.stats()
  assert st["chunks"] == 2 and st["callback_errors"] == 2
  assert st["chunk_ms_p50"] > 0 and st["chunk_ms_p95"] >= st["chunk_ms_p50"]
  assert 0 <= st["control_delay_ms_p50"] < 10_000
  # Threaded: the delay runs to the first *read* sample of the new prompt,
  # so it includes the queued lead.
  live = _session(student, lead_chunks=2)
  live.start(wait=True, timeout=30)
  live.set_prompt("rock:1")
  t0 = time.perf_counter()
  reads = 0
  while live.stats()["control_delay_ms_p50"] is None and reads < 6:
    live.read(live.chunk_samples, timeout=10)
    reads += 1
  waited_ms = 1000 * (time.perf_counter() - t0)
  live.stop()
  st = live.stats()
  # The two queued chunks of the old prompt play first.
  assert reads == 3
  assert 0 < st["control_delay_ms_p50"] <= waited_ms
  assert st["control_delay_ms_p95"] >= st["control_delay_ms_p50"]
  assert st["underruns"] == 0
  with pytest.raises(RuntimeError, match="start"):
    _session(student).read(10)
