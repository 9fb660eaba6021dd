// AudioWorklet processors: `mrt-pcm-player` plays interleaved PCM chunks
// from the server through a ring buffer on the audio rendering thread;
// `mrt-pcm-capture` (below) cuts the musician's input into blocks for it.
//
// Why a worklet with its own ring buffer: audio arrives in bursts (one chunk
// per WebSocket message, a prebuffer at play), the render thread asks for
// 128 frames at a time, and the main thread may stall (layout, GC). The ring
// decouples the two: the main thread only posts chunks here, this thread
// only reads from the ring. It starts output once `startFrames` are queued;
// when it runs dry while the stream is active that is an underrun, and it
// waits for `startFrames` again instead of clicking on every late chunk. On
// overflow the oldest frames go (the newest audio follows the controls).
//
// Messages in:  {type: 'pcm', samples: Float32Array (interleaved)}
//               {type: 'active', value: bool}  (server playing or stopped)
//               {type: 'reset'}                (drop everything queued)
// Messages out: {type: 'stats', chunks, underruns, buffered, overflowFrames,
//                rmsDb, peak}  about 20 times a second.

class MrtPcmPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.channels = Math.max(1, o.channels | 0 || 1);
    this.capacity = Math.max(1024, o.capacityFrames | 0 || sampleRate * 4);
    this.startFrames = Math.min(this.capacity,
                                Math.max(1, o.startFrames | 0 || 128));
    this.ring = new Float32Array(this.capacity * this.channels);
    this.readPos = 0;
    this.writePos = 0;
    this.size = 0;  // frames queued
    this.started = false;
    this.active = true;
    this.chunks = 0;
    this.underruns = 0;
    this.overflowFrames = 0;
    this.sumSq = 0;
    this.peak = 0;
    this.levelFrames = 0;
    this.statsEvery = Math.max(128, Math.round(sampleRate / 20));
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(m) {
    if (!m || typeof m !== 'object') return;
    if (m.type === 'pcm') {
      this.push(m.samples);
    } else if (m.type === 'active') {
      this.active = !!m.value;
    } else if (m.type === 'reset') {
      this.readPos = this.writePos = this.size = 0;
      this.started = false;
    }
  }

  push(samples) {
    const ch = this.channels;
    const frames = (samples.length / ch) | 0;
    for (let f = 0; f < frames; f++) {
      if (this.size === this.capacity) {  // full: forget the oldest frame
        this.readPos = (this.readPos + 1) % this.capacity;
        this.size--;
        this.overflowFrames++;
      }
      const dst = this.writePos * ch;
      const src = f * ch;
      for (let c = 0; c < ch; c++) this.ring[dst + c] = samples[src + c];
      this.writePos = (this.writePos + 1) % this.capacity;
      this.size++;
    }
    this.chunks++;
  }

  process(inputs, outputs) {
    const out = outputs[0];
    if (!out || out.length === 0) return true;
    const n = out[0].length;
    const ch = this.channels;
    if (!this.started && this.size >= this.startFrames) this.started = true;
    for (let i = 0; i < n; i++) {
      if (this.started && this.size > 0) {
        const src = this.readPos * ch;
        for (let c = 0; c < out.length; c++) {
          const v = this.ring[src + Math.min(c, ch - 1)];
          out[c][i] = v;
          if (c === 0) {
            this.sumSq += v * v;
            const a = v < 0 ? -v : v;
            if (a > this.peak) this.peak = a;
          }
        }
        this.readPos = (this.readPos + 1) % this.capacity;
        this.size--;
      } else {
        for (let c = 0; c < out.length; c++) out[c][i] = 0;
        if (this.started) {  // ran dry mid-stream
          this.started = false;
          if (this.active) this.underruns++;
        }
      }
    }
    this.levelFrames += n;
    if (this.levelFrames >= this.statsEvery) {
      const rms = Math.sqrt(this.sumSq / this.levelFrames);
      this.port.postMessage({
        type: 'stats', chunks: this.chunks, underruns: this.underruns,
        buffered: this.size, overflowFrames: this.overflowFrames,
        rmsDb: 20 * Math.log10(Math.max(rms, 1e-6)), peak: this.peak,
      });
      this.sumSq = 0;
      this.peak = 0;
      this.levelFrames = 0;
    }
    return true;
  }
}

registerProcessor('mrt-pcm-player', MrtPcmPlayer);

// The musician's input on its way to the server: collects what the
// microphone / line input delivers (the node is created with
// channelCountMode 'explicit' at the stream's channel count, so the browser
// up- or down-mixes) into interleaved blocks of `blockFrames` and posts
// each block to the page, which sends it over the WebSocket. The context
// runs at the stream's sample rate, so no resampling happens here.
//
// Messages out: {type: 'block', samples: Float32Array (interleaved),
//                rmsDb, peak}
class MrtPcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.channels = Math.max(1, o.channels | 0 || 1);
    this.blockFrames = Math.max(128, o.blockFrames | 0 || 1024);
    this.fresh();
  }

  fresh() {
    this.block = new Float32Array(this.blockFrames * this.channels);
    this.filled = 0;
    this.sumSq = 0;
    this.peak = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;  // nothing connected yet
    const ch = this.channels;
    const n = input[0].length;
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < ch; c++) {
        const v = input[Math.min(c, input.length - 1)][i];
        this.block[this.filled * ch + c] = v;
        this.sumSq += v * v;
        const a = v < 0 ? -v : v;
        if (a > this.peak) this.peak = a;
      }
      if (++this.filled === this.blockFrames) {
        const rms = Math.sqrt(this.sumSq / (this.blockFrames * ch));
        this.port.postMessage({
          type: 'block', samples: this.block, peak: this.peak,
          rmsDb: 20 * Math.log10(Math.max(rms, 1e-6)),
        }, [this.block.buffer]);
        this.fresh();
      }
    }
    return true;
  }
}

registerProcessor('mrt-pcm-capture', MrtPcmCapture);
