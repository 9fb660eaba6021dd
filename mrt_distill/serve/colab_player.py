"""Live playback of a `StreamSession` inside a notebook output (Colab first).

  sink = BrowserSink()                       # or WavSink / ListSink (tests)
  player = LivePlayer(session, sink, prompts="techno:1.0, funk:0.0")
  player.show()                              # widgets + the audio page
  player.play(); ...; player.stop()

Why it is built this way:
- In Colab the kernel runs on a VM and the speakers are in the browser; the
  only live link between them is the kernel's comm channel. The page opens a
  comm (`google.colab.kernel.comms.open`, the route Colab's own file download
  uses) and Python *pushes* base64 PCM chunks over it from a background
  thread. Comm messages are routed by comm id, not by cell, so the stream
  keeps reaching this output while the user runs other cells; output written
  from a thread (`display`, `eval_js`) lands in whichever cell runs now.
- The page plays through an AudioWorklet that owns a ring buffer: messages
  arrive in bursts, the audio thread takes 128 frames at a time, and the
  page's main thread can stall; the ring decouples them. On overflow the
  oldest audio goes (the newest follows the controls); after running dry it
  waits for a small prime before it plays again instead of clicking.
- Pacing is Python's job and it keeps the browser only `lead_seconds` ahead:
  more lead hides network jitter but delays every prompt change by as much.
  The worklet reports what it has consumed a few times a second; between
  reports Python extrapolates with the clock, so a busy kernel (which queues
  incoming comm messages until its cell ends) does not stall the music.
- The producer that keeps chunks ready is the session's own thread
  (`StreamSession.start`, `lead_chunks`); `PushLoop` only moves finished
  chunks from `session.read` to a `Sink`. A sink is where audio goes: the
  browser here, a list or a wav file in tests and headless runs, so the same
  loop, widgets and controls run without a browser.
- Samples travel as little-endian int16 ("s16", half the bytes of float32;
  48 kHz stereo is about 0.5 MB of base64 per 2 s chunk) or float32 ("f32",
  exact). Non-finite samples become 0 before they leave Python: a NaN must
  not reach a speaker.

Shapes: S samples per chunk (frames), C channels. Audio is (S, C) float32.
"""

from __future__ import annotations

import abc
import base64
import html
import json
import logging
import math
import pathlib
import threading
import time
import uuid
import weakref
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

PCM_FORMATS = ("s16", "f32")
_S16_SCALE = 32767.0
PROCESSOR_NAME = "mrt-distill-ring"


# ---- PCM over the wire -------------------------------------------------------
def _as_frames(audio) -> np.ndarray:
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
  x = _as_frames(audio)
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


