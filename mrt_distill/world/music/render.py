"""Render a `music.Piece` to audio with a General MIDI soundfont.

The synthesiser is TinySoundFont (PyPI `tinysoundfont`: a compiled SF2
player with no system-library dependencies) playing the General MIDI
soundfont that ships inside `pretty_midi` (TimGM6mb.sf2, 6 MB).

Install (both from PyPI alone):

  pip install pretty_midi==0.2.11.post0
  pip install --no-deps tinysoundfont==0.3.7

`--no-deps` because tinysoundfont declares `pyaudio`, which only its
real-time `Synth.start()` playback imports (lazily) and which needs the
PortAudio headers to build. Offline rendering never touches it; `pip check`
will still report the missing pyaudio.

Rendering is sample-accurate: the synth renders exactly up to each MIDI
event's sample, the event is applied, and so on. Same piece -> same bytes.
"""

from __future__ import annotations

import argparse
import functools
import pathlib

import numpy as np
import pretty_midi
import tinysoundfont

from mrt_distill import atomic
from mrt_distill.world import music

PEAK_DBFS = -1.0
_BYTES_PER_FRAME = 2 * 4  # The synth always writes interleaved float32 stereo.
_DRUM_BANK = 128  # SF2 bank of the GM/GS drum kits.


def default_soundfont() -> pathlib.Path:
  """Path of the GM soundfont bundled with pretty_midi."""
  return pathlib.Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


@functools.lru_cache(maxsize=4)
def _soundfont_bytes(path: str) -> bytes:
  # Parsing from memory saves re-reading 6 MB from disk for every render.
  return pathlib.Path(path).read_bytes()


def _part_channels(piece: music.Piece) -> list[int]:
  """MIDI channel per part: drums on channel 10 (index 9), others 0, 1, ..."""
  free = iter(c for c in range(16) if c != music.DRUM_CHANNEL)
  return [music.DRUM_CHANNEL if p.is_drum else next(free) for p in piece.parts]


def _events(piece: music.Piece, channels: list[int],
            sample_rate: int) -> list[tuple[int, int, int, int, int]]:
  """Note events (sample, is_on, channel, pitch, velocity), time-sorted.

  At equal samples note-offs sort first, so a re-struck pitch is not cut by
  the release of its predecessor.
  """
  events = []
  for part, channel in zip(piece.parts, channels):
    for note in part.notes:
      events.append((round(note.start * sample_rate), 1, channel, note.pitch,
                     note.velocity))
      events.append((round(note.end * sample_rate), 0, channel, note.pitch, 0))
  events.sort()
  return events


def _make_synth(piece: music.Piece, channels: list[int], sample_rate: int,
                soundfont: str) -> tinysoundfont.Synth:
  """A fresh synth (no ringing voices) with each part's program and mix."""
  synth = tinysoundfont.Synth(samplerate=sample_rate)
  sfid = synth.sfload(_soundfont_bytes(soundfont))
  for part, channel in zip(piece.parts, channels):
    bank = _DRUM_BANK if part.is_drum else 0
    synth.program_select(channel, sfid, bank, part.program,
                         is_drums=part.is_drum)
    synth.control_change(channel, 7, part.volume)
    synth.control_change(channel, 10, part.pan)
  return synth


def _synthesise(piece: music.Piece, sample_rate: int,
                soundfont: str) -> np.ndarray:
  """Raw stereo synth output, float32 [samples, 2], not normalised."""
  num_samples = round(piece.seconds * sample_rate)
  channels = _part_channels(piece)
  synth = _make_synth(piece, channels, sample_rate, soundfont)
  audio = np.zeros((num_samples, 2), dtype=np.float32)
  buffer = memoryview(audio).cast("B")
  position = 0

  def advance(to: int) -> None:
    nonlocal position
    to = min(to, num_samples)
    if to > position:
      synth.generate_simple(
          to - position,
          buffer=buffer[position * _BYTES_PER_FRAME:to * _BYTES_PER_FRAME])
      position = to

  for sample, is_on, channel, pitch, velocity in _events(
      piece, channels, sample_rate):
    if sample >= num_samples:
      break
    advance(sample)
    if is_on:
      synth.noteon(channel, pitch, velocity)
    else:
      synth.noteoff(channel, pitch)
  advance(num_samples)
  return audio


def normalise_peak(audio: np.ndarray,
                   peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
  """Scale so that max |sample| is `peak_dbfs`; silence stays silence."""
  peak = float(np.max(np.abs(audio))) if audio.size else 0.0
  if peak == 0.0:
    return audio
  return (audio * (10.0**(peak_dbfs / 20.0) / peak)).astype(np.float32)


def render(piece: music.Piece,
           sample_rate: int,
           channels: int = 1,
           soundfont: str | pathlib.Path | None = None) -> np.ndarray:
  """Synthesise `piece` with a General MIDI soundfont.

  Args:
    piece: from `music.generate_piece`.
    sample_rate: output rate in Hz.
    channels: 1 (mono: the average of the synth's stereo mix) or 2.
    soundfont: an SF2 file; defaults to pretty_midi's TimGM6mb.sf2.

  Returns:
    float32 [round(piece.seconds * sample_rate), channels], peak at -1 dBFS.
    Deterministic: the same piece always gives the same bytes.

  Raises:
    ValueError: non-positive sample rate or channels not 1 or 2.
  """
  if int(sample_rate) != sample_rate or sample_rate <= 0:
    raise ValueError(f"sample_rate must be a positive integer: {sample_rate}")
  if channels not in (1, 2):
    raise ValueError(f"channels must be 1 or 2, got {channels}")
  path = str(soundfont if soundfont is not None else default_soundfont())
  audio = _synthesise(piece, int(sample_rate), path)
  if channels == 1:
    audio = audio.mean(axis=1, keepdims=True, dtype=np.float32)
  return normalise_peak(audio)


def _main() -> None:
  """Write one piece to a WAV file, for listening."""
  import soundfile  # Only the command line writes files.

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("style", choices=sorted(music.STYLES))
  parser.add_argument("output", help="WAV path")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--sample_rate", type=int, default=24_000)
  parser.add_argument("--channels", type=int, default=2)
  args = parser.parse_args()
  piece = music.generate_piece(args.style, args.seed, args.seconds)
  with atomic.target(args.output) as tmp:
    soundfile.write(tmp, render(piece, args.sample_rate, args.channels),
                    args.sample_rate, subtype="FLOAT")
  print(f"{piece.key}, {piece.tempo_bpm:.0f} BPM, "
        f"{', '.join(piece.instruments)}: {piece.text}")


if __name__ == "__main__":
  _main()
