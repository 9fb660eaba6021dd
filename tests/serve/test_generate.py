"""`mrt-distill generate`: files of the promised length, seeds reproduce,
transitions ramp the style embedding from A to B, caller mistakes are one
clear line.

The random-tiny student is loaded, and its chunk step compiled, once per
module (that is most of this file's time); the command-line tests hand that
bundle to `run` through `load_student` and check that `--checkpoint
random-tiny` reached it.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import soundfile as sf

from mrt_distill import main as cli
from mrt_distill.serve import bundle as bundle_mod
from mrt_distill.serve import generate as G
from mrt_distill.style import mixing
from mrt_distill.style.base import MinimalStyleModel

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny():
  b = bundle_mod.load_student("random-tiny")
  if b.model.cfg.token_head:
    # A fresh token head is zero (uniform logits: the audio ignores the
    # style); give it random weights so style changes are heard.
    import jax
    k = b.params["token_out"]["kernel"]
    b.params["token_out"]["kernel"] = np.asarray(
        jax.random.normal(jax.random.PRNGKey(0), k.shape), k.dtype)
  return b, b.stepper(max_steps=G.MAX_STEPS)


@pytest.fixture
def cli_tiny(tiny, monkeypatch):
  """`load_student` as `run` calls it, answering random-tiny only, with the
  module's stepper (compiled once for the whole file)."""
  asked = []
  b, stepper = tiny

  def load(source):
    asked.append(source)
    assert source == "random-tiny"
    return b

  monkeypatch.setattr(bundle_mod, "load_student", load)
  monkeypatch.setattr(b, "stepper", lambda max_steps: stepper)
  return asked


def _check_png(path):
  assert path.read_bytes()[:8] == PNG_MAGIC
  img = matplotlib.image.imread(path)
  assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300


def test_cli_writes_wav_png_and_summary(tmp_path, cli_tiny, capsys, caplog):
  out = tmp_path / "a.wav"
  with caplog.at_level(logging.WARNING):
    rc = cli.main(["generate", "--checkpoint", "random-tiny", "--prompt",
                   "techno:1, flute:0.5", "--seconds", "1", "--steps", "2",
                   "--cfg", "1.5", "--seed", "3", "--out", str(out)])
  assert rc == 0 and cli_tiny == ["random-tiny"]
  audio, sr = sf.read(out)
  # 1 s = 6.25 chunks of 0.16 s: 7 are generated, trimmed to exactly 1 s.
  assert sr == 8000 and audio.shape == (8000,)
  assert np.isfinite(audio).all() and np.abs(audio).max() > 0
  _check_png(tmp_path / "a.png")
  line = capsys.readouterr().out.strip()
  assert "\n" not in line
  assert line.startswith("student random-tiny: 1.00 s of audio, 7 chunks")
  assert "ms/chunk" in line and "real-time factor" in line
  # MinimalStyleModel embeds any word: the user is told typos go unnoticed.
  assert "no closed word list" in caplog.text


def test_cli_teacher_transition(tmp_path, cli_tiny, capsys):
  out = tmp_path / "t.wav"
  rc = cli.main(["generate", "--checkpoint", "random-tiny", "--teacher",
                 "--transition", "techno:1, flute:0.5 -> jazz over 2 chunks",
                 "--seconds", "0.5", "--seed", "1", "--out", str(out)])
  assert rc == 0
  audio, sr = sf.read(out)
  assert sr == 8000 and audio.shape == (4000,)
  assert np.isfinite(audio).all() and np.abs(audio).max() > 0
  _check_png(tmp_path / "t.png")
  line = capsys.readouterr().out
  assert line.startswith("teacher of random-tiny: 0.50 s of audio, 4 chunks")


def test_seeds_and_trimming(tiny):
  b, stepper = tiny
  run = lambda seed, **kw: G.generate(
      b, seconds=0.5, steps=2, cfg_weight=1.0, seed=seed, stepper=stepper,
      **({"prompt": "techno"} | kw))
  a0, a0_again, a1 = run(0), run(0), run(1)
  assert a0.audio.shape == (4000, 1) and len(a0.chunk_ms) == 4
  np.testing.assert_array_equal(a0.audio, a0_again.audio)
  assert np.abs(a0.audio - a1.audio).max() > 1e-3
  # A transition away from the prompt: chunk 0 is pure A, so with the same
  # seed it is the same audio; later chunks move towards B.
  tr = run(0, prompt=None, transition="techno -> flute over 2 chunks")
  n = b.geometry.chunk_samples
  np.testing.assert_array_equal(tr.audio[:n], a0.audio[:n])
  assert np.abs(tr.audio[2 * n:] - a0.audio[2 * n:]).max() > 1e-3
  np.testing.assert_allclose(tr.styles[0], a0.styles[0])
  assert tr.transition_seconds == pytest.approx(2 * b.geometry.chunk_seconds)


