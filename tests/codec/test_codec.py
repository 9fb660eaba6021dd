"""Tests for the Codec interface and MinimalCodec."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrt_distill.codec import Codec
from mrt_distill.codec import MinimalCodec
from mrt_distill.codec import rvq_dequantize
from mrt_distill.codec import rvq_quantize
from mrt_distill.geometry import Geometry
from mrt_distill.geometry import GeometryError
from mrt_distill.geometry import TINY

# Stereo, 16 kHz, 640 samples per frame, 16-dim latents, 8 levels of 32.
STEREO = Geometry(
    name="test_stereo", sample_rate=16000, channels=2, frame_rate=25,
    chunk_frames=4, context_frames=8, codec_rvq_depth=8, context_levels=2,
    target_levels=4, codebook_size=32, codec_latent_dim=16,
    style_embed_dim=8, style_rvq_depth=3, style_levels=2,
    style_codebook_size=8, reserved_block=0)


@pytest.fixture(scope="module", params=[TINY, STEREO], ids=lambda g: g.name)
def codec(request):
  return MinimalCodec(request.param)


def band_audio(codec, batch, frames, rms, seed=0):
  """(B, frames * spf, C) audio inside the codec's band, at a given RMS."""
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((batch, frames, codec.geometry.codec_latent_dim))
  audio = np.asarray(codec.decode_latents(z))
  return (audio * rms / np.sqrt(np.mean(audio**2))).astype(np.float32)


def snr_db(ref, est):
  return 10 * np.log10(np.sum(ref**2) / np.sum((ref - est)**2))


def test_is_a_codec(codec):
  assert isinstance(codec, Codec)
  g = codec.geometry
  assert codec.codebooks.shape == (g.codec_rvq_depth, g.codebook_size,
                                   g.codec_latent_dim)
  assert codec.codebooks.dtype == np.float32


