// The musician's own sound: microphone or line input -> the server, where
// it goes into the model's context (never into what is played back).
//
// Why it is shaped this way:
// - Capture happens in the page's one AudioContext, which runs at the
//   stream's sample rate, so the browser resamples the device and the
//   blocks sent are already at the rate the server wants.
// - Blocks of about 50 ms (a worklet, `mrt-pcm-capture` in pcm-worklet.js)
//   go out as binary WebSocket messages in the same frame format the server
//   sends audio in (16-byte "MRTA" header, float32 samples); the header's
//   index counts this page's blocks so the server can see gaps.
// - Echo cancellation, noise suppression and auto gain are turned off: they
//   are made for speech and would pump or gate an instrument.
// - Nothing of the input is played here (no feedback loop).
'use strict';

window.MrtInput = class {
  constructor(sendBinary) {
    this.sendBinary = sendBinary;  // (ArrayBuffer) -> bool (sent)
    this.stream = null;
    this.source = null;
    this.node = null;
    this.blocks = 0;  // blocks sent
    this.samples = 0;  // frames sent
    this.rmsDb = -120;
    this.peak = 0;
    this.onLevel = null;
  }

  get active() {
    return this.node !== null;
  }

  async start(ctx, channels) {
    if (this.node) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error('this browser gives no microphone access here (it ' +
                      'needs http://localhost / 127.0.0.1 or https)');
    }
    const stream = await navigator.mediaDevices.getUserMedia({audio: {
      echoCancellation: false, noiseSuppression: false,
      autoGainControl: false}});
    const source = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, 'mrt-pcm-capture', {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      channelCount: channels, channelCountMode: 'explicit',
      channelInterpretation: 'speakers',
      processorOptions: {
        channels, blockFrames: Math.max(128, Math.round(ctx.sampleRate / 20)),
      },
    });
    node.port.onmessage = (e) => this.onBlock(e.data, ctx.sampleRate,
                                              channels);
    source.connect(node);
    node.connect(ctx.destination);  // silent; keeps the node rendered
    this.stream = stream;
    this.source = source;
    this.node = node;
  }

  stop() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.source) this.source.disconnect();
    if (this.node) {
      this.node.port.onmessage = null;
      this.node.disconnect();
    }
    this.stream = this.source = this.node = null;
    this.rmsDb = -120;
    this.peak = 0;
    if (this.onLevel) this.onLevel(this);
  }

  onBlock(m, sampleRate, channels) {
    if (!m || m.type !== 'block' || !this.node) return;
    this.rmsDb = m.rmsDb;
    this.peak = m.peak;
    if (this.onLevel) this.onLevel(this);
    const s = m.samples;
    const buf = new ArrayBuffer(16 + s.length * 4);
    const dv = new DataView(buf);
    dv.setUint32(0, 0x4d525441, false);  // "MRTA"
    dv.setUint8(4, 1);  // version
    dv.setUint8(5, 1);  // float32
    dv.setUint16(6, channels, true);
    dv.setUint32(8, sampleRate, true);
    dv.setUint32(12, this.blocks >>> 0, true);
    new Float32Array(buf, 16).set(s);
    if (this.sendBinary(buf)) {
      this.blocks++;
      this.samples += s.length / channels;
    }
  }
};