# ---- the page ----------------------------------------------------------------
# The AudioWorklet processor (runs on the browser's audio thread). Counters
# are in source frames: `received` entered the ring, `consumed` left it
# (played or dropped), so received - consumed = fill.
WORKLET_JS = r"""
class MrtDistillRing extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.ch = o.channels;
    this.cap = o.capacity;
    this.ring = [];
    for (let c = 0; c < this.ch; c++) {
      this.ring.push(new Float32Array(this.cap));
    }
    this.r = 0;
    this.fill = 0;
    this.pos = 0;  // fractional read position between ring frames r, r + 1
    this.step = o.sourceRate / sampleRate;  // source frames per output frame
    this.prime = Math.min(o.primeFrames, this.cap);
    this.playing = false;
    this.received = 0; this.consumed = 0; this.dropped = 0; this.underruns = 0;
    this.sumSq = 0; this.n = 0;
    this.every = Math.max(128, Math.round(sampleRate * o.reportSeconds));
    this.since = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }
  onMessage(m) {
    if (m.type === 'pcm') {
      this.push(m.planes);
    } else if (m.type === 'flush') {
      this.consumed += this.fill; this.dropped += this.fill;
      this.fill = 0; this.pos = 0; this.playing = false;
      this.report();
    }
  }
  push(planes) {
    let n = planes[0].length;
    if (n > this.cap) {  // more than the ring holds: keep the newest
      const skip = n - this.cap;
      planes = planes.map((p) => p.subarray(skip));
      this.received += skip; this.consumed += skip; this.dropped += skip;
      n = this.cap;
    }
    const over = this.fill + n - this.cap;
    if (over > 0) {  // full: drop the oldest audio
      this.r = (this.r + over) % this.cap;
      this.fill -= over; this.consumed += over; this.dropped += over;
    }
    const w = (this.r + this.fill) % this.cap;
    const first = Math.min(n, this.cap - w);
    for (let c = 0; c < this.ch; c++) {
      const src = planes[Math.min(c, planes.length - 1)];
      this.ring[c].set(src.subarray(0, first), w);
      if (first < n) this.ring[c].set(src.subarray(first, n), 0);
    }
    this.fill += n; this.received += n;
  }
  process(inputs, outputs) {
    const out = outputs[0];
    const frames = out[0].length;
    if (!this.playing && this.fill >= this.prime && this.fill > 0) {
      this.playing = true;
    }
    let i = 0;
    if (this.playing) {
      for (; i < frames; i++) {
        const need = this.pos > 0 ? 2 : 1;
        if (this.fill < need) break;
        const r0 = this.r, r1 = (r0 + 1) % this.cap;
        for (let c = 0; c < out.length; c++) {
          const ring = this.ring[Math.min(c, this.ch - 1)];
          const a = ring[r0];
          out[c][i] = need === 2 ? a + (ring[r1] - a) * this.pos : a;
        }
        this.sumSq += out[0][i] * out[0][i];
        this.pos += this.step;
        while (this.pos >= 1 && this.fill > 0) {
          this.pos -= 1; this.r = (this.r + 1) % this.cap;
          this.fill -= 1; this.consumed += 1;
        }
      }
      if (i < frames) { this.underruns += 1; this.playing = false; }
    }
    for (let c = 0; c < out.length; c++) out[c].fill(0, i);
    this.n += frames;
    this.since += frames;
    if (this.since >= this.every) this.report();
    return true;
  }
  report() {
    this.port.postMessage({
      type: 'report', received: this.received, consumed: this.consumed,
      fill: this.fill, dropped: this.dropped, underruns: this.underruns,
      playing: this.playing,
      rms: this.n ? Math.sqrt(this.sumSq / this.n) : 0});
    this.since = 0; this.sumSq = 0; this.n = 0;
  }
}
registerProcessor('__PROCESSOR__', MrtDistillRing);
""".replace("__PROCESSOR__", PROCESSOR_NAME)

