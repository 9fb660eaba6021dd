"""Tests for the procedural music generator and its soundfont renderer."""

import math

import numpy as np
import pytest

from mrt_distill.world import music
from mrt_distill.world.music import render

SR = 16_000
ALL_STYLES = sorted(music.STYLES)
REQUIRED_STYLES = ("techno", "bossa_nova", "ambient_pads", "drum_and_bass",
                   "jazz_piano_trio", "rock", "lofi_hiphop", "string_ensemble")


def _audio(style: str, seed: int, seconds: float = 3.0, sample_rate: int = SR,
           channels: int = 1) -> np.ndarray:
  return render.render(
      music.generate_piece(style, seed, seconds), sample_rate, channels)


def _onset_rate(audio: np.ndarray, sample_rate: int) -> float:
  import librosa  # Slow to import; only this test needs it.
  onsets = librosa.onset.onset_detect(y=audio[:, 0], sr=sample_rate)
  return len(onsets) / (len(audio) / sample_rate)


def _spectral_centroid(audio: np.ndarray, sample_rate: int) -> float:
  """Magnitude-weighted mean frequency of the whole clip, in Hz."""
  spectrum = np.abs(np.fft.rfft(audio[:, 0]))
  freqs = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
  return float((spectrum * freqs).sum() / spectrum.sum())


# ---------------------------------------------------------------- styles ---


def test_required_styles_exist():
  assert len(music.STYLES) >= 8
  for name in REQUIRED_STYLES:
    assert name in music.STYLES
  for name, style in music.STYLES.items():
    assert style.name == name and style.words[0] == name


@pytest.mark.parametrize("style", ALL_STYLES)
def test_patterns_are_whole_bars(style):
  spec = music.STYLES[style]
  patterns = [p for _, p in sum(spec.drums.patterns, ())] if spec.drums else []
  for part in (spec.bass, spec.harmony, spec.lead):
    if part is not None:
      patterns.extend(part.patterns)
  for pattern in patterns:
    assert len(pattern) % music.STEPS_PER_BAR == 0, pattern


# ----------------------------------------------------------- generation ---


@pytest.mark.parametrize("style", ALL_STYLES)
def test_piece_metadata(style):
  spec = music.STYLES[style]
  vocab = set(music.DESCRIPTOR_VOCAB)
  for seed in range(6):
    piece = music.generate_piece(style, seed, 4.0)
    low, high = spec.tempo_range
    assert low <= piece.tempo_bpm <= high
    tonic, mode = piece.key.split(" ", 1)
    assert tonic in music.PITCH_NAMES
    assert mode.replace(" ", "_") in spec.modes
    assert style in piece.descriptors
    assert set(piece.descriptors) <= vocab
    assert len(set(piece.descriptors)) == len(piece.descriptors)
    assert set(piece.text.split()) <= vocab
    assert music.tempo_word(piece.tempo_bpm) in piece.descriptors
    assert len(piece.instruments) == len(piece.parts)
    assert [p.name for p in piece.parts] == list(piece.instruments)
    assert [p.role for p in piece.parts][-3:-1] == ["bass", "harmony"]


@pytest.mark.parametrize("style", ALL_STYLES)
def test_notes_are_valid(style):
  # A duration off the microsecond grid: rounding must not end notes late.
  seconds = 5.0000006
  piece = music.generate_piece(style, 7, seconds)
  assert piece.seconds == seconds
  for part in piece.parts:
    assert part.notes, part.role
    starts = [n.start for n in part.notes]
    assert starts == sorted(starts)
    for note in part.notes:
      assert 0 <= note.start < note.end <= piece.seconds
      assert 0 <= note.pitch <= 127 and 1 <= note.velocity <= 127


def test_vocab_is_sorted_and_exactly_covered():
  vocab = music.DESCRIPTOR_VOCAB
  assert vocab == sorted(set(vocab))
  seen = set()
  for style in ALL_STYLES:
    for seed in range(40):
      seen.update(music.generate_piece(style, seed, 1.0).descriptors)
  assert seen == set(vocab)


def test_generation_is_deterministic_and_seed_dependent():
  a = music.generate_piece("bossa_nova", 3, 6.0)
  assert a == music.generate_piece("bossa_nova", 3, 6.0)
  assert a != music.generate_piece("bossa_nova", 4, 6.0)
  # Global draws do not depend on the duration.
  b = music.generate_piece("bossa_nova", 3, 12.0)
  assert (a.tempo_bpm, a.key, a.instruments) == (b.tempo_bpm, b.key,
                                                 b.instruments)


def test_seeds_vary_tempo_key_and_instruments():
  pieces = [music.generate_piece("rock", seed, 1.0) for seed in range(12)]
  assert len({p.tempo_bpm for p in pieces}) > 3
  assert len({p.key for p in pieces}) > 3
  assert len({p.instruments for p in pieces}) > 1


