"""Audio files the command line writes (`generate`, `teacher-stream`):
check an --out path before anything heavy runs, and write it atomically.

Its own module so that both commands use it without importing each other.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np


def check_audio_out(out) -> pathlib.Path:
  """Fails fast, before any generation, on an output file that cannot be
  written: a missing or unwritable folder, a folder given as the file, or an
  extension soundfile has no format for.

  Raises:
    FileNotFoundError: the folder does not exist.
    ValueError: the other cases; each message names the fix.
  """
  import soundfile as sf

  out = pathlib.Path(out)
  if out.is_dir():
    raise ValueError(f"--out {str(out)!r} is a folder; give a file name "
                     f"such as {str(out / 'out.wav')!r}")
  ext = out.suffix.lstrip(".").upper()
  if ext not in sf.available_formats():
    raise ValueError(f"--out {str(out)!r}: soundfile cannot write "
                     f"{out.suffix or 'files without an extension'}; end the "
                     f"name in .wav (or .flac)")
  folder = out.parent
  if not folder.is_dir():
    raise FileNotFoundError(f"--out {str(out)!r}: the folder {str(folder)!r} "
                            f"does not exist; create it (mkdir -p) or choose "
                            f"another --out")
  if not os.access(folder, os.W_OK | os.X_OK) or (
      out.exists() and not os.access(out, os.W_OK)):
    raise ValueError(f"--out {str(out)!r}: no permission to write there; "
                     f"choose a folder you can write to")
  return out


def write_audio(out, audio, sample_rate: int) -> pathlib.Path:
  """float audio (N,) or (N, channels) in [-1, 1] -> `out` (format from the
  extension; 16-bit PCM for .wav)."""
  import soundfile as sf
  from mrt_distill import atomic
  out = pathlib.Path(out)
  with atomic.target(out) as tmp:  # a failed write keeps an existing file
    sf.write(tmp, np.asarray(audio, np.float32), int(sample_rate))
  return out
