"""Tests for StyleModel, MinimalStyleModel and prompt mixing."""

import numpy as np
import pytest

from mrt_distill.codec import rvq_dequantize
from mrt_distill.geometry import TINY
from mrt_distill.style import clear_prompt_cache
from mrt_distill.style import embed_prompt_mix
from mrt_distill.style import MinimalStyleModel
from mrt_distill.style import mix_embeddings
from mrt_distill.style import parse_prompt_mix
from mrt_distill.style import style_tokens
from mrt_distill.style import StyleModel

# Wider style space than TINY so random word vectors are nearly orthogonal.
WIDE = TINY.replace(name="wide_style", style_embed_dim=128, style_rvq_depth=6,
                    style_levels=3, style_codebook_size=64)


def cos(a, b):
  return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def tone(freq, sample_rate, seconds=1.0, amp=0.3):
  t = np.arange(int(seconds * sample_rate)) / sample_rate
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---- embeddings ----------------------------------------------------------------
def test_text_embeddings_deterministic_and_distinct():
  a = MinimalStyleModel(WIDE).embed_text(["techno", "flute", "Techno "])
  b = MinimalStyleModel(WIDE).embed_text(["techno", "flute", "techno"])
  assert isinstance(a, np.ndarray) and a.dtype == np.float32
  assert a.shape == (3, WIDE.style_embed_dim)
  np.testing.assert_array_equal(a, b)  # same seed, fresh instance
  np.testing.assert_array_equal(a[0], a[2])  # case and space insensitive
  np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, rtol=1e-6)
  assert abs(cos(a[0], a[1])) < 0.5
  other_seed = MinimalStyleModel(WIDE, seed=1).embed_text("techno")[0]
  assert abs(cos(a[0], other_seed)) < 0.5


def test_shared_words_make_related_prompts():
  m = MinimalStyleModel(WIDE)
  techno, both, piano = m.embed_text(["techno", "techno flute", "piano"])
  assert cos(techno, both) > 0.5
  assert cos(techno, both) > abs(cos(techno, piano)) + 0.3


def test_audio_embeddings():
  m = MinimalStyleModel(WIDE)
  low, high = tone(220, 16000), tone(3000, 16000)
  emb = m.embed_audio(np.stack([low, high])[..., None], 16000)
  assert emb.shape == (2, WIDE.style_embed_dim) and emb.dtype == np.float32
  np.testing.assert_array_equal(emb, m.embed_audio(
      np.stack([low, high])[..., None], 16000))
  assert cos(emb[0], emb[1]) < 0.9
  # Stereo is averaged to mono; the band layout makes the rate matter little.
  np.testing.assert_allclose(
      m.embed_audio(np.stack([low, low], -1), 16000)[0], emb[0], atol=1e-5)
  assert cos(m.embed_audio(tone(220, 8000), 8000)[0], emb[0]) > 0.9
  silence = m.embed_audio(np.zeros(4000, np.float32), 16000)[0]
  assert np.all(np.isfinite(silence)) and abs(np.linalg.norm(silence) - 1) < 1e-5


def test_embed_dispatch():
  m = MinimalStyleModel(TINY)
  s = TINY.style_embed_dim
  assert isinstance(m, StyleModel)
  np.testing.assert_array_equal(m.embed("jazz"), m.embed_text("jazz")[0])
  assert m.embed(["jazz", "rock"]).shape == (2, s)
  assert m.embed(tone(100, 8000), sample_rate=8000).shape == (s,)
  assert m.embed(np.zeros((2, 800, 1), np.float32), 8000).shape == (2, s)
  with pytest.raises(ValueError, match="needs sample_rate"):
    m.embed(tone(100, 8000))


@pytest.mark.parametrize("texts, match", [
    ("", "texts\\[0\\] is empty"),
    (["ok", "  "], "texts\\[1\\] is empty"),
    ([], "non-empty list"),
    (["ok", 3], "texts\\[1\\] is int"),
])
def test_bad_text_messages(texts, match):
  with pytest.raises(ValueError, match=match):
    MinimalStyleModel(TINY).embed_text(texts)


@pytest.mark.parametrize("audio, rate, match", [
    (np.zeros(100, np.float32), 0, "positive int"),
    (np.zeros(100, np.int16), 8000, "dtype int16"),
    (np.zeros((2, 100), np.float32), 8000, r"transpose to \(N, C\)"),
    (np.zeros((0,), np.float32), 8000, "no samples"),
    (np.full(100, np.inf, np.float32), 8000, "NaN or inf"),
])
def test_bad_audio_messages(audio, rate, match):
  with pytest.raises(ValueError, match=match):
    MinimalStyleModel(TINY).embed_audio(audio, rate)


# ---- tokenize --------------------------------------------------------------------
def test_tokenize_range_and_error_shrinks():
  m = MinimalStyleModel(WIDE)
  emb = m.embed_text([f"prompt number {i}" for i in range(32)])
  codes = m.tokenize(emb)
  assert codes.shape == (32, WIDE.style_rvq_depth) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < WIDE.style_codebook_size
  errs = [np.linalg.norm(emb - rvq_dequantize(codes[:, :k], m.codebooks))
          for k in range(1, WIDE.style_rvq_depth + 1)]
  assert np.all(np.diff(errs) < 0), errs
  np.testing.assert_array_equal(m.tokenize(emb, 2), codes[:, :2])
  np.testing.assert_array_equal(m.tokenize(emb[0]), codes[0])  # unbatched
  np.testing.assert_array_equal(MinimalStyleModel(WIDE).tokenize(emb), codes)