# The page's main thread: decode, feed the worklet, report back, show status.
# `window.mrtDistillColab[target]` exposes the decoder and the last report
# (for tests and for the curious, in the browser console).
_PAGE_JS = r"""
(function () {
  const cfg = __CONFIG__;
  const root = document.getElementById(cfg.rootId);
  const status = root.querySelector('.mrt-status');
  const unlock = root.querySelector('.mrt-unlock');
  const api = {stats: {ctxState: 'none', chunks: 0, connected: false},
               errors: [], decode: decodePcm};
  window.mrtDistillColab = window.mrtDistillColab || {};
  window.mrtDistillColab[cfg.target] = api;

  function decodePcm(b64, fmt, channels) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const view = new DataView(bytes.buffer);
    const size = fmt === 's16' ? 2 : 4;
    const frames = Math.floor(bytes.length / (size * channels));
    const planes = [];
    for (let c = 0; c < channels; c++) planes.push(new Float32Array(frames));
    let o = 0;
    for (let f = 0; f < frames; f++) {
      for (let c = 0; c < channels; c++, o += size) {
        planes[c][f] = size === 2 ? view.getInt16(o, true) / 32767
                                  : view.getFloat32(o, true);
      }
    }
    return planes;
  }
  function show() {
    const s = api.stats;
    const lead = s.fill !== undefined
        ? (s.fill / cfg.sampleRate).toFixed(2) : '-';
    const db = s.rms > 0
        ? (20 * Math.log10(s.rms)).toFixed(0) + ' dB' : 'silent';
    status.textContent = (s.connected ? '' : 'connecting... ') +
        'audio ' + s.ctxState + ' | buffered ' + lead + ' s | chunks ' +
        s.chunks + ' | underruns ' + (s.underruns || 0) + ' | level ' + db;
    unlock.style.display = s.ctxState === 'running' ? 'none' : 'inline-block';
  }
  function fail(e) {
    api.errors.push(String(e));
    status.textContent = 'player error: ' + e;
  }

  async function main() {
    const colab = window.google && google.colab && google.colab.kernel;
    if (!colab || !colab.comms) {
      status.textContent = 'Live playback needs Google Colab (this page ' +
          'has no google.colab.kernel.comms); use WavSink elsewhere.';
      return;
    }
    if (colab.accessAllowed === false) {
      status.textContent = 'This output cannot reach the runtime: run ' +
          'the player cell again.';
      return;
    }
    let ctx;
    try {
      ctx = new AudioContext({sampleRate: cfg.sampleRate,
                              latencyHint: 'playback'});
    } catch (e) {  // a rate this browser refuses: the worklet resamples
      ctx = new AudioContext({latencyHint: 'playback'});
    }
    api.ctx = ctx;
    const src = cfg.worklet;
    try {
      await ctx.audioWorklet.addModule(
          'data:text/javascript;base64,' + btoa(src));
    } catch (e) {
      await ctx.audioWorklet.addModule(URL.createObjectURL(
          new Blob([src], {type: 'text/javascript'})));
    }
    const node = new AudioWorkletNode(ctx, cfg.processor, {
      numberOfInputs: 0, numberOfOutputs: 1,
      outputChannelCount: [cfg.channels],
      processorOptions: {
        channels: cfg.channels, capacity: cfg.capacityFrames,
        sourceRate: cfg.sampleRate, primeFrames: cfg.primeFrames,
        reportSeconds: cfg.reportSeconds / 2}});
    node.connect(ctx.destination);
    const resume = () => { if (ctx.state !== 'running') ctx.resume(); };
    unlock.onclick = resume;
    document.addEventListener('pointerdown', resume, true);
    document.addEventListener('keydown', resume, true);
    ctx.onstatechange = () => { api.stats.ctxState = ctx.state; show(); };
    api.stats.ctxState = ctx.state;
    show();

    const channel = await colab.comms.open(cfg.target, {
        type: 'hello', ctx_rate: ctx.sampleRate, ctx_state: ctx.state});
    api.stats.connected = true;
    let last = 0;
    node.port.onmessage = (e) => {
      Object.assign(api.stats, e.data, {ctxState: ctx.state});
      show();
      const now = performance.now();
      if (now - last >= cfg.reportSeconds * 1000) {
        last = now;
        const r = e.data;
        channel.send({type: 'report', received: r.received,
                      consumed: r.consumed, fill: r.fill, dropped: r.dropped,
                      underruns: r.underruns, playing: r.playing, rms: r.rms,
                      ctx_state: ctx.state, ctx_rate: ctx.sampleRate});
      }
    };
    for await (const msg of channel.messages) {
      const m = msg.data;
      if (m.type === 'pcm') {
        const planes = decodePcm(m.pcm, m.fmt, cfg.channels);
        node.port.postMessage({type: 'pcm', planes: planes},
                              planes.map((p) => p.buffer));
        api.stats.chunks += 1;
      } else if (m.type === 'flush') {
        node.port.postMessage({type: 'flush'});
      } else if (m.type === 'close') {
        break;
      }
    }
    api.stats.connected = false;
    status.textContent = 'player closed (run the player cell again to play)';
    await ctx.close();
  }
  main().catch(fail);
})();
"""


