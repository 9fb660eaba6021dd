"""Tests for the reference-world style model (untrained or mini-trained)."""

import json
import logging

import numpy as np
import pytest

from mrt_distill.geometry import REFERENCE
from mrt_distill.style import embed_prompt_mix
from mrt_distill.style import mix_embeddings
from mrt_distill.style import style_tokens
from mrt_distill.style import mel_encoder
from mrt_distill.style import reference
from mrt_distill.style import rvq_fit
from mrt_distill.style import text_parsing
from mrt_distill.style import weights_io
from mrt_distill.style.reference import ReferenceStyleModel
from mrt_distill.style.style_net import ReferenceStyleConfig

SR = REFERENCE.sample_rate
# Small towers: these tests check plumbing and numerics, not quality.
SMALL = ReferenceStyleConfig(
    encoder=mel_encoder.EncoderConfig(patch_dim=16, hidden=64, dilations=(1,)),
    text_width=32, text_hidden=64)


@pytest.fixture(scope="module")
def model():
  return ReferenceStyleModel.init(0, config=SMALL)


def tone(freq, seconds, sample_rate=SR, amp=0.3):
  t = np.arange(int(seconds * sample_rate)) / sample_rate
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---- text --------------------------------------------------------------------
def test_text_embeddings_deterministic_and_order_free(model):
  a = model.embed_text(["techno", "fast dark techno", "drum and bass"])
  assert a.shape == (3, REFERENCE.style_embed_dim) and a.dtype == np.float32
  assert np.all(np.isfinite(a))
  b = ReferenceStyleModel.init(0, config=SMALL).embed_text(
      ["techno", "techno, dark, FAST", "drum_and_bass"])
  np.testing.assert_allclose(a, b, atol=1e-6)  # Fresh model, same seed.
  assert not np.allclose(a[0], a[1], atol=1e-3)


def test_parse_text_keeps_descriptors_whole():
  vocab = SMALL.vocab
  assert text_parsing.parse_text("Drum and Bass", vocab) == (["drum_and_bass"],
                                                          [])
  assert text_parsing.parse_text("drum-and-bass, lo-fi hip hop", vocab) == (
      ["drum_and_bass", "lofi_hiphop"], [])
  assert text_parsing.parse_text("techno_flute music", vocab) == (
      ["techno", "flute"], [])
  assert text_parsing.parse_text("bass drums", vocab) == (["bass", "drums"], [])


def test_unknown_words_warn_and_are_ignored(model):
  with pytest.warns(UserWarning, match="zither"):
    mixed = model.embed_text("techno zither")
  np.testing.assert_allclose(mixed, model.embed_text("techno"), atol=1e-6)


def test_all_unknown_words_raise_naming_the_vocabulary(model):
  with pytest.raises(ValueError, match="vocabulary:.*techno"):
    model.embed_text("zither kazoo")
  with pytest.raises(ValueError):
    model.embed_text("")


def test_mixing_two_prompts(model):
  e = model.embed_text(["techno", "jazz_piano_trio"])
  mix = mix_embeddings(e, [1.0, 3.0])
  np.testing.assert_allclose(mix, 0.25 * e[0] + 0.75 * e[1], atol=1e-6)
  np.testing.assert_allclose(
      embed_prompt_mix(model, "techno:1.0, jazz_piano_trio:3.0"), mix,
      atol=1e-6)
  ids = style_tokens(model, REFERENCE, mix)
  assert ids.shape == (REFERENCE.style_levels,)
  assert np.all(ids >= REFERENCE.style_offset)
  assert np.all(ids < REFERENCE.vocab_size)


def test_tokenize_in_range(model):
  emb = model.embed_text(["techno", "slow calm ambient_pads", "rock"])
  codes = model.tokenize(emb)
  assert codes.shape == (3, REFERENCE.style_rvq_depth)
  assert codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < REFERENCE.style_codebook_size


# ---- audio -------------------------------------------------------------------
def test_audio_shapes_windows_and_channels(model):
  mono = tone(220, 5.0)
  emb = model.embed_audio(mono, SR)
  assert emb.shape == (1, REFERENCE.style_embed_dim)
  stereo = np.stack([mono, mono], axis=-1)
  np.testing.assert_allclose(model.embed_audio(stereo, SR), emb, atol=1e-6)
  batch = np.stack([stereo, 0.5 * stereo[::-1]])
  assert model.embed_audio(batch, SR).shape == (2, REFERENCE.style_embed_dim)
  # One exact window: unit norm (averages of several windows are shorter).
  one = model.embed_audio(mono[:SMALL.window_samples], SR)
  np.testing.assert_allclose(np.linalg.norm(one), 1.0, rtol=1e-5)
  assert model.embed(mono, sample_rate=SR).shape == (
      REFERENCE.style_embed_dim,)


