// A scrolling live spectrogram of what the page plays, drawn from an
// AnalyserNode on a canvas: time runs right to left, frequency bottom to top
// on a log axis (so bass lines and hats both get room), loudness as colour.
//
// Why on the main thread with requestAnimationFrame: the analyser already
// does the FFT on the audio thread; the page only reads one spectrum per
// frame and paints the new columns, which is cheap. Scrolling copies the
// canvas onto itself shifted left, so a frame costs a few columns, not a
// redraw. The scroll follows the clock (`pxPerSecond`), not the frame rate,
// so the picture spans the same seconds in a busy tab or a fast one. The
// canvas keeps its CSS size in device pixels. Counters for tests: `columns`
// (columns painted) and `lit` (columns with any bin above the floor).
'use strict';

window.MrtSpectrogram = class {
  constructor(canvas, labels) {
    this.canvas = canvas;
    this.labels = labels;  // element for frequency tick labels, or null
    this.g = canvas.getContext('2d');
    this.analyser = null;
    this.pxPerSecond = 60;
    this.last = null;  // ms time of the last painted column
    this.columns = 0;
    this.lit = 0;
    this.rows = null;  // per pixel row: [first bin, last bin]
    this.palette = makePalette();
    this.running = false;
    this.clear();
  }

  attach(analyser) {
    this.analyser = analyser;
    this.bins = new Uint8Array(analyser.frequencyBinCount);
    this.rows = null;
    if (!this.running) {
      this.running = true;
      const tick = () => {
        this.draw();
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    }
  }

  clear() {
    this.g.fillStyle = this.palette[0];
    this.g.fillRect(0, 0, this.canvas.width, this.canvas.height);
  }

  // Pixel row -> analyser bins, log-spaced from `fMin` to Nyquist.
  layout() {
    const h = this.canvas.height;
    const nyq = this.analyser.context.sampleRate / 2;
    const n = this.analyser.frequencyBinCount;
    const fMin = Math.min(40, nyq / 8);
    const binHz = nyq / n;
    const freqAt = (y) => fMin * Math.pow(nyq / fMin, 1 - y / h);
    this.rows = [];
    for (let y = 0; y < h; y++) {
      const hi = Math.min(n - 1, Math.floor(freqAt(y) / binHz));
      const lo = Math.max(0, Math.min(hi, Math.floor(freqAt(y + 1) / binHz)));
      this.rows.push([lo, hi]);
    }
    if (this.labels) {
      this.labels.textContent = '';
      for (const f of [100, 300, 1000, 3000, 10000, 20000]) {
        if (f <= fMin || f >= nyq) continue;
        const y = h * (1 - Math.log(f / fMin) / Math.log(nyq / fMin));
        const el = document.createElement('span');
        el.textContent = f >= 1000 ? `${f / 1000}k` : String(f);
        el.style.top = `${(100 * y / h).toFixed(1)}%`;
        this.labels.append(el);
      }
    }
  }

  fit() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = Math.round(c.clientWidth * ratio);
    const h = Math.round(c.clientHeight * ratio);
    if (w > 0 && h > 0 && (w !== c.width || h !== c.height)) {
      c.width = w;
      c.height = h;
      this.rows = null;
      this.clear();
    }
  }

  draw() {
    if (!this.analyser) return;
    const now = performance.now();
    if (this.last === null) this.last = now;
    const w = Math.floor((now - this.last) / 1000 * this.pxPerSecond);
    if (w < 1) return;
    this.last += w * 1000 / this.pxPerSecond;
    this.fit();
    const c = this.canvas;
    if (!this.rows || this.rows.length !== c.height) this.layout();
    this.analyser.getByteFrequencyData(this.bins);
    this.g.drawImage(c, -w, 0);
    const x = c.width - w;
    let any = false;
    for (let y = 0; y < c.height; y++) {
      const [lo, hi] = this.rows[y];
      let v = 0;
      for (let b = lo; b <= hi; b++) if (this.bins[b] > v) v = this.bins[b];
      if (v > 0) any = true;
      this.g.fillStyle = this.palette[v];
      this.g.fillRect(x, y, w, 1);
    }
    this.columns++;
    if (any) this.lit++;
  }
};

// 256 colours, dark blue-black -> purple -> orange -> pale yellow.
function makePalette() {
  const stops = [[0, [8, 8, 20]], [0.35, [72, 18, 110]],
                 [0.65, [210, 70, 60]], [0.85, [250, 160, 40]],
                 [1, [252, 250, 190]]];
  const out = [];
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    let k = 0;
    while (k < stops.length - 2 && t > stops[k + 1][0]) k++;
    const [t0, c0] = stops[k];
    const [t1, c1] = stops[k + 1];
    const a = (t - t0) / (t1 - t0);
    const rgb = c0.map((v, j) => Math.round(v + a * (c1[j] - v)));
    out.push(`rgb(${rgb[0]},${rgb[1]},${rgb[2]})`);
  }
  return out;
}