def player_html(target: str, *, sample_rate: int, channels: int,
                lead_seconds: float, ring_seconds: float,
                prime_seconds: float, report_seconds: float = 0.5) -> str:
  """The output-cell page: status line, an 'enable sound' button (browsers
  start audio only after a click in the page) and the script that opens
  comm `target` and plays what arrives through the worklet."""
  root_id = f"mrt-distill-{target}"
  config = {
      "target": target, "rootId": root_id, "sampleRate": int(sample_rate),
      "channels": int(channels), "processor": PROCESSOR_NAME,
      "capacityFrames": int(math.ceil(ring_seconds * sample_rate)),
      "primeFrames": max(1, int(prime_seconds * sample_rate)),
      "reportSeconds": float(report_seconds),
      "leadSeconds": float(lead_seconds), "worklet": WORKLET_JS,
  }
  # "</" would end the <script> element early.
  script = _PAGE_JS.replace("__CONFIG__", json.dumps(config)).replace(
      "</", "<\\/")
  return (
      f'<div id="{html.escape(root_id)}" style="font-family: monospace; '
      f'font-size: 12px">'
      f'<button class="mrt-unlock" style="margin-right: 8px">'
      f'enable sound</button><span class="mrt-status">loading the player'
      f'...</span></div>\n<script>{script}</script>')


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
      x = _as_frames(chunk)
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


