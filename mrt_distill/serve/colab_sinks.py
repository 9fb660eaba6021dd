"""Where the notebook player's audio goes: the `Sink` interface and the
sinks without speakers, `ListSink` (memory) and `WavSink` (a file), which
run the same loop, widgets and controls headless (tests, scripts).
"""

from __future__ import annotations

import abc
import pathlib
import threading
import time

import numpy as np

from mrt_distill.serve.colab_pcm import PCM_FORMATS
from mrt_distill.serve.colab_pcm import as_frames
from mrt_distill.serve.colab_pcm import decode_pcm
from mrt_distill.serve.colab_pcm import encode_pcm


# ---- sinks -------------------------------------------------------------------
class Sink(abc.ABC):
  """Where `PushLoop` puts audio: the browser, a list, a wav file.

  `wait_room` paces the loop (True when another chunk may go now), `done`
  ends it (a finite sink is full).
  """

  sample_rate: int | None = None
  channels: int | None = None

  def __init__(self):
    self.chunks = 0
    self.frames = 0

  def open(self, sample_rate: int, channels: int,
           chunk_samples: int | None = None) -> None:
    """Called once before the first write (the stream's format)."""
    self.sample_rate, self.channels = int(sample_rate), int(channels)

  def wait_room(self, timeout: float) -> bool:
    return True

  @abc.abstractmethod
  def write(self, chunk: np.ndarray, info: dict) -> None:
    """One (S, C) float32 chunk, in stream order."""

  @property
  def done(self) -> bool:
    return False

  def flush(self) -> None:
    """Drop audio written but not played yet (stop means stop)."""

  def close(self) -> None:
    pass

  def view(self):
    """Something to display next to the widgets, or None."""
    return None

  def stats(self) -> dict:
    return {"chunks": self.chunks,
            "seconds": self.frames / self.sample_rate if self.sample_rate
            else 0.0}


class _OfflineSink(Sink):
  """A sink without speakers. `realtime` consumes its audio on the wall clock
  (a simulated listener `lead_seconds` behind the loop), so a headless run
  steers a stream that plays at real speed; otherwise it takes chunks as
  fast as they come. `max_chunks` makes it finite."""

  def __init__(self, max_chunks: int | None = None, realtime: bool = False,
               lead_seconds: float = 0.5):
    super().__init__()
    if max_chunks is not None and int(max_chunks) < 1:
      raise ValueError(f"max_chunks must be >= 1, got {max_chunks!r}")
    self.max_chunks = None if max_chunks is None else int(max_chunks)
    self.realtime, self.lead_seconds = bool(realtime), float(lead_seconds)
    self._t0: float | None = None
    self._stopped = threading.Event()

  def wait_room(self, timeout: float) -> bool:
    if not self.realtime or self._t0 is None:
      return not self.done
    ahead = self.frames / self.sample_rate - (time.monotonic() - self._t0)
    wait = ahead - self.lead_seconds
    if wait <= 0:
      return not self.done
    self._stopped.wait(min(wait, timeout))
    return False

  def _wrote(self, chunk: np.ndarray) -> None:
    if self._t0 is None:
      self._t0 = time.monotonic()
    self.chunks += 1
    self.frames += len(chunk)

  @property
  def done(self) -> bool:
    return self._stopped.is_set() or (
        self.max_chunks is not None and self.chunks >= self.max_chunks)

  def close(self) -> None:
    self._stopped.set()


class ListSink(_OfflineSink):
  """Keeps every chunk (a copy) and its info dict in memory."""

  def __init__(self, max_chunks: int | None = None, realtime: bool = False,
               lead_seconds: float = 0.5):
    super().__init__(max_chunks, realtime, lead_seconds)
    self.audio: list[np.ndarray] = []
    self.infos: list[dict] = []

  def write(self, chunk, info):
    if self.done:
      return
    self.audio.append(np.array(chunk, np.float32))
    self.infos.append(dict(info))
    self._wrote(chunk)

  def concatenated(self) -> np.ndarray:
    return (np.concatenate(self.audio) if self.audio
            else np.zeros((0, self.channels or 1), np.float32))


class WavSink(_OfflineSink):
  """Writes chunks to a float32 wav as they come (readable once `done` or
  closed). `wire_format` ("s16"/"f32") sends each chunk through the page's
  encoding first, so the file holds exactly what a browser would play."""

  def __init__(self, path, max_chunks: int | None = None,
               realtime: bool = False, lead_seconds: float = 0.5,
               wire_format: str | None = None):
    super().__init__(max_chunks, realtime, lead_seconds)
    if wire_format is not None and wire_format not in PCM_FORMATS:
      raise ValueError(f"wire_format {wire_format!r}: expected None or one "
                       f"of {PCM_FORMATS}")
    self.path = pathlib.Path(path)
    self.wire_format = wire_format
    self._file = None
    self._lock = threading.Lock()

  def open(self, sample_rate, channels, chunk_samples=None):
    import soundfile as sf
    super().open(sample_rate, channels, chunk_samples)
    with self._lock:
      if self._file is not None:
        self._file.close()
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self._file = sf.SoundFile(self.path, "w", samplerate=self.sample_rate,
                                channels=self.channels, subtype="FLOAT")

  def write(self, chunk, info):
    with self._lock:
      if self._file is None:
        raise RuntimeError("WavSink.write before open() (or after close())")
      if self.done:
        return
      x = as_frames(chunk)
      if self.wire_format is not None:
        x = decode_pcm(encode_pcm(x, self.wire_format), x.shape[1],
                       self.wire_format)
      self._file.write(x)
      self._wrote(x)
      if self.done:
        self._file.close()
        self._file = None

  def close(self):
    super().close()
    with self._lock:
      if self._file is not None:
        self._file.close()
        self._file = None
