"""How stable are a codec's tokens? The measurements behind issue 19's codec
(`tools/probe_codec_tokens.py` prints them; the world build's evaluate stage
records them in report.json and docs/reference_world.md).

`token_stability` encodes renders the codec never trained on and measures,
per RVQ level the teacher generates:

  shift_frame   tokens of the audio delayed by exactly one frame vs the
                original's, aligned (the encoder is frame-equivariant, so
                this should be ~1: a sanity check of the alignment);
  shift_half    the same with a half-frame (20 ms) delay: music does not
                fall on the frame grid, so this is how stable a token is to
                where a note lands inside its frame;
  lag_bar       token at frame t vs at t + one bar (4 beats at the piece's
                tempo), in the same piece: the repetition a teacher copies;
  chance        agreement of two independent draws from the level's token
                frequencies (sum of squared frequencies): the floor;
  entropy       unigram entropy of the level (nats; ln 256 = 5.55 is
                uniform use of the codebook).

`judge_ceiling`: the judge's accuracy on renders passed through the codec at
a few RVQ depths (what any teacher writing that many levels can reach).
"""

from __future__ import annotations

import numpy as np

from mrt_distill.world import music
from mrt_distill.world.music import render

# Probe pieces: not ground truth (piece_pool.GT_SEED_BASE) nor held out. The
# codec's training stream draws from all of [0, 1e9), so one of these could
# in principle be a training piece (a chance of ~1e-5 a piece); kept where
# the screening figures of docs/benchmarks.md were measured.
PROBE_SEED_BASE = 556_000  # disjoint from training and ground-truth seeds


def level_stats(codes_TxK: list[np.ndarray], other_TxK: list[np.ndarray]
                ) -> np.ndarray:
  """Mean per-level agreement of aligned code arrays -> (K,)."""
  eq = [np.mean(a == b, axis=0) for a, b in zip(codes_TxK, other_TxK)]
  return np.mean(eq, axis=0)