class BrowserSink(Sink):
  """Pushes chunks into the page over a kernel comm, `lead_seconds` ahead.

  Args:
    lead_seconds: audio kept queued in the browser (default: one chunk plus
      0.75 s of jitter margin).
    fmt: "s16" or "f32" on the wire.
    ring_seconds: the page's ring size (default lead + 4 chunks, >= 2 s).
    comm_manager: where to register the comm target (default: the running
      IPython kernel's).
    report_seconds: how often the page reports its ring to Python.
  """

  def __init__(self, lead_seconds: float | None = None, fmt: str = "s16",
               ring_seconds: float | None = None, comm_manager=None,
               report_seconds: float = 0.5):
    super().__init__()
    if fmt not in PCM_FORMATS:
      raise ValueError(f"fmt {fmt!r}: expected one of {PCM_FORMATS}")
    if lead_seconds is not None and not lead_seconds > 0:
      raise ValueError(f"lead_seconds must be > 0, got {lead_seconds!r}")
    self.fmt, self.report_seconds = fmt, float(report_seconds)
    self._lead_arg, self._ring_arg = lead_seconds, ring_seconds
    self._comm_manager = comm_manager
    self.target = f"mrt_distill_player_{uuid.uuid4().hex[:12]}"
    self._cv = threading.Condition()
    self._comm = None
    self._report: dict | None = None
    self._report_t = 0.0
    self._sent = 0  # frames sent to the current page
    self._closed = False
    self.lost_chunks = 0  # written while no page was connected
    self.pages = 0  # comm opens seen

  def open(self, sample_rate, channels, chunk_samples=None):
    super().open(sample_rate, channels, chunk_samples)
    chunk_s = (chunk_samples or sample_rate) / sample_rate
    self.lead_seconds = float(self._lead_arg or chunk_s + 0.75)
    self.ring_seconds = float(self._ring_arg or max(
        2.0, self.lead_seconds + 4 * chunk_s))
    if self.ring_seconds <= self.lead_seconds:
      raise ValueError(f"ring_seconds {self.ring_seconds} must exceed "
                       f"lead_seconds {self.lead_seconds}")
    self.prime_seconds = min(0.5 * self.lead_seconds, chunk_s)
    mgr = self._comm_manager
    if mgr is None:
      from IPython import get_ipython
      shell = get_ipython()
      kernel = getattr(shell, "kernel", None)
      if kernel is None:
        raise RuntimeError("BrowserSink needs a notebook kernel (Colab); "
                           "outside one use WavSink or ListSink")
      mgr = kernel.comm_manager
    mgr.register_target(self.target, self._on_open)

  # ---- the page's side of the conversation (kernel thread) -------------------
  def _on_open(self, comm, open_msg) -> None:
    data = (open_msg or {}).get("content", {}).get("data") or {}
    comm.on_msg(self._on_msg)
    comm.on_close(lambda msg, comm=comm: self._on_close(comm))
    with self._cv:
      old, self._comm = self._comm, comm
      self.pages += 1
      # A new page starts with an empty ring.
      self._sent = 0
      self._report = {"consumed": 0, "received": 0, "fill": 0,
                      "playing": False, "underruns": 0,
                      "ctx_state": data.get("ctx_state", "suspended")}
      self._report_t = time.monotonic()
      self._cv.notify_all()
    if old is not None:
      try:
        old.close()
      except Exception:  # noqa: BLE001 -- the old page may be gone
        pass

  def _on_msg(self, msg) -> None:
    data = msg.get("content", {}).get("data") or {}
    if data.get("type") != "report":
      return
    with self._cv:
      self._report = dict(data)
      self._report_t = time.monotonic()
      self._cv.notify_all()

  def _on_close(self, comm) -> None:
    with self._cv:
      if self._comm is comm:
        self._comm = None
        self._cv.notify_all()

  # ---- pacing ----------------------------------------------------------------
  def _consumed_estimate(self, now: float) -> float:
    r = self._report
    consumed = float(r.get("consumed", 0))
    if r.get("ctx_state") == "running" and r.get("playing"):
      consumed += (now - self._report_t) * self.sample_rate
    return min(consumed, float(self._sent))

  def ahead_seconds(self) -> float | None:
    """Audio sent to the page and not played yet (estimate), or None."""
    with self._cv:
      if self._comm is None or self._report is None:
        return None
      return (self._sent - self._consumed_estimate(time.monotonic())) \
          / self.sample_rate

  def wait_room(self, timeout):
    end = time.monotonic() + timeout
    with self._cv:
      while not self._closed:
        now = time.monotonic()
        if self._comm is not None and self._report is not None:
          ahead = self._sent - self._consumed_estimate(now)
          if ahead < self.lead_seconds * self.sample_rate:
            return True
        if now >= end:
          return False
        self._cv.wait(min(end - now, 0.02))
    return False

  def write(self, chunk, info):
    x = _as_frames(chunk)
    msg = {"type": "pcm", "fmt": self.fmt, "seq": int(info.get("index", 0)),
           "frames": len(x), "pcm": encode_pcm(x, self.fmt)}
    with self._cv:
      comm = self._comm
      if comm is None:
        self.lost_chunks += 1
        return
      self._sent += len(x)
    comm.send(msg)
    self.chunks += 1
    self.frames += len(x)

  def flush(self):
    with self._cv:
      comm = self._comm
    if comm is not None:
      comm.send({"type": "flush"})

  def close(self):
    with self._cv:
      self._closed = True
      comm, self._comm = self._comm, None
      self._cv.notify_all()
    if comm is not None:
      comm.send({"type": "close"})

  def view(self):
    from IPython.display import HTML
    return HTML(self.html())

  def html(self) -> str:
    if self.sample_rate is None:
      raise RuntimeError("BrowserSink.html before open()")
    return player_html(self.target, sample_rate=self.sample_rate,
                       channels=self.channels, lead_seconds=self.lead_seconds,
                       ring_seconds=self.ring_seconds,
                       prime_seconds=self.prime_seconds,
                       report_seconds=self.report_seconds)

  def stats(self) -> dict:
    with self._cv:
      r = dict(self._report or {})
      connected = self._comm is not None
    out = super().stats()
    out.update({"connected": connected, "pages": self.pages,
                "ahead_seconds": self.ahead_seconds(),
                "lead_seconds": self.lead_seconds,
                "browser_underruns": r.get("underruns"),
                "browser_dropped_frames": r.get("dropped"),
                "audio_state": r.get("ctx_state"),
                "lost_chunks": self.lost_chunks})
    return out