def test_transition_schedule_goes_from_a_to_b(tiny):
  g = tiny[0].geometry
  sm = MinimalStyleModel(g)
  a, b = "techno:1, flute:0.5", "jazz:2, piano:1"
  e_a, e_b = (mixing.embed_prompt_mix(sm, m) for m in (a, b))
  sched = G.style_schedule(sm, 7, g.chunk_seconds,
                           transition=G.parse_transition(
                               f"{a} -> {b} over 4 chunks"))
  assert sched.shape == (7, g.style_embed_dim) and sched.dtype == np.float32
  for i, alpha in enumerate([0, 0.25, 0.5, 0.75, 1, 1, 1]):
    np.testing.assert_allclose(sched[i], (1 - alpha) * e_a + alpha * e_b,
                               rtol=1e-6, atol=1e-7)
  dist_b = np.linalg.norm(sched - e_b, axis=1)
  assert np.all(np.diff(dist_b[:5]) < 0)
  # Seconds are rounded to whole chunks: 0.5 s of 0.16 s chunks -> 3.
  tr = G.parse_transition(f"{a} -> {b} over 0.5s")
  assert tr.ramp_chunks(g.chunk_seconds) == 3
  np.testing.assert_allclose(
      G.style_schedule(sm, 5, g.chunk_seconds, transition=tr)[3], e_b)
  # A plain prompt holds still.
  flat = G.style_schedule(sm, 3, g.chunk_seconds, prompt=a)
  np.testing.assert_allclose(flat, np.stack([e_a] * 3))


@pytest.mark.parametrize("text,want", [
    ("techno -> flute over 30s", ("techno", "flute", 30.0, "seconds")),
    ("techno:1, flute:0.5 -> jazz, piano:0.3 over 4 chunks",
     ("techno:1, flute:0.5", "jazz, piano:0.3", 4.0, "chunks")),
    ("a->b over 1.5 seconds", ("a", "b", 1.5, "seconds")),
    ("a -> b OVER 1 chunk", ("a", "b", 1.0, "chunks")),
])
def test_parse_transition(text, want):
  t = G.parse_transition(text)
  assert (t.start, t.end, t.amount, t.unit) == want


@pytest.mark.parametrize("text,needle", [
    ("techno flute", "no '->'"),
    ("a -> b -> c over 3s", "more than one '->'"),
    ("a -> b", "no 'over DURATION'"),
    ("a -> b over 3", "duration '3' is not a number"),
    ("a -> b over 0s", "must be > 0"),
    ("a -> b over 2.5 chunks", "not a whole number of chunks"),
    ("a -> over 3s", "target mix B is empty"),
    ("a:-1 -> b over 3s", "start mix A"),
])
def test_parse_transition_errors(text, needle):
  with pytest.raises(ValueError) as e:
    G.parse_transition(text)
  msg = str(e.value)
  assert needle in msg and repr(text) in msg


@pytest.mark.parametrize("args,needle", [
    (["--steps", "0"], "--steps 0: student sampling steps must be 1..8"),
    (["--steps", "9"], "--steps 9"),
    (["--seconds", "-2"], "--seconds -2.0: must be a positive"),
    (["--cfg", "-1"], "--cfg -1.0"),
    (["--seed", "-1"], "--seed -1: must be an integer >= 0"),
    (["--prompt", "techno", "--transition", "a -> b over 2s"], "not both"),
    (["--transition", "techno to flute"], "expected 'A -> B over 30s'"),
    (["--prompt", "techno:loud"], "'loud' is not a number"),
    (["--out", "{tmp}/missing/x.wav"], "does not exist; create it"),
    (["--out", "{tmp}"], "is a folder"),
    (["--out", "{tmp}/x.nope"], "end the name in .wav"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, args, needle):
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  if "--out" not in args:
    args += ["--out", str(tmp_path / "x.wav")]
  rc = cli.main(["generate", "--checkpoint", "random-tiny"] + args)
  err = capsys.readouterr().err
  assert rc == 1
  assert err.startswith("mrt-distill generate: error: ")
  assert err.count("\n") == 1 and "Traceback" not in err
  assert needle in err
  assert not list(tmp_path.rglob("x.*"))


def test_missing_reference_student_is_named(tmp_path, monkeypatch, capsys):
  from mrt_distill.world.runtime import assets
  monkeypatch.setattr(assets, "ASSET_DIR", tmp_path)
  rc = cli.main(["generate", "--out", str(tmp_path / "x.wav")])
  err = capsys.readouterr().err
  assert rc == 1
  assert "reference student is not in this install" in err
  assert "mrt-distill distill" in err


def test_unknown_words_with_a_vocabulary_are_errors():
  from mrt_distill.world.runtime import assets
  sm = assets.load_style_model()
  emb = G.embed_mix(sm, "techno:1, flute music:0.5")  # stop words are fine
  assert emb.shape == (sm.geometry.style_embed_dim,)
  with pytest.raises(ValueError) as e:
    G.embed_mix(sm, "techno:1, tecno flute:0.5")
  msg = str(e.value)
  assert msg.startswith("--prompt: prompt 'tecno flute' has unknown word(s) "
                        "'tecno'")
  assert "vocabulary: 808" in msg
  with pytest.raises(ValueError, match="'zzz'.*nothing to embed"):
    G.style_schedule(sm, 2, 2.0, transition=G.parse_transition(
        "techno -> zzz over 2s"))
  # A zero-weight prompt is not embedded, so it is not checked either.
  G.embed_mix(sm, "techno:1, zzz:0")


def test_module_top_level_does_not_import_jax():
  """`mrt-distill --help` imports this module; jax would cost seconds."""
  code = ("import sys, argparse, mrt_distill.serve.generate as g; "
          "g.add_arguments(argparse.ArgumentParser()); "
          "print(sorted(k for k in ('jax', 'numpy', 'flax') "
          "if k in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True).stdout
  assert out.strip() == "[]"