def token_stability(codec, *, pieces: int = 3, seconds: float = 16.0, levels: int
          | None = None, styles=None, bar_grid_hz: float | None = None
          ) -> dict:
  g = codec.geometry
  k = levels or g.target_levels
  spf = g.samples_per_frame
  rows = []
  for si, style in enumerate(list(styles or music.STYLES)):
    base, frame, half, bar_a, bar_b = [], [], [], [], []
    for j in range(pieces):
      piece = music.generate_piece(style, PROBE_SEED_BASE + si * 31 + j,
                                   seconds, bar_grid_hz=bar_grid_hz)
      audio = render.render(piece, g.sample_rate, g.channels)
      n = (len(audio) // spf - 2) * spf  # room for the delayed copies

      def codes(delay, audio=audio, n=n):
        x = np.concatenate([np.zeros((delay, audio.shape[1]), audio.dtype),
                            audio])[:n]
        return codec.encode(x, g.sample_rate)[:, :k]

      c0 = codes(0)
      c_frame, c_half = codes(spf), codes(spf // 2)
      base.append(c0[4:-4])
      frame.append(c_frame[5:-3])  # delayed by one frame: index t+1 = t
      half.append(c_half[4:-4])
      lag = int(round(4 * 60.0 / piece.tempo_bpm * g.frame_rate))
      bar_a.append(c0[:-lag])
      bar_b.append(c0[lag:])
    allc = np.concatenate(base)
    chance, entropy = [], []
    for lv in range(k):
      p = np.bincount(allc[:, lv], minlength=g.codebook_size) / len(allc)
      chance.append(float(np.sum(p**2)))
      nz = p[p > 0]
      entropy.append(float(-(nz * np.log(nz)).sum()))
    rows.append({
        "style": style,
        "shift_frame": level_stats(base, frame).round(3).tolist(),
        "shift_half": level_stats(base, half).round(3).tolist(),
        "lag_bar": level_stats(bar_a, bar_b).round(3).tolist(),
        "chance": np.round(chance, 3).tolist(),
        "entropy": np.round(entropy, 2).tolist(),
    })
  mean = {key: np.mean([r[key] for r in rows], axis=0).round(3).tolist()
          for key in ("shift_frame", "shift_half", "lag_bar", "chance",
                      "entropy")}
  return {"levels": k, "pieces_per_style": pieces, "seconds": seconds,
          "bar_grid_hz": bar_grid_hz,
          "per_style": rows, "mean": mean}


def judge_ceiling(codec, judge, *, pieces: int = 2, seconds: float = 10.0,
                  levels=(2, 4), bar_grid_hz: float | None = None) -> dict:
  """Judge accuracy of held-out renders passed through the codec at each of
  `levels` RVQ depths (the ceiling of a teacher that writes that many),
  per style, next to the ground truth's own accuracy."""
  g = codec.geometry
  rows = {}
  for si, style in enumerate(music.STYLES):
    audio = np.stack([render.render(music.generate_piece(
        style, PROBE_SEED_BASE + 7_000 + si * 31 + j, seconds,
        bar_grid_hz=bar_grid_hz), g.sample_rate, g.channels)
                      for j in range(pieces)])
    codes = codec.encode(audio, g.sample_rate)
    row = {"ground_truth": float(np.mean(
        np.array(judge.classify(audio, g.sample_rate)) == style))}
    for k in levels:
      rec = codec.decode(codes[..., :k])[:, :audio.shape[1]]
      row[f"levels_{k}"] = float(np.mean(
          np.array(judge.classify(rec, g.sample_rate)) == style))
    rows[style] = row
  mean = {key: round(float(np.mean([r[key] for r in rows.values()])), 3)
          for key in next(iter(rows.values()))}
  worst = {key: min(rows, key=lambda s: rows[s][key]) for key in mean}
  return {"per_style": rows, "mean": mean, "worst_style": worst}


def chroma_agreement(reference_S, other_S, sample_rate: int) -> float:
  """Pitch kept: Pearson correlation of the two signals' chromagrams (12
  pitch classes x frames, librosa.feature.chroma_stft), 1 = the same pitch
  content frame by frame. Stability can be bought by coarse levels that say
  nothing about pitch; this measure sees it (SNR barely does)."""
  import librosa
  n = min(len(reference_S), len(other_S))
  a, b = (librosa.feature.chroma_stft(y=np.asarray(x[:n], np.float32),
                                      sr=sample_rate, n_fft=2048,
                                      hop_length=512).ravel()
          for x in (reference_S, other_S))
  if a.std() == 0 or b.std() == 0:
    return 0.0
  return float(np.corrcoef(a, b)[0, 1])


def reconstruction_fidelity(codec, *, pieces: int = 2, seconds: float = 10.0,
                            levels=(1, 2, 4), styles=None,
                            bar_grid_hz: float | None = None) -> dict:
  """Held-out renders through the codec at each of `levels` RVQ depths:
  SNR (dB) and chroma agreement with the original (`chroma_agreement`),
  per style and their mean -- what the coarse tokens keep, to read next to
  `token_stability` when screening codecs."""
  g = codec.geometry
  rows = {}
  for si, style in enumerate(styles or music.STYLES):
    audio = np.stack([render.render(music.generate_piece(
        style, PROBE_SEED_BASE + 9_000 + si * 31 + j, seconds,
        bar_grid_hz=bar_grid_hz), g.sample_rate, g.channels)
                      for j in range(pieces)])
    codes = codec.encode(audio, g.sample_rate)
    mono = audio.mean(axis=-1)
    row = {}
    for k in levels:
      rec = codec.decode(codes[..., :k])[:, :audio.shape[1]].mean(axis=-1)
      err = np.mean((rec - mono[:, :rec.shape[1]]) ** 2)
      row[f"snr_db_{k}"] = float(10 * np.log10(
          np.mean(mono ** 2) / max(err, 1e-12)))
      row[f"chroma_{k}"] = float(np.mean([chroma_agreement(
          m, r, g.sample_rate) for m, r in zip(mono, rec)]))
    rows[style] = row
  mean = {key: round(float(np.mean([r[key] for r in rows.values()])), 3)
          for key in next(iter(rows.values()))}
  return {"levels": list(levels), "per_style": rows, "mean": mean}