# ---- the push loop -----------------------------------------------------------
class PushLoop:
  """A thread that moves finished chunks from a started session to a sink.

  The session's producer thread keeps `lead_chunks` chunks ready; this loop
  takes one whenever the sink has room and writes it. It ends on `stop()`,
  when a finite sink is done, or when the session's producer has stopped and
  no whole chunk is left. `on_status(loop)` is called about every
  `status_seconds` from the loop's thread.
  """

  def __init__(self, session, sink: Sink, *, read_timeout: float = 300.0,
               status_seconds: float = 1.0,
               on_status: Callable[["PushLoop"], Any] | None = None):
    if getattr(session, "batch", 1) != 1:
      raise ValueError(f"PushLoop plays one stream; the session has batch "
                       f"{session.batch}")
    self.session, self.sink = session, sink
    self.read_timeout, self.status_seconds = read_timeout, status_seconds
    self.on_status = on_status
    self.chunks = 0
    self.error: BaseException | None = None
    self._stop = threading.Event()
    self._done = threading.Event()
    self._thread: threading.Thread | None = None
    self._last_status = 0.0

  @property
  def running(self) -> bool:
    return self._thread is not None and self._thread.is_alive()

  def start(self) -> "PushLoop":
    if self._thread is not None:
      raise RuntimeError("a PushLoop runs once; make a new one")
    self._thread = threading.Thread(target=self._run, daemon=True,
                                    name="mrt-colab-push")
    self._thread.start()
    return self

  def request_stop(self) -> None:
    """Ask the loop to end; a chunk it is waiting for will not be written."""
    self._stop.set()

  def stop(self, timeout: float | None = 10.0) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout)

  def wait(self, timeout: float | None = None) -> bool:
    """Block until the loop ends; False on timeout."""
    return self._done.wait(timeout)

  def _status(self, force: bool = False) -> None:
    now = time.monotonic()
    if self.on_status is None or (not force and now - self._last_status
                                  < self.status_seconds):
      return
    self._last_status = now
    try:
      self.on_status(self)
    except Exception:  # noqa: BLE001 -- a display glitch never stops music
      log.exception("push loop status callback failed")

  def _whole_chunk_left(self) -> bool:
    s = self.session
    return s.stats()["lead_seconds"] * s.sample_rate >= s.chunk_samples - 0.5

  def _run(self) -> None:
    s, n = self.session, self.session.chunk_samples
    try:
      while not self._stop.is_set() and not self.sink.done:
        if not self.sink.wait_room(0.05):
          self._status()
          continue
        if not s.running and not self._whole_chunk_left():
          break
        chunk = s.read(n, timeout=self.read_timeout)
        if self._stop.is_set():
          break  # stopped while waiting: this chunk is not played
        self.sink.write(chunk, {"index": self.chunks,
                                "sample_rate": s.sample_rate})
        self.chunks += 1
        self._status()
    except Exception as e:  # noqa: BLE001 -- kept for stats() and status
      self.error = e
      log.exception("push loop failed")
    finally:
      self._done.set()
      self._status(force=True)


# ---- the widgets -------------------------------------------------------------
def _initial_rows(prompts, rows: int) -> list[tuple[str, float]]:
  from mrt_distill.style.mixing import parse_prompt_mix
  if isinstance(prompts, str):
    pairs = parse_prompt_mix(prompts)
  elif isinstance(prompts, dict):
    pairs = [(str(t), float(w)) for t, w in prompts.items()]
  else:
    pairs = [(str(t), float(w)) for t, w in prompts]
  return pairs + [("", 0.0)] * max(0, rows - len(pairs))