@pytest.mark.parametrize("num_samples", [1, 639, 640, 1000])
def test_encode_decode_shapes(codec, num_samples):
  g = codec.geometry
  spf = g.samples_per_frame
  frames = -(-num_samples // spf)
  rng = np.random.default_rng(0)
  audio = 0.1 * rng.standard_normal((num_samples, g.channels))
  codes = codec.encode(audio.astype(np.float32), g.sample_rate)
  assert codes.shape == (frames, g.codec_rvq_depth)
  assert codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < g.codebook_size
  out = codec.decode(codes)
  assert out.shape == (frames * spf, g.channels) and out.dtype == np.float32
  # Batched input gives batched output, row by row the same as unbatched.
  batched = codec.encode(np.stack([audio, audio[::-1]]), g.sample_rate)
  assert batched.shape == (2, frames, g.codec_rvq_depth)
  np.testing.assert_array_equal(batched[0], codes)
  assert codec.decode(batched[..., :2]).shape == (2, frames * spf, g.channels)


def test_unquantised_round_trip_is_exact_in_band(codec):
  audio = band_audio(codec, 2, 3, rms=0.2)
  latents = codec.encode_latents(audio, codec.geometry.sample_rate)
  assert latents.shape == (2, 3, codec.geometry.codec_latent_dim)
  back = np.asarray(codec.decode_latents(latents))
  np.testing.assert_allclose(back, audio, atol=1e-5)


def test_deterministic_across_instances():
  audio = band_audio(MinimalCodec(STEREO), 1, 4, rms=0.1)[0]
  a = MinimalCodec(STEREO, seed=3).encode(audio, STEREO.sample_rate)
  b = MinimalCodec(STEREO, seed=3).encode(audio, STEREO.sample_rate)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(MinimalCodec(STEREO, seed=3).codebooks,
                                MinimalCodec(STEREO, seed=3).codebooks)
  other = MinimalCodec(STEREO, seed=4)
  assert not np.allclose(other.codebooks, MinimalCodec(STEREO, 3).codebooks)


def test_snr_improves_with_every_level(codec):
  g = codec.geometry
  audio = band_audio(codec, 2, 10, rms=0.1)
  codes = codec.encode(audio, g.sample_rate)
  snrs = [snr_db(audio, codec.decode(codes[..., :k]))
          for k in range(1, g.codec_rvq_depth + 1)]
  assert np.all(np.diff(snrs) > 0), snrs
  assert snrs[-1] > snrs[0] + 3.0, snrs


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_rvq_residual_never_grows(codec, scale):
  # Codeword 0 is zero, so greedy RVQ can never make the residual worse,
  # however far the input's scale is from what the codebooks expect.
  rng = np.random.default_rng(1)
  x = scale * rng.standard_normal((64, codec.geometry.codec_latent_dim))
  codes = codec.quantize(x)
  errs = [np.linalg.norm(x - codec.dequantize(codes[:, :k]))
          for k in range(1, codes.shape[-1] + 1)]
  assert np.all(np.diff(errs) <= 1e-6 * scale), errs


def test_partial_depth_decodes_sum_of_first_codewords(codec):
  g = codec.geometry
  codes = codec.encode(band_audio(codec, 1, 2, 0.1)[0], g.sample_rate)
  k = 3
  want = sum(codec.codebooks[l][codes[:, l]] for l in range(k))
  np.testing.assert_allclose(codec.dequantize(codes[:, :k]), want, atol=1e-6)
  np.testing.assert_allclose(
      codec.decode(codes[:, :k]), np.asarray(codec.decode_latents(want)),
      atol=1e-6)


def test_quantize_dequantize_idempotent_on_codewords(codec):
  g = codec.geometry
  level0 = codec.codebooks[0]
  np.testing.assert_array_equal(codec.quantize(level0, 1)[:, 0],
                                np.arange(g.codebook_size))
  # A single codeword followed by "nothing" codes round-trips at full depth.
  codes = np.zeros((g.codebook_size, g.codec_rvq_depth), np.int32)
  codes[:, 0] = np.arange(g.codebook_size)
  np.testing.assert_array_equal(codec.quantize(codec.dequantize(codes)), codes)
  # And re-quantising a quantised latent reproduces the latent.
  x = np.random.default_rng(2).standard_normal((8, g.codec_latent_dim))
  once = codec.dequantize(codec.quantize(x, 1))
  np.testing.assert_allclose(codec.dequantize(codec.quantize(once, 1)), once)


def test_decode_latents_is_differentiable(codec):
  g = codec.geometry
  rng = np.random.default_rng(3)
  z = jnp.asarray(rng.standard_normal((2, 3, g.codec_latent_dim)), jnp.float32)
  target = jnp.asarray(band_audio(codec, 2, 3, 0.1, seed=9))

  def loss(z):
    return jnp.sum((codec.decode_latents(z) - target)**2)

  grad = jax.jit(jax.grad(loss))(z)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0
  # The synthesis is orthonormal, so the gradient is 2 * (z - analysis(y)).
  want = 2 * (np.asarray(z) - codec.encode_latents(np.asarray(target)))
  np.testing.assert_allclose(np.asarray(grad), want, atol=1e-4)


def test_rvq_helpers_match_codec():
  codec = MinimalCodec(TINY)
  x = np.random.default_rng(4).standard_normal((5, TINY.codec_latent_dim))
  codes = rvq_quantize(x, codec.codebooks, 4)
  np.testing.assert_array_equal(codes, codec.quantize(x, 4))
  np.testing.assert_allclose(rvq_dequantize(codes, codec.codebooks),
                             codec.dequantize(codes))


# ---- input validation ----------------------------------------------------------
def test_mono_to_stereo_is_duplicated_with_warning():
  codec = MinimalCodec(STEREO)
  mono = band_audio(codec, 1, 2, 0.1)[0, :, :1]
  with pytest.warns(UserWarning, match="duplicating"):
    codes = codec.encode(mono, STEREO.sample_rate)
  np.testing.assert_array_equal(
      codes, codec.encode(np.repeat(mono, 2, axis=1), STEREO.sample_rate))


def test_resample_on_request():
  codec = MinimalCodec(TINY)
  t = np.arange(16000) / 16000
  audio = (0.3 * np.sin(2 * np.pi * 50 * t))[:, None].astype(np.float32)
  with pytest.raises(ValueError, match=r"16000 Hz.*8000 Hz.*resample=True"):
    codec.encode(audio, 16000)
  codes = codec.encode(audio, 16000, resample=True)
  assert codes.shape == (25, TINY.codec_rvq_depth)  # 1 s at 25 Hz
  direct = codec.encode(audio[::2], 8000)  # 50 Hz survives decimation
  assert np.mean(codes[:, 0] == direct[:, 0]) > 0.8


@pytest.mark.parametrize("audio, match", [
    (np.zeros(100, np.float32), r"expected \(S, C\).*mono\? use audio"),
    (np.zeros((1, 1, 100, 1), np.float32), r"expected \(S, C\)"),
    (np.zeros((100, 1), np.int16), r"dtype int16.*32768"),
    (np.zeros((0, 1), np.float32), "no samples"),
    (np.full((100, 1), np.nan, np.float32), "NaN"),
])
def test_bad_audio_messages(audio, match):
  with pytest.raises(ValueError, match=match):
    MinimalCodec(TINY).encode(audio, TINY.sample_rate)


def test_channel_mismatch_messages():
  with pytest.raises(ValueError, match="has 2 channels; the codec expects 1"):
    MinimalCodec(TINY).encode(np.zeros((100, 2), np.float32), 8000)
  with pytest.raises(ValueError, match=r"has 3 channels.*expects 2"):
    MinimalCodec(STEREO).encode(np.zeros((100, 3), np.float32), 16000)
  with pytest.raises(ValueError, match=r"transpose to \(S, C\)"):
    MinimalCodec(STEREO).encode(np.zeros((1, 2, 100), np.float32), 16000)


def test_bad_codes_messages():
  codec = MinimalCodec(TINY)
  with pytest.raises(GeometryError, match=r"out of range \[0, 16\)"):
    codec.decode(np.full((2, 3), 16, np.int32))
  with pytest.raises(GeometryError, match=r"must be 1\.\.6 long"):
    codec.decode(np.zeros((2, 7), np.int32))
  with pytest.raises(GeometryError, match="must be integers"):
    codec.decode(np.zeros((2, 3), np.float32))
  with pytest.raises(ValueError, match=r"expected \(T, K\) or \(B, T, K\)"):
    codec.decode(np.zeros((3,), np.int32))
  with pytest.raises(ValueError, match=r"num_levels=7.*pass 1\.\.6"):
    codec.quantize(np.zeros((2, 8)), 7)
  with pytest.raises(ValueError, match="latent width D=8"):
    codec.quantize(np.zeros((2, 5)))
  with pytest.raises(ValueError, match=r"expected \(B, T, D\) or \(T, D\)"):
    codec.decode_latents(jnp.zeros((2, 5)))


def test_latent_dim_larger_than_frame_is_refused():
  with pytest.raises(GeometryError, match="exceeds samples per frame"):
    MinimalCodec(TINY.replace(name="wide", codec_latent_dim=400))
