"""Samples on the notebook player's wire: base64 of interleaved PCM.

Samples travel as little-endian int16 ("s16", half the bytes of float32;
48 kHz stereo is about 0.5 MB of base64 per 2 s chunk) or float32 ("f32",
exact). Non-finite samples become 0 before they leave Python: a NaN must
not reach a speaker.

Shapes: S samples per chunk (frames), C channels. Audio is (S, C) float32.
"""

from __future__ import annotations

import base64

import numpy as np

PCM_FORMATS = ("s16", "f32")
_S16_SCALE = 32767.0


# ---- PCM over the wire -------------------------------------------------------
def as_frames(audio) -> np.ndarray:
  x = np.asarray(audio, dtype=np.float32)
  if x.ndim == 1:
    x = x[:, None]
  if x.ndim != 2 or x.shape[1] < 1:
    raise ValueError(f"audio of shape {np.shape(audio)}: expected (samples,) "
                     f"or (samples, channels)")
  return x


def encode_pcm(audio, fmt: str = "s16") -> str:
  """float (S, C) (or (S,)) -> base64 of interleaved little-endian PCM.

  "s16": clipped to [-1, 1], scaled by 32767, rounded. "f32": exact.
  NaN and inf become 0 in both.
  """
  if fmt not in PCM_FORMATS:
    raise ValueError(f"pcm format {fmt!r}: expected one of {PCM_FORMATS}")
  x = as_frames(audio)
  x = np.where(np.isfinite(x), x, np.float32(0.0))
  if fmt == "s16":
    raw = np.round(np.clip(x, -1.0, 1.0) * _S16_SCALE).astype("<i2")
  else:
    raw = x.astype("<f4")
  return base64.b64encode(np.ascontiguousarray(raw).tobytes()).decode("ascii")


def decode_pcm(data: str, channels: int, fmt: str = "s16") -> np.ndarray:
  """The inverse of `encode_pcm` -> float32 (S, C) (what the page plays)."""
  if fmt not in PCM_FORMATS:
    raise ValueError(f"pcm format {fmt!r}: expected one of {PCM_FORMATS}")
  raw = base64.b64decode(data, validate=True)
  dtype = np.dtype("<i2" if fmt == "s16" else "<f4")
  frame = dtype.itemsize * int(channels)
  if channels < 1 or len(raw) % frame:
    raise ValueError(f"{len(raw)} bytes of {fmt} PCM do not split into "
                     f"frames of {channels} channel(s)")
  x = np.frombuffer(raw, dtype).reshape(-1, int(channels)).astype(np.float32)
  return x / np.float32(_S16_SCALE) if fmt == "s16" else x