def test_to_pretty_midi():
  piece = music.generate_piece("funk", 1, 5.0)
  midi = piece.to_pretty_midi()
  assert midi.get_tempo_changes()[1][0] == pytest.approx(piece.tempo_bpm)
  assert len(midi.instruments) == len(piece.parts)
  for instrument, part in zip(midi.instruments, piece.parts):
    assert instrument.is_drum == part.is_drum
    assert instrument.program == part.program
    assert len(instrument.notes) == len(part.notes)
  assert midi.get_end_time() <= piece.seconds + 1e-6


# ----------------------------------------------- characteristic rhythms ---


def _drum_starts(piece, key):
  (drums,) = [p for p in piece.parts if p.is_drum]
  return np.array([n.start for n in drums.notes if n.pitch == key])


def test_techno_is_four_on_the_floor():
  for seed in range(4):
    piece = music.generate_piece("techno", seed, 8.0)
    beat = 60.0 / piece.tempo_bpm
    kicks = _drum_starts(piece, music.KICK)
    beats = np.arange(0.0, piece.seconds, beat)
    # Every beat has a kick (techno is not humanised).
    assert np.all(np.min(np.abs(kicks[None, :] - beats[:, None]), 1) < 1e-3)


def test_drum_and_bass_is_fast_breakbeat():
  for seed in range(4):
    piece = music.generate_piece("drum_and_bass", seed, 4.0)
    assert piece.tempo_bpm >= 160
    assert len(_drum_starts(piece, music.SNARE)) > 0


@pytest.mark.parametrize("style", ["ambient_pads", "string_ensemble"])
def test_calm_styles_have_no_drums(style):
  for seed in range(4):
    piece = music.generate_piece(style, seed, 4.0)
    assert not any(p.is_drum for p in piece.parts)
    assert "calm" in piece.descriptors or "energetic" not in piece.descriptors


def test_jazz_ride_is_swung():
  piece = music.generate_piece("jazz_piano_trio", 0, 10.0)
  beat = 60.0 / piece.tempo_bpm
  phase = (_drum_starts(piece, music.RIDE) / beat) % 1.0
  offbeats = phase[(phase > 0.2) & (phase < 0.9)]
  assert len(offbeats) > 3
  # Swung 8ths land near 2/3 of the beat, not at 1/2.
  assert np.median(offbeats) > 0.6


def test_rock_has_backbeat():
  piece = music.generate_piece("rock", 2, 8.0)
  beat = 60.0 / piece.tempo_bpm
  snares = _drum_starts(piece, music.SNARE)
  beat_index = np.round(snares / beat).astype(int)
  on_beat = np.abs(snares / beat - beat_index) < 0.1
  assert np.mean(beat_index[on_beat] % 2 == 1) > 0.8  # Beats 2 and 4.


# ------------------------------------------------------------ rendering ---


@pytest.mark.parametrize("style", ALL_STYLES)
def test_every_style_renders(style):
  seconds = 2.3
  audio = _audio(style, 0, seconds)
  assert audio.dtype == np.float32
  assert audio.shape == (round(seconds * SR), 1)
  assert np.all(np.isfinite(audio))
  assert np.sqrt(np.mean(audio**2)) > 0.01  # Not silent.
  peak_db = 20 * math.log10(np.max(np.abs(audio)))
  assert peak_db == pytest.approx(-1.0, abs=1e-3)


def test_stereo_24k_shape():
  audio = _audio("lofi_hiphop", 1, 1.37, sample_rate=24_000, channels=2)
  assert audio.shape == (round(1.37 * 24_000), 2)
  assert not np.array_equal(audio[:, 0], audio[:, 1])  # Parts are panned.


def test_render_is_deterministic_and_seed_dependent():
  a = _audio("techno", 5)
  assert a.tobytes() == _audio("techno", 5).tobytes()
  assert a.tobytes() != _audio("techno", 6).tobytes()


def test_styles_are_distinguishable():
  for seed in range(3):
    techno = _audio("techno", seed, 6.0)
    ambient = _audio("ambient_pads", seed, 6.0)
    assert _onset_rate(techno, SR) > 2 * _onset_rate(ambient, SR)
    assert _spectral_centroid(techno, SR) > _spectral_centroid(ambient, SR)


# ------------------------------------------------------------ bad input ---


def test_unknown_style_lists_known_styles():
  with pytest.raises(ValueError) as info:
    music.generate_piece("polka", 0, 1.0)
  for name in ALL_STYLES:
    assert name in str(info.value)


@pytest.mark.parametrize("seconds", [0, -1.0, float("nan"), float("inf")])
def test_bad_seconds(seconds):
  with pytest.raises(ValueError):
    music.generate_piece("rock", 0, seconds)


def test_bad_render_arguments():
  piece = music.generate_piece("rock", 0, 1.0)
  with pytest.raises(ValueError):
    render.render(piece, 16_000, channels=3)
  with pytest.raises(ValueError):
    render.render(piece, 0)