def test_audio_embedder_matches_windows_and_differentiates(model):
  import jax
  import jax.numpy as jnp
  w = model.config.window_samples
  clips = np.stack([tone(220, w / SR), tone(660, w / SR, amp=0.1)])
  fn = model.audio_embedder()
  assert model.audio_embedder_sample_rate == SR
  # The jax tower and the numpy path agree on whole windows.
  np.testing.assert_allclose(np.asarray(jax.jit(fn)(jnp.asarray(clips))),
                             model.embed_audio_windows(clips), atol=1e-5)
  # Shorter clips (one student chunk) embed too, unit norm.
  short = np.asarray(fn(jnp.asarray(clips[:, :SR])))
  assert short.shape == (2, REFERENCE.style_embed_dim)
  np.testing.assert_allclose(np.linalg.norm(short, axis=-1), 1.0, atol=1e-5)
  # A gradient flows to the audio, and it is finite and not zero.
  g = jax.grad(lambda a: jnp.sum(fn(a)[:, 0]))(jnp.asarray(clips[:, :SR]))
  g = np.asarray(g)
  assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_other_sample_rates(model, caplog):
  with caplog.at_level(logging.INFO, logger="mrt_distill.style.audio_windows"):
    emb = model.embed_audio(tone(440, 4.0, 22_050), 22_050)
  assert "22050" in caplog.text and "16000" in caplog.text
  assert emb.shape == (1, REFERENCE.style_embed_dim)
  strict = ReferenceStyleModel(model.params, model.codebooks, SMALL,
                               resample=False)
  with pytest.raises(ValueError, match="22050.*16000"):
    strict.embed_audio(tone(440, 1.0, 22_050), 22_050)


# ---- quantiser ---------------------------------------------------------------
def test_fit_rvq_codebooks_reduces_error_level_by_level():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((600, 16)).astype(np.float32)
  books = rvq_fit.fit_rvq_codebooks(x, depth=3, size=8, seed=0, iters=10)
  assert books.shape == (3, 8, 16)
  from mrt_distill.codec import rvq_dequantize
  from mrt_distill.codec.base import rvq_quantize
  errs = [np.mean((x - rvq_dequantize(rvq_quantize(x, books, k), books))**2)
          for k in (1, 2, 3)]
  assert errs[0] > errs[1] > errs[2]
  assert errs[0] < np.mean(x**2)


# ---- persistence -------------------------------------------------------------
def test_save_load_round_trip(model, tmp_path):
  path = model.save(tmp_path / "style.npz")
  side = json.loads((tmp_path / "style.npz.json").read_text())
  assert side["meta"]["format"] == reference.FORMAT
  assert len(side["sha256"]) == 64
  loaded = ReferenceStyleModel.load(path)
  assert loaded.config == SMALL
  np.testing.assert_array_equal(loaded.codebooks, model.codebooks)
  for a, b in zip(*(jax_leaves(m.params) for m in (model, loaded))):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(loaded.embed_text(["rock", "fast techno"]),
                                model.embed_text(["rock", "fast techno"]))


def jax_leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_corrupted_file_names_the_rebuild_command(model, tmp_path):
  path = model.save(tmp_path / "style.npz")
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(weights_io.AssetError,
                     match="corrupted.*build_reference_world.py --install"):
    ReferenceStyleModel.load(path)
  (tmp_path / "style.npz.json").unlink()
  with pytest.raises(ValueError, match="build_reference_world.py --install"):
    ReferenceStyleModel.load(path)


# ---- training ----------------------------------------------------------------
def test_mini_training_lowers_the_loss(tmp_path):
  from mrt_distill.world.training import train_style
  out = tmp_path / "mini_style.npz"
  m = train_style.train_style(
      out, steps=30, batch=8, seed=0, log_every=10, config=SMALL, lr=3e-3,
      pieces_per_style=2, piece_seconds=5.0, refresh_per_step=0,
      heldout_pieces_per_style=1, heldout_seconds=4.0, codebook_audio=80,
      codebook_text=16, codebook_iters=5)
  assert m["loss_last"] < m["loss_first"]
  # Thresholds an untrained model fails (measured with this call, seed 0;
  # steps=1 for the untrained side), 10 held-out windows, 10 styles:
  # zero-shot accuracy 0.4 after 30 steps, 0.1 untrained (chance); the
  # prompt-audio cosine 0.66 after 30 steps, -0.02 untrained. The floors
  # sit between the two sides.
  assert m["zero_shot_accuracy"] >= 0.25
  assert m["prompt_audio_cosine"] > 0.3
  assert set(m["zero_shot_accuracy_per_style"]) == set(
      train_style.music.STYLES)
  assert json.loads(out.with_suffix(".metrics.json").read_text())["steps"] == 30
  loaded = ReferenceStyleModel.load(out)
  codes = loaded.tokenize(loaded.embed_text("techno"))
  assert codes.shape == (1, REFERENCE.style_rvq_depth)
