"""Tests for the real Magenta RT asset loaders (SpectroStream, MusicCoCa).

The real files cannot be downloaded here, so one tree of fake assets in the
real formats (tools/make_fake_magenta_rt_assets.py) is written per module and
every loader result is checked against calling the SavedModels by hand. The
missing-file tests need no TensorFlow. Without TensorFlow / tf2jax /
sentencepiece the others skip, except under CI, where they fail.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import sys

# Before anything imports TensorFlow: its C++ logging reads this once.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # pylint: disable=g-import-not-at-top,g-bad-import-order
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from mrt_distill.codec import spectrostream as ss  # pylint: disable=g-import-not-at-top
from mrt_distill.codec.base import MinimalCodec  # pylint: disable=g-import-not-at-top
from mrt_distill.codec.base import rvq_quantize  # pylint: disable=g-import-not-at-top
from mrt_distill.geometry import MRT_V1, GeometryError  # pylint: disable=g-import-not-at-top
from mrt_distill.style import musiccoca as mc  # pylint: disable=g-import-not-at-top
from mrt_distill.teacher.load import TeacherLoadError  # pylint: disable=g-import-not-at-top
from mrt_distill.world.runtime.assets import MissingAssetError  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[2]
G = MRT_V1
SR = G.sample_rate

# The files the loaders read, as Magenta RT v1 ships them (reference §6.1),
# spelled out here so that a change of layout in the code fails a test.
EXPECTED_FILES = [
    "savedmodels/ssv2_48k_stereo/encoder/saved_model.pb",
    "savedmodels/ssv2_48k_stereo/encoder/variables/variables.index",
    "savedmodels/ssv2_48k_stereo/encoder/variables/"
    "variables.data-00000-of-00001",
    "savedmodels/ssv2_48k_stereo/decoder/saved_model.pb",
    "savedmodels/ssv2_48k_stereo/decoder/variables/variables.index",
    "savedmodels/ssv2_48k_stereo/quantizer/saved_model.pb",
    "savedmodels/ssv2_48k_stereo/quantizer/variables/variables.index",
    "savedmodels/musiccoca_mv212f_cpu_novocab/saved_model.pb",
    "savedmodels/musiccoca_mv212f_cpu_novocab/variables/variables.index",
    "savedmodels/musiccoca_mv212_quant/variables/variables.index",
    "savedmodels/musiccoca_mv212_quant/variables/"
    "variables.data-00000-of-00001",
    "vocabularies/musiccoca_mv212f_vocab.model",
]
ALL_PLACEHOLDERS = EXPECTED_FILES + [
    "savedmodels/ssv2_48k_stereo/decoder/variables/"
    "variables.data-00000-of-00001",
    "savedmodels/ssv2_48k_stereo/quantizer/variables/"
    "variables.data-00000-of-00001",
    "savedmodels/musiccoca_mv212f_cpu_novocab/variables/"
    "variables.data-00000-of-00001",
]


# ---- fixtures ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tf(require_interop):
  """TensorFlow (with tf2jax and sentencepiece present), or skip / fail."""
  require_interop("sentencepiece", "tf2jax", "tensorflow")
  import tensorflow
  return tensorflow


@pytest.fixture(scope="module")
def root(tf, tmp_path_factory):
  """The fake asset tree (+ a tiny mrt_v1 teacher), written by the tool."""
  import make_fake_magenta_rt_assets as tool
  out = tmp_path_factory.mktemp("fake_mrt")
  assert tool.main([str(out), "--teacher"]) == 0
  return out


@pytest.fixture(scope="module")
def codec(root):
  return ss.load_spectrostream(root)


@pytest.fixture(scope="module")
def style(root):
  return mc.load_musiccoca(root)


@pytest.fixture(scope="module")
def tf_models(tf, root):
  """The SavedModels loaded by hand, to compare the loaders against."""
  base = root / ss.SPECTROSTREAM_SUBDIR
  return {p: tf.saved_model.load(str(base / p))
          for p in ss.SPECTROSTREAM_PARTS} | {
              "musiccoca": tf.saved_model.load(
                  str(root / mc.MUSICCOCA_MODEL_SUBDIR))}


def noise(shape, seed=0, scale=0.1):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(
      np.float32)


# ---- SpectroStream -----------------------------------------------------------------
def test_encode_shapes(codec):
  codes = codec.encode(noise((SR, 2)), SR)
  assert codes.shape == (25, 64) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < 1024
  assert len(np.unique(codes[:, 0])) > 1
  # Batched, and a partial last frame: ceil(S / 1920) frames.
  assert codec.encode(noise((2, SR + 10, 2), 1), SR).shape == (2, 26, 64)
  assert codec.encode(noise((SR, 2)), SR, num_levels=4).shape == (25, 4)


def test_tokens_equal_the_savedmodel_quantizer(codec, tf_models, tf):
  quant = tf_models["quantizer"]
  for i in (0, 17, 63):  # codebooks: the variables, transposed
    np.testing.assert_array_equal(
        codec.codebooks[i], quant._quantizers[i].embeddings.numpy().T)
  assert codec.codebooks.shape == (64, 1024, 256)
  assert codec.tokenizer == "numpy"  # the load-time check agreed
  x = noise((2, SR, 2), 2)
  latents = codec.encode_latents(x, SR)
  ours = codec.encode(x, SR)
  toks = quant.inference_encoding_with_tf_function(
      tf.constant(latents), num_quantizers=64).numpy()
  assert toks.shape == (64, 2, 25)  # (K, B, T), as v1 documents
  np.testing.assert_array_equal(ours, np.transpose(toks, (1, 2, 0)))
  np.testing.assert_array_equal(codec.quantize_savedmodel(latents, 16),
                                ours[..., :16])


def test_savedmodel_tokenizer_mode(root, codec):
  x = noise((SR // 2, 2), 3)
  via_tf = ss.load_spectrostream(root, tokenizer="savedmodel")
  assert via_tf.tokenizer == "savedmodel"
  np.testing.assert_array_equal(via_tf.encode(x, SR, num_levels=8),
                                codec.encode(x, SR, num_levels=8))


def test_encode_decode_match_tf(codec, tf_models):
  x = noise((SR, 2), 4)
  latents = codec.encode_latents(x, SR)
  want = tf_models["encoder"](x[None]).numpy()
  np.testing.assert_allclose(latents, want, atol=1e-4)
  # The fake is MinimalCodec in TF form: the frame layout agrees.
  np.testing.assert_allclose(latents, MinimalCodec(G).encode_latents(x, SR),
                             atol=1e-4)
  codes = codec.encode(x, SR, num_levels=16)
  audio = codec.decode(codes)
  assert audio.shape == (SR, 2) and audio.dtype == np.float32
  want = tf_models["decoder"](codec.dequantize(codes)[None]).numpy()[0]
  np.testing.assert_allclose(audio, want, atol=1e-4)
  assert codec.decode(codes[None]).shape == (1, SR, 2)


def test_decode_latents_is_differentiable(codec):
  z = jnp.asarray(noise((1, 3, 256), 5, 1.0))

  def loss(v):
    return jnp.sum(codec.decode_latents(v) ** 2)

  g = jax.jit(jax.grad(loss))(z)
  assert g.shape == z.shape
  assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
  # The decoder is linear with orthonormal columns: d|Pz|^2/dz = 2z.
  np.testing.assert_allclose(g, 2 * z, atol=1e-4)
  audio = noise((2, 3 * G.samples_per_frame, 2), 6)
  np.testing.assert_allclose(
      jax.jit(codec.encode_latents_jnp)(jnp.asarray(audio)),
      codec.encode_latents(audio, SR), atol=1e-4)


# ---- MusicCoCa -------------------------------------------------------------------
def by_hand_text(tf, sig, vocab_path, text):
  """The documented v1 text path, written out independently."""
  import sentencepiece as spm
  sp = spm.SentencePieceProcessor(model_file=str(vocab_path))
  pieces = sp.EncodeAsIds(text.lower())[:127]
  ids = ([1] + pieces + [0] * 128)[:128]
  pads = [0.0] * (1 + len(pieces)) + [1.0] * (127 - len(pieces))
  out = sig(inputs_0=tf.constant([ids], tf.int32),
            inputs_0_1=tf.constant([pads], tf.float32))
  return out["contrastive_txt_embed"].numpy()[0]


def test_text_embedding_follows_the_v1_text_path(style, tf_models, tf, root):
  sig = tf_models["musiccoca"].signatures["embed_text"]
  texts = ["Funk BASS guitar", "dark techno " * 80]  # the 2nd is > 127 ids
  got = style.embed_text(texts)
  assert got.shape == (2, 768) and got.dtype == np.float32
  for t, row in zip(texts, got):
    np.testing.assert_allclose(
        row, by_hand_text(tf, sig, root / mc.MUSICCOCA_VOCAB, t), atol=1e-5)
  ids, pads = style.text_inputs("dark techno " * 80)
  assert ids[0, 0] == 1 and pads.sum() == 0  # truncated to 127 + SOS
  # Lowercased, so case does not matter; a different text differs.
  np.testing.assert_allclose(style.embed("FUNK bass guitar"), got[0],
                             atol=1e-6)
  assert not np.allclose(style.embed("jazz piano"), got[0], atol=1e-3)
  # No `vocab` word list: serving would check prompts against it.
  assert not hasattr(style, "vocab") and style.sentencepiece.vocab_size() > 3


def test_audio_embedding_averages_clips(style, tf_models, tf):
  sig = tf_models["musiccoca"].signatures["embed_music"]
  mono = noise((25 * 16_000,), 7)  # 2.5 clips of 10 s
  stereo = np.stack([mono + 0.05, mono - 0.05], axis=1)  # channel mean = mono
  got = style.embed_audio(stereo, 16_000)
  clips = np.zeros((3, 160_000), np.float32)
  clips.reshape(-1)[:len(mono)] = mono  # the last clip zero-padded
  want = np.mean([sig(inputs_0=tf.constant(c[None]))[
      "contrastive_music_embed"].numpy()[0] for c in clips], axis=0)
  assert got.shape == (1, 768)
  np.testing.assert_allclose(got[0], want, atol=1e-5)
  # Other rates are resampled to 16 kHz first.
  assert style.embed(noise((SR // 2, 2), 8), sample_rate=SR).shape == (768,)


def test_tokenize_reads_levels_in_the_quirky_order(style, tf, root):
  from mrt_distill.interop.fake_assets import fake_musiccoca_codebooks
  assert mc.QUANT_READ_ORDER == (0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 2, 3)
  books = fake_musiccoca_codebooks(0)
  np.testing.assert_array_equal(style.codebooks, books)
  reader = tf.train.load_checkpoint(
      str(root / mc.MUSICCOCA_QUANT_SUBDIR / "variables" / "variables"))
  naive = np.stack([reader.get_tensor(
      f"variables/{n}/.ATTRIBUTES/VARIABLE_VALUE").T for n in range(12)])
  emb = style.embed_text(["funk bass guitar", "ambient synth pads"])
  tokens = style.tokenize(emb)
  assert tokens.shape == (2, 12)
  np.testing.assert_array_equal(tokens, rvq_quantize(emb, books, 12))
  wrong = rvq_quantize(emb, naive, 12)
  np.testing.assert_array_equal(wrong[:, :2], tokens[:, :2])  # 0, 1 agree
  assert (wrong[:, 2:] != tokens[:, 2:]).any()


# ---- missing files and packages -----------------------------------------------------
@pytest.fixture
def placeholders(tmp_path):
  """A tree of empty files where the loaders look (enough for the checks)."""
  for rel in ALL_PLACEHOLDERS:
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).touch()
  return tmp_path


@pytest.mark.parametrize("rel", EXPECTED_FILES)
def test_each_missing_file_is_named(placeholders, rel):
  ss.check_spectrostream_files(placeholders)
  mc.check_musiccoca_files(placeholders)
  (placeholders / rel).unlink()
  is_codec = "ssv2" in rel
  load = ss.load_spectrostream if is_codec else mc.load_musiccoca
  with pytest.raises(MissingAssetError) as e:
    load(placeholders)
  msg = str(e.value)
  assert isinstance(e.value, ss.MissingMagentaRTAssetError)
  assert str(placeholders / rel) in msg
  assert "google/magenta-realtime" in msg and "docs/real_magenta_rt.md" in msg
  flag = "spectrostream" if is_codec else "musiccoca"
  assert f"--config.magenta_rt.{flag}" in msg


def test_missing_folders_and_settings(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.*is missing"):
    ss.load_spectrostream(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere.*is missing"):
    mc.load_musiccoca(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="magenta_rt.spectrostream=DIR"):
    ss.load_spectrostream("")


def test_missing_tensorflow_says_how_to_install(placeholders, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow", None)
  for load in (ss.load_spectrostream, mc.load_musiccoca):
    with pytest.raises(ImportError, match=r'\.\[interop\]'):
      load(placeholders)


# ---- the Magenta RT world ------------------------------------------------------------
def world_config(root, **kw):
  c = ml_collections.ConfigDict(dict(
      world="magenta_rt", seed=0,
      magenta_rt=dict(gin="", teacher=str(root / "teacher"),
                      spectrostream=str(root), musiccoca=str(root))))
  c.magenta_rt.update(kw)
  return c


def test_load_world(root):
  from mrt_distill.world.runtime import load_world
  world = load_world(world_config(root))
  assert world.geometry == G and world.teacher_cfg.geometry == G
  assert isinstance(world.codec, ss.SpectroStreamCodec)
  assert isinstance(world.style_model, mc.MusicCoCaStyleModel)
  system = world.teacher_system()  # checks params and geometries
  assert system.geometry == G
  # The gin named explicitly gives the same teacher.
  gin = root / "teacher" / "teacher_fake_mrt_v1.gin"
  again = load_world(world_config(root, gin=str(gin)))
  assert again.teacher_cfg == world.teacher_cfg


def test_world_errors(root, tmp_path):
  from mrt_distill.teacher.load import load_teacher_config
  from mrt_distill.teacher.load import save_teacher
  from mrt_distill.teacher.model import numpy_init_params
  from mrt_distill.world.runtime import load_world
  from mrt_distill.world.runtime.magenta_rt import load_magenta_rt_world

  # No magenta_rt group (configs/reference_cpu.py + --config.world=...).
  with pytest.raises(ValueError) as e:
    load_world(ml_collections.ConfigDict(dict(world="magenta_rt")))
  msg = str(e.value)
  assert msg.index("world 'magenta_rt' needs the real Magenta RT assets") < (
      msg.index("distil the shipped reference world "
                "(configs/reference_cpu.py)"))
  assert "--config.magenta_rt.teacher=DIR" in msg
  with pytest.raises(TeacherLoadError, match="does not exist"):
    load_world(world_config(root, teacher=str(tmp_path / "none")))
  with pytest.raises(TeacherLoadError, match="imported with gin .*fake"):
    load_world(world_config(root, gin="base"))
  with pytest.raises(FileNotFoundError, match="ssv2"):
    load_world(world_config(root, spectrostream=str(tmp_path)))
  with pytest.raises(GeometryError, match="geometry 'tiny'.*sample_rate"):
    load_magenta_rt_world(world_config(root, gin="tiny").magenta_rt)
  cfg = load_teacher_config("tiny")
  save_teacher(tmp_path / "tiny", numpy_init_params(cfg), cfg)
  with pytest.raises(GeometryError, match="import-t5x"):
    load_magenta_rt_world(world_config(
        root, teacher=str(tmp_path / "tiny")).magenta_rt)