# The kernel's live player (weakly): a new player closes the previous one, so
# re-running a cell never leaves a stream playing (and burning CPU) that no
# widget can stop, and two loops never read one session.
_CURRENT: weakref.ref | None = None


class LivePlayer:
  """Prompt text boxes with weight sliders, CFG, steps, glide and play/stop
  around a `StreamSession`; every control steers the stream while it plays
  (at the next chunk). Setting a widget's `.value` from code does the same
  as moving it. One live player per kernel: a new one closes the previous.

  Args:
    session: a `StreamSession` (batch 1).
    sink: where audio goes (default: a `BrowserSink`).
    prompts: initial rows, "a:1, b:0" or {text: weight} or [(text, w)].
    rows: prompt rows shown (at least len(prompts)).
    weight_max, cfg_max: slider ranges.
  """

  def __init__(self, session, sink: Sink | None = None, *,
               prompts="techno:1.0", rows: int = 4, weight_max: float = 2.0,
               cfg_max: float = 4.0, status_seconds: float = 1.0):
    import ipywidgets as W
    global _CURRENT
    previous = _CURRENT() if _CURRENT is not None else None
    if previous is not None:
      previous.close()
    _CURRENT = weakref.ref(self)
    self.session = session
    self.sink = sink if sink is not None else BrowserSink()
    self.sink.open(session.sample_rate, session.channels,
                   session.chunk_samples)
    self.status_seconds = status_seconds
    self._loop: PushLoop | None = None
    self._lock = threading.RLock()
    self.last_error: str | None = None

    rows_ = _initial_rows(prompts, rows)
    stats = session.stats()
    wide = W.Layout(width="260px")
    self.prompts = [W.Text(value=t, placeholder="prompt (e.g. funk)",
                           continuous_update=False, layout=wide)
                    for t, _ in rows_]
    self.weights = [W.FloatSlider(value=w, min=0.0, max=weight_max,
                                  step=0.05, continuous_update=False,
                                  description="weight", readout_format=".2f")
                    for _, w in rows_]
    self.cfg = W.FloatSlider(value=float(stats["cfg_weight"]), min=0.0,
                             max=cfg_max, step=0.1, continuous_update=False,
                             description="CFG")
    self.steps = W.IntSlider(value=int(stats["steps"]), min=1,
                             max=int(session.stepper.max_steps),
                             continuous_update=False, description="steps")
    self.glide = W.FloatSlider(value=0.0, min=0.0, max=8.0, step=0.5,
                               continuous_update=False,
                               description="glide (s)")
    self.play_button = W.Button(description="Play", icon="play",
                                button_style="success")
    self.stop_button = W.Button(description="Stop", icon="stop")
    self.status = W.HTML(value="stopped")
    self.message = W.HTML(value="")

    self._applied = self.mix()
    session.set_prompt(self._applied)  # the widgets and the stream agree
    for w in self.prompts + self.weights:
      w.observe(self._on_prompt, names="value")
    self.cfg.observe(self._on_controls, names="value")
    self.steps.observe(self._on_controls, names="value")
    self.play_button.on_click(lambda _: self.play())
    self.stop_button.on_click(lambda _: self.stop())
    self.widget = W.VBox(
        [W.HBox([p, w]) for p, w in zip(self.prompts, self.weights)]
        + [W.HBox([self.cfg, self.steps, self.glide]),
           W.HBox([self.play_button, self.stop_button, self.status]),
           self.message])

  # ---- controls --------------------------------------------------------------
  def mix(self) -> list[tuple[str, float]]:
    """The prompt rows with text, as (text, weight) pairs."""
    return [(p.value.strip(), float(w.value))
            for p, w in zip(self.prompts, self.weights) if p.value.strip()]

  def _say(self, text: str, error: bool = False) -> None:
    self.last_error = text if error else None
    color = "#b00020" if error else "#555"
    self.message.value = (f'<span style="color: {color}">'
                          f'{html.escape(text)}</span>')

  def _on_prompt(self, _change=None) -> None:
    mix = self.mix()
    with self._lock:
      try:
        if not mix:
          raise ValueError("every prompt box is empty; type a prompt")
        glide = float(self.glide.value)
        if glide > 0:
          self.session.schedule_transition(self._applied, mix, glide)
        else:
          self.session.set_prompt(mix)
      except ValueError as e:
        self._say(str(e), error=True)
        return
      self._applied = mix
    label = ", ".join(f"{t}:{w:g}" for t, w in mix)
    self._say(f"prompt: {label}" + (f" (glide {glide:g} s)" if glide > 0
                                    else ""))

  def _on_controls(self, _change=None) -> None:
    try:
      self.session.set_controls(cfg_weight=float(self.cfg.value),
                                steps=int(self.steps.value))
    except ValueError as e:
      self._say(str(e), error=True)
      return
    self._say(f"CFG {self.cfg.value:g}, steps {self.steps.value}")

  # ---- transport -------------------------------------------------------------
  @property
  def playing(self) -> bool:
    return self._loop is not None and self._loop.running

  def play(self) -> None:
    """Start the producer and the push loop (no-op when playing)."""
    with self._lock:
      if self.playing:
        return
      self.session.start()
      self._loop = PushLoop(self.session, self.sink,
                            status_seconds=self.status_seconds,
                            on_status=lambda loop: self._show_status())
      self._loop.start()
    self._show_status()

  def stop(self, timeout: float | None = 10.0) -> None:
    """Stop pushing and producing; the page drops what it has queued."""
    with self._lock:
      loop = self._loop
      if loop is not None:
        loop.request_stop()
      self.session.stop()
      if loop is not None:
        loop.stop(timeout)
      self.sink.flush()
    self._show_status()

  def wait(self, timeout: float | None = None) -> bool:
    """Block until the push loop ends (a finite sink is full); False on
    timeout or when not started."""
    loop = self._loop
    return loop.wait(timeout) if loop is not None else False

  def close(self) -> None:
    self.stop()
    self.sink.close()

  # ---- numbers ---------------------------------------------------------------
  def stats(self) -> dict:
    loop = self._loop
    return {"session": self.session.stats(), "sink": self.sink.stats(),
            "pushed_chunks": loop.chunks if loop else 0,
            "push_error": None if loop is None or loop.error is None
            else f"{type(loop.error).__name__}: {loop.error}",
            "last_error": self.last_error}

  def _show_status(self) -> None:
    s = self.session.stats()
    k = self.sink.stats()
    loop = self._loop
    state = "playing" if self.playing else "stopped"
    if loop is not None and loop.error is not None:
      state = f"push loop failed: {type(loop.error).__name__}: {loop.error}"
    parts = [state, f"chunk {s['chunks']}"]
    if s["chunk_ms_p50"] is not None:
      rtf = 1000 * s["chunk_seconds"] / max(s["chunk_ms_p50"], 1e-6)
      parts.append(f"{s['chunk_ms_p50']:.0f} ms/chunk (RTF {rtf:.1f})")
    if k.get("ahead_seconds") is not None:
      parts.append(f"browser lead {k['ahead_seconds']:.1f} s")
    elif "connected" in k and not k["connected"]:
      parts.append("waiting for the page")
    if s["underruns"] or k.get("browser_underruns"):
      parts.append(f"underruns {s['underruns']}/"
                   f"{k.get('browser_underruns') or 0}")
    if s["errors"]:
      parts.append(f"errors {s['errors']}: {s['last_error']}")
    self.status.value = html.escape(" | ".join(parts))

  def show(self) -> None:
    from IPython.display import display
    display(self.widget)
    view = self.sink.view()
    if view is not None:
      display(view)

  def _ipython_display_(self) -> None:
    self.show()