def test_tokenize_errors():
  m = MinimalStyleModel(TINY)
  with pytest.raises(ValueError, match="style_embed_dim=12"):
    m.tokenize(np.zeros((2, 5)))
  with pytest.raises(ValueError, match=r"pass 1\.\.4"):
    m.tokenize(np.zeros(12), 5)
  with pytest.raises(ValueError, match="NaN"):
    m.tokenize(np.full(12, np.nan))


# ---- mixing ----------------------------------------------------------------------
def test_parse_prompt_mix():
  assert parse_prompt_mix("techno:1.0, flute:0.5") == [("techno", 1.0),
                                                       ("flute", 0.5)]
  assert parse_prompt_mix("  techno  ") == [("techno", 1.0)]
  assert parse_prompt_mix("lo fi : 2 ,flute:0") == [("lo fi", 2.0),
                                                   ("flute", 0.0)]
  assert parse_prompt_mix("genre: deep house:.25") == [("genre: deep house",
                                                        0.25)]


@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("   ", "is empty"),
    ("techno,,flute", "fragment 1 is empty"),
    (":0.5", "no prompt text"),
    ("techno:loud", r"'techno:loud'.*'loud' is not a number"),
    ("techno:-1", r"'techno:-1'.*negative"),
    ("techno:nan", "finite"),
])
def test_parse_prompt_mix_errors(text, match):
  with pytest.raises(ValueError, match=match):
    parse_prompt_mix(text)


def test_mix_embeddings_values():
  rng = np.random.default_rng(0)
  e = rng.standard_normal((3, 5)).astype(np.float32)
  np.testing.assert_allclose(mix_embeddings(e[:2], [1, 0]), e[0], rtol=1e-6)
  np.testing.assert_allclose(mix_embeddings(e[:2], [1, 1]), e[:2].mean(0),
                             rtol=1e-6)
  np.testing.assert_allclose(mix_embeddings(e, [2, 1, 1]),
                             (2 * e[0] + e[1] + e[2]) / 4, rtol=1e-5)
  # A zero-weight row is skipped, even when it is not a number yet.
  e[1] = np.nan
  np.testing.assert_allclose(mix_embeddings(e, [1, 0, 3]),
                             (e[0] + 3 * e[2]) / 4, rtol=1e-5)


@pytest.mark.parametrize("emb, weights, match", [
    (np.zeros((0, 4)), [], "no prompts"),
    (np.zeros((2, 4)), [1, -1], "negative"),
    (np.zeros((2, 4)), [0, 0], "all prompt weights are zero"),
    (np.zeros((2, 4)), [1, 1, 1], r"shape \(2, 4\) do not match 3 weights"),
    (np.zeros(4), [1], r"expected \(N, S\)"),
    (np.zeros((1, 4)), [np.inf], "finite"),
])
def test_mix_embeddings_errors(emb, weights, match):
  with pytest.raises(ValueError, match=match):
    mix_embeddings(emb, weights)


class CountingStyleModel(MinimalStyleModel):
  calls = 0

  def embed_text(self, texts):
    self.calls += 1
    return super().embed_text(texts)


def test_embed_prompt_mix_matches_manual_and_caches():
  clear_prompt_cache()
  m = CountingStyleModel(WIDE)
  got = embed_prompt_mix(m, "techno:1, flute:3, piano:0")
  e = MinimalStyleModel(WIDE).embed_text(["techno", "flute"])
  np.testing.assert_allclose(got, (e[0] + 3 * e[1]) / 4, rtol=1e-5)
  assert m.calls == 2  # the zero-weight prompt is never embedded
  again = embed_prompt_mix(m, [("flute", 1.0), ("techno", 1.0)])
  np.testing.assert_allclose(again, e.mean(0), rtol=1e-5)
  assert m.calls == 2  # both came from the cache
  with pytest.raises(ValueError, match="all prompt weights are zero"):
    embed_prompt_mix(m, "techno:0")
  with pytest.raises(ValueError, match="expected a \\(prompt text, weight\\)"):
    embed_prompt_mix(m, ["techno"])


def test_style_tokens_in_geometry_range():
  g = WIDE
  m = MinimalStyleModel(g)
  emb = embed_prompt_mix(m, "techno:1.0, flute:0.5")
  ids = style_tokens(m, g, emb)
  assert ids.shape == (g.style_levels,) and ids.dtype == np.int32
  v = g.style_codebook_size
  lo = g.style_offset + v * np.arange(g.style_levels)
  assert np.all(ids >= lo) and np.all(ids < lo + v)
  assert np.all(ids < g.vocab_size)
  np.testing.assert_array_equal(g.ids_to_style(ids),
                                m.tokenize(emb)[:g.style_levels])
  batch = style_tokens(m, g, m.embed_text(["a", "b"]))
  assert batch.shape == (2, g.style_levels)


def test_style_tokens_geometry_mismatch():
  other = WIDE.replace(name="other", style_embed_dim=64)
  with pytest.raises(ValueError, match="style_embed_dim: model 128 vs "
                     "geometry 64"):
    style_tokens(MinimalStyleModel(WIDE), other, np.zeros(128))
