"""Tests for the neural RVQ codec, its files, its trainer and the STFT losses.

Everything here uses untrained or briefly trained models at the REFERENCE
geometry with the small TEST_CONFIG sizes, so the file runs in well under a
minute on a 2-core CPU.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrt_distill.audio_losses import complex_stft_loss
from mrt_distill.audio_losses import multi_resolution_stft_loss
from mrt_distill.audio_losses import stft
from mrt_distill.codec import Codec
from mrt_distill.codec.neural import CodecChecksumError
from mrt_distill.codec.neural import NeuralCodec
from mrt_distill.codec.neural import REBUILD_HINT
from mrt_distill.codec.neural import TEST_CONFIG
from mrt_distill.codec.neural import _Stft
from mrt_distill.codec.neural import metrics_path
from mrt_distill.geometry import GeometryError
from mrt_distill.codec.neural import rvq_encode_jnp
from mrt_distill.codec.neural import rvq_partial_sum
from mrt_distill.codec.neural import sidecar_path
from mrt_distill.codec.base import rvq_quantize
from mrt_distill.geometry import REFERENCE
from mrt_distill.world.training import train_codec as tc

G = REFERENCE
SPF = G.samples_per_frame


@pytest.fixture(scope="module")
def codec():
  return NeuralCodec.init_random(G, TEST_CONFIG, seed=0)


def _audio(batch, frames, seed=0):
  """Two decaying tones plus noise: (B, frames * spf, 1), RMS ~0.1."""
  rng = np.random.default_rng(seed)
  t = np.arange(frames * SPF) / G.sample_rate
  out = []
  for _ in range(batch):
    f1, f2 = rng.uniform(100, 2000, 2)
    x = 0.2 * np.sin(2 * np.pi * f1 * t) + 0.1 * np.sin(2 * np.pi * f2 * t)
    x += 0.02 * rng.standard_normal(t.shape)
    out.append(x)
  return np.stack(out)[..., None].astype(np.float32)


def test_is_a_codec_with_reference_codebooks(codec):
  assert isinstance(codec, Codec)
  assert codec.codebooks.shape == (12, 256, 64)
  assert codec.codebooks.dtype == np.float32


def test_shapes_through_encode_and_decode(codec):
  audio = _audio(2, 25)  # 1 s = one REFERENCE chunk.
  latents = codec.encode_latents(audio)
  assert latents.shape == (2, 25, 64) and latents.dtype == np.float32
  codes = codec.encode(audio, G.sample_rate, num_levels=8)
  assert codes.shape == (2, 25, 8) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < 256
  rec = codec.decode(codes)
  assert rec.shape == (2, 25 * SPF, 1)
  assert np.all(np.isfinite(rec))
  # A partial last frame is zero-padded to a whole frame.
  single = codec.encode(audio[0, :1000], G.sample_rate)
  assert single.shape == (2, 12)
  assert codec.decode_latents(latents[0]).shape == (25 * SPF, 1)


def test_stft_front_end_is_perfectly_invertible():
  st = _Stft(SPF, 4, 4)
  x = np.random.default_rng(0).standard_normal((3, 7 * SPF)).astype(
      np.float32)
  spec = st.analyse(jnp.asarray(x))
  assert spec.shape == (3, 28, 321)
  np.testing.assert_allclose(np.asarray(st.synthesise(spec)), x, atol=1e-5)


def test_decode_latents_is_differentiable(codec):
  z = jnp.asarray(np.random.default_rng(1).standard_normal((1, 6, 64)),
                  jnp.float32)
  target = jnp.asarray(_audio(1, 6, seed=3))

  def loss(latents):
    return multi_resolution_stft_loss(codec.decode_latents(latents), target,
                                      fft_sizes=(512, 128), axis=-2)

  value, grad = jax.jit(jax.value_and_grad(loss))(z)
  assert np.isfinite(float(value))
  grad = np.asarray(grad)
  assert np.all(np.isfinite(grad))
  assert np.abs(grad).max() > 0


def test_jnp_rvq_matches_numpy_rvq(codec):
  z = codec.encode_latents(_audio(2, 5)).reshape(-1, 64)
  codes, inputs, chosen = rvq_encode_jnp(jnp.asarray(z),
                                         jnp.asarray(codec.codebooks))
  np.testing.assert_array_equal(np.asarray(codes).T,
                                rvq_quantize(z, codec.codebooks, 12))
  np.testing.assert_allclose(np.asarray(inputs[0]), z, atol=1e-6)
  k = jnp.full((z.shape[0],), 3)
  np.testing.assert_allclose(np.asarray(rvq_partial_sum(chosen, k)),
                             codec.dequantize(np.asarray(codes).T[:, :3]),
                             atol=1e-5)


def test_save_load_round_trip(codec, tmp_path):
  audio = _audio(1, 10)
  codes = codec.encode(audio, G.sample_rate)
  # float32 storage is exact.
  path32 = codec.save(tmp_path / "c32.npz", dtype=np.float32)
  c32 = NeuralCodec.load(path32)
  np.testing.assert_array_equal(c32.codebooks, codec.codebooks)
  np.testing.assert_array_equal(c32.decode(codes), codec.decode(codes))
  np.testing.assert_array_equal(c32.encode_latents(audio),
                                codec.encode_latents(audio))
  # float16 storage (the default) is close, and stable from then on.
  path16 = codec.save(tmp_path / "c16.npz")
  assert path16.stat().st_size < path32.stat().st_size
  a = NeuralCodec.load(path16)
  np.testing.assert_allclose(a.decode(codes), codec.decode(codes), atol=2e-3)
  b = NeuralCodec.load(a.save(tmp_path / "again.npz"))
  np.testing.assert_array_equal(b.decode(codes), a.decode(codes))
  meta = json.loads(sidecar_path(path16).read_text())["meta"]
  assert meta["geometry"]["name"] == "reference"
  assert meta["config"] == TEST_CONFIG.to_dict()
  assert meta["weights_dtype"] == "float16"
  assert NeuralCodec.load(path16, G).geometry == G
  # The LM-side sizes are free; the codec's own sizes are not.
  lm_side = G.replace(name="fewer_levels", target_levels=2)
  assert NeuralCodec.load(path16, lm_side).geometry == lm_side
  other = G.replace(name="wider", codebook_size=2 * G.codebook_size)
  with pytest.raises(GeometryError, match=r"codebook_size: 256 != 512.*"
                     r"build_reference_world.py --install"):
    NeuralCodec.load(path16, other)


def test_checksum_corruption_raises_with_rebuild_hint(codec, tmp_path):
  path = codec.save(tmp_path / "codec.npz")
  raw = bytearray(path.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  path.write_bytes(bytes(raw))
  with pytest.raises(CodecChecksumError) as err:
    NeuralCodec.load(path)
  msg = str(err.value)
  assert str(path) in msg and "corrupted" in msg and REBUILD_HINT in msg
  sidecar_path(path).unlink()
  with pytest.raises(CodecChecksumError, match="build_reference_world"):
    NeuralCodec.load(path)
  with pytest.raises(CodecChecksumError, match="build_reference_world.py --install"):
    NeuralCodec.load(tmp_path / "missing.npz")


def test_mr_stft_loss_properties():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 4000)), jnp.float32)
  y = jnp.asarray(_audio(2, 7, seed=1)[:, :4000, 0])
  # jit: the eager version compiles every op separately (slow on CPU).
  loss = jax.jit(multi_resolution_stft_loss)
  assert float(loss(x, x)) == 0.0
  xy = float(loss(x, y))
  yx = float(loss(y, x))
  assert xy > 0.5 and yx > 0.5
  # The log-magnitude term is symmetric; spectral convergence is normalised
  # by the target, so the two directions differ but stay comparable.
  assert 0.2 < xy / yx < 5.0
  parts = jax.jit(lambda a, b: multi_resolution_stft_loss(
      a, b, return_parts=True)[1])
  parts_xy, parts_yx = parts(x, y), parts(y, x)
  np.testing.assert_allclose(float(parts_xy["log_mag"]),
                             float(parts_yx["log_mag"]), rtol=1e-5)
  # Closer signals score lower; channel-last layout via axis.
  near = y + 0.01 * x
  assert float(loss(near, y)) < xy
  per = multi_resolution_stft_loss(near[..., None], y[..., None],
                                   fft_sizes=(256,), axis=-2, reduce=False)
  assert per.shape == (2, 1)
  # The phase-sensitive low-band term: 0 on identity, ~sqrt(2) for a
  # quarter-period shift of a low tone (same magnitudes, phase off by 90 deg).
  cx = jax.jit(functools.partial(complex_stft_loss, n_fft=512, max_bin=20))
  assert float(cx(y, y)) == 0.0
  t = np.arange(4000) / G.sample_rate
  tone = jnp.asarray(np.sin(2 * np.pi * 200 * t)[None], jnp.float32)
  shifted = jnp.asarray(np.cos(2 * np.pi * 200 * t)[None], jnp.float32)
  assert 1.2 < float(cx(shifted, tone)) < 1.6
  # The STFT helper matches a direct numpy computation.
  spec = np.asarray(stft(y[0], 256, 64))
  frame = np.pad(np.asarray(y[0]), 128, mode="reflect")[64 * 5:64 * 5 + 256]
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(256) / 256)
  np.testing.assert_allclose(spec[5], np.fft.rfft(frame * window),
                             rtol=1e-3, atol=1e-3)


def test_mini_training_run_reduces_loss(tmp_path):
  out = tmp_path / "mini.npz"
  # One style and a small fixed pool keep the batches alike, so the curve
  # shows learning rather than batch-to-batch variety (~20 s on 2 cores).
  hp = tc.TrainHParams(lr=3e-3, warmup_steps=5, fft_sizes=(512, 256, 128),
                       kmeans_batches=2, kmeans_iters=3, pool_size=4,
                       refresh_per_step=0, piece_seconds=2.0)
  lines = []
  result = tc.train_codec(
      out, steps=45, batch=4, seconds_per_example=0.64, seed=0,
      log_every=15, config=TEST_CONFIG, hparams=hp, ae_warmup_steps=0,
      eval_seconds=0.8, eval_styles=("techno",), train_styles=("techno",),
      log=lines.append)
  curve = [c["loss"] for c in result["loss_curve"]]
  assert len(curve) == 3
  # Seeds 0-2 all fall by 20-25 % here; demand a clear 10 %.
  assert curve[-1] < 0.9 * curve[0]
  assert any("ETA" in line for line in lines)
  saved = json.loads(metrics_path(out).read_text())
  assert set(saved["eval"]["snr_db"]) == {"1", "2", "4", "8", "12"}
  assert all(np.isfinite(v) for v in saved["eval"]["mr_stft"].values())
  loaded = NeuralCodec.load(out)
  assert loaded.codebooks.shape == (12, 256, 64)
  assert loaded.latent_stats["std"].shape == (64,)


def test_magnitude_dims_come_from_the_magnitude_spectrum_only():
  """With magnitude_dims M the first M latent dimensions see |X| alone:
  the same audio with its sign flipped (every phase moved by pi, the same
  magnitude spectrum) gives them bit for bit, while the phase-aware
  dimensions change; the config round-trips and M is range-checked."""
  import dataclasses
  from mrt_distill.codec.neural import (CodecModel, NeuralCodecConfig,
                                        init_params)
  g = REFERENCE
  cfg = dataclasses.replace(TEST_CONFIG, magnitude_dims=8)
  params = init_params(g, cfg, seed=1)
  model = CodecModel(g, cfg)
  audio = np.random.default_rng(0).normal(
      size=(1, 4 * g.samples_per_frame, g.channels)).astype(np.float32)
  enc = jax.jit(lambda a: model.apply({"params": params}, a,
                                      method=CodecModel.encode))
  z, z_flip = np.asarray(enc(audio)), np.asarray(enc(-audio))
  assert z.shape == (1, 4, g.codec_latent_dim)
  np.testing.assert_array_equal(z[..., :8], z_flip[..., :8])
  assert np.abs(z[..., 8:] - z_flip[..., 8:]).max() > 1e-3
  assert NeuralCodecConfig.from_dict(cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match=r"magnitude_dims 64: give 0 \(off\) "
                     r"up to 63"):
    init_params(g, dataclasses.replace(TEST_CONFIG, magnitude_dims=64))
