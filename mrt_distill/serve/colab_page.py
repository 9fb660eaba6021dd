"""The notebook player's page: the output-cell HTML, its main-thread script
and the AudioWorklet that plays from a ring buffer.

The page plays through an AudioWorklet that owns a ring buffer: messages
arrive in bursts, the audio thread takes 128 frames at a time, and the
page's main thread can stall; the ring decouples them. On overflow the
oldest audio goes (the newest follows the controls); after running dry it
waits for a small prime before it plays again instead of clicking.
"""

from __future__ import annotations

import html
import json
import math

PROCESSOR_NAME = "mrt-distill-ring"


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
