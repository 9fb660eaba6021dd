"""Loss curves of a run as a PNG (one panel per loss term, train and eval)."""

from __future__ import annotations

import json
import pathlib


def plot_loss_curves(workdir) -> pathlib.Path | None:
  """workdir/metrics.jsonl -> workdir/loss_curves.png (None: no metrics)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  workdir = pathlib.Path(workdir)
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return None
  rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
  terms = sorted({k[len("loss/"):] for r in rows for k in r
                  if k.startswith("loss/")})
  if not terms:
    return None
  fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 3.0),
                           squeeze=False)
  for ax, term in zip(axes[0], terms):
    for prefix, style, label in (("loss/", "-", "train"),
                                 ("eval/loss/", "o-", "eval (held out)")):
      pts = [(r["step"], r[prefix + term]) for r in rows
             if prefix + term in r]
      if pts:
        ax.plot(*zip(*pts), style, label=label, markersize=3)
    ax.set_title(term)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  out = workdir / "loss_curves.png"
  from mrt_distill import atomic
  with atomic.target(out) as tmp:
    fig.savefig(tmp, dpi=110)
  plt.close(fig)
  return out


def save_spectrogram(audio, sample_rate: int, path, *, title: str = "",
                     spans=()) -> pathlib.Path:
  """Audio (N,) or (N, channels) -> a mel spectrogram PNG at `path`.

  Channels are averaged. The x axis is time in seconds and the y axis mel
  frequency in Hz; levels are dB below the loudest bin (80 dB range).
  `spans`: (t0, t1, label) intervals in seconds to shade, e.g. a style
  transition. The analysis window is ~64 ms at any sample rate, with 64 mel
  bands below 32 kHz and 128 above, so no band is narrower than an FFT bin.
  """
  import warnings

  import librosa
  import matplotlib
  matplotlib.use("Agg")
  import librosa.display
  import matplotlib.pyplot as plt
  import numpy as np

  x = np.asarray(audio, np.float32)
  if x.ndim == 2:
    x = x.mean(axis=1)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(f"audio of shape {np.shape(audio)}: expected non-empty "
                     f"(N,) or (N, channels)")
  n_fft = 1 << max(8, round(np.log2(0.064 * sample_rate)))
  hop = n_fft // 4
  n_mels = 64 if sample_rate < 32_000 else 128
  with warnings.catch_warnings():
    # Clips shorter than n_fft: librosa pads them and says so.
    warnings.simplefilter("ignore", UserWarning)
    mel = librosa.feature.melspectrogram(y=x, sr=sample_rate, n_fft=n_fft,
                                         hop_length=hop, n_mels=n_mels)
  db = librosa.power_to_db(mel, ref=np.max, top_db=80.0)
  fig, ax = plt.subplots(figsize=(10, 3.6))
  img = librosa.display.specshow(db, sr=sample_rate, hop_length=hop,
                                 n_fft=n_fft, x_axis="s", y_axis="mel",
                                 fmax=sample_rate / 2, ax=ax, cmap="magma")
  duration = x.size / sample_rate
  for t0, t1, label in spans:
    t1 = min(float(t1), duration)
    ax.axvspan(float(t0), t1, color="cyan", alpha=0.12, lw=0)
    ax.axvline(t1, color="cyan", lw=1.0, ls="--")
    ax.text(float(t0) + 0.01 * duration, 0.95, label, color="cyan",
            transform=ax.get_xaxis_transform(), va="top", fontsize=8)
  ax.set_xlim(0, duration)
  ax.set_xlabel("time (s)")
  ax.set_ylabel("Hz (mel scale)")
  ax.set_title(title, fontsize=9)
  fig.colorbar(img, ax=ax, format="%+.0f dB", pad=0.01)
  fig.tight_layout()
  path = pathlib.Path(path)
  from mrt_distill import atomic
  with atomic.target(path) as tmp:
    fig.savefig(tmp, dpi=110)
  plt.close(fig)
  return path
