"""The shipped reference-world weights load, verify, and perform."""

import numpy as np
import pytest

from mrt_distill import audio_losses
from mrt_distill.geometry import REFERENCE
from mrt_distill.world import assets, music, render


@pytest.fixture(scope="module")
def codec():
  return assets.load_codec()


@pytest.fixture(scope="module")
def held_out():
  # Seeds far from every training seed of the build.
  return {s: render.render(music.generate_piece(s, 987_654, 2.0),
                           REFERENCE.sample_rate, 1)
          for s in ("techno", "jazz_piano_trio", "ambient_pads")}


def _snr_db(ref, est):
  return 10 * np.log10(np.sum(ref**2) / np.sum((ref - est)**2))


def test_codec_is_the_reference_geometry(codec):
  assert codec.geometry == REFERENCE
  assert codec.codebooks.shape == (12, 256, 64)


def test_codec_quality_on_held_out_pieces(codec, held_out):
  """Thresholds a little below the build's measured figures (held-out SNR
  4.1 dB and MR-STFT 1.28 at 8 levels, docs/reference_world.md)."""
  snrs, mrs = {}, {}
  for style, audio in held_out.items():
    codes = codec.encode(audio, REFERENCE.sample_rate)
    assert codes.shape == (50, 12) and codes.dtype == np.int32
    for k in (2, 8):
      rec = codec.decode(codes[:, :k])[:len(audio)]
      snrs[style, k] = _snr_db(audio[:, 0], rec[:, 0])
      mrs[style, k] = float(audio_losses.multi_resolution_stft_loss(
          audio[None, :, 0], rec[None, :, 0]))
  mean = lambda d, k: np.mean([v for (s, kk), v in d.items() if kk == k])
  assert mean(snrs, 8) > 2.0
  assert mean(mrs, 8) < 1.5
  # More levels, better reconstruction.
  assert mean(snrs, 8) > mean(snrs, 2) and mean(mrs, 8) < mean(mrs, 2)


def test_missing_asset_says_how_to_build(monkeypatch, tmp_path):
  monkeypatch.setattr(assets, "ASSET_DIR", tmp_path)
  with pytest.raises(assets.MissingAssetError,
                     match="--stage codec"):
    assets.load_codec()
