// The page's logic: WebSocket to the server, audio frames to the worklet,
// prompt rows / CFG / steps / play / stop back to the server as JSON.
//
// Why it is shaped this way:
// - The server keeps time and shares one stream between all pages, so the
//   page never asks for audio: it plays what arrives, and the worklet's
//   ring buffer absorbs network jitter.
// - The AudioContext is created on the Play click (browsers only start
//   audio after a user gesture) at the stream's own sample rate, so the
//   browser resamples to the device, not this script.
// - Controls are sent as whole states (all prompt rows at once), throttled
//   while a slider moves; the server's status messages bring back the state
//   other pages or OSC set, except while the user is editing here.
// - window.mrtStats exposes counters (frames received, chunks in the
//   worklet, underruns, level) for tests and for curious users.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const stats = window.mrtStats = {
    connected: false, framesReceived: 0, framesBeforeAudio: 0,
    lastIndex: -1, gaps: 0, workletChunks: 0, workletUnderruns: 0,
    buffered: 0, rmsDb: -120, peak: 0, audioState: 'none',
    errors: [], status: null, hello: null,
  };
  let ws = null;
  let hello = null;
  let ctx = null;
  let node = null;
  let audioStarting = null;
  let reconnectDelay = 500;
  let lastEdit = 0;  // ms timestamp of the user's last local edit
  let serverPlaying = false;

  // ---- connection -----------------------------------------------------------
  function connect() {
    const proto = location.protocol === 'https:' ? 'wss://' : 'ws://';
    ws = new WebSocket(proto + location.host + '/ws?format=float32');
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      stats.connected = true;
      reconnectDelay = 500;
      setConn('connected', true);
    };
    ws.onclose = (e) => {
      stats.connected = false;
      const why = e.reason ? ` (${e.reason})` : '';
      setConn(`disconnected${why}; retrying…`, false);
      setTimeout(connect, reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, 5000);
    };
    ws.onmessage = (e) => {
      if (typeof e.data === 'string') onJson(e.data);
      else onFrame(e.data);
    };
  }

  function setConn(text, ok) {
    const el = $('conn');
    el.textContent = text;
    el.className = ok ? 'ok' : 'bad';
  }

  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  // ---- audio frames -----------------------------------------------------------
  // Header (16 bytes, little endian): "MRTA", version u8, format u8
  // (1 float32, 2 int16), channels u16, sample rate u32, chunk index u32.
  function parseFrame(buf) {
    if (buf.byteLength < 16) return null;
    const dv = new DataView(buf);
    if (dv.getUint32(0, false) !== 0x4d525441) return null;  // "MRTA"
    const format = dv.getUint8(5);
    const channels = dv.getUint16(6, true);
    const sampleRate = dv.getUint32(8, true);
    const index = dv.getUint32(12, true);
    let samples;
    if (format === 1) {
      samples = new Float32Array(buf, 16);
    } else if (format === 2) {
      const s16 = new Int16Array(buf, 16);
      samples = new Float32Array(s16.length);
      for (let i = 0; i < s16.length; i++) samples[i] = s16[i] / 32767;
    } else {
      return null;
    }
    return {channels, sampleRate, index, samples};
  }

  function onFrame(buf) {
    const f = parseFrame(buf);
    if (!f) {
      showError('received a malformed audio frame');
      return;
    }
    stats.framesReceived++;
    if (stats.lastIndex >= 0 && f.index !== stats.lastIndex + 1) stats.gaps++;
    stats.lastIndex = f.index;
    if (!node) {
      stats.framesBeforeAudio++;
      return;
    }
    node.port.postMessage({type: 'pcm', samples: f.samples},
                          [f.samples.buffer]);
  }

  async function ensureAudio() {
    if (node) return;
    if (!hello) throw new Error('not connected to the server yet');
    if (!audioStarting) {
      audioStarting = (async () => {
        const rate = hello.sample_rate;
        ctx = new AudioContext({sampleRate: rate, latencyHint: 'interactive'});
        await ctx.audioWorklet.addModule('pcm-worklet.js');
        const n = new AudioWorkletNode(ctx, 'mrt-pcm-player', {
          numberOfInputs: 0, numberOfOutputs: 1,
          outputChannelCount: [hello.channels],
          processorOptions: {
            channels: hello.channels,
            capacityFrames: Math.max(rate * 4, hello.chunk_samples * 8),
            startFrames: hello.chunk_samples,
          },
        });
        n.port.onmessage = (e) => onWorkletStats(e.data);
        n.connect(ctx.destination);
        n.port.postMessage({type: 'active', value: serverPlaying});
        node = n;
      })();
    }
    await audioStarting;
    stats.audioState = ctx.state;
  }

  function onWorkletStats(m) {
    if (!m || m.type !== 'stats') return;
    stats.workletChunks = m.chunks;
    stats.workletUnderruns = m.underruns;
    stats.buffered = m.buffered;
    stats.rmsDb = m.rmsDb;
    stats.peak = m.peak;
    stats.audioState = ctx ? ctx.state : 'none';
    const pct = Math.max(0, Math.min(100, (m.rmsDb + 60) / 60 * 100));
    $('meter-bar').style.width = pct.toFixed(1) + '%';
    $('meter-bar').style.background = m.peak >= 0.99 ? '#c44' : '#2a7';
  }

  // ---- JSON messages --------------------------------------------------------
  function onJson(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch (e) {
      showError('malformed message from the server');
      return;
    }
    if (m.type === 'hello') {
      hello = stats.hello = m;
      $('info').textContent = `${m.sample_rate} Hz · ${m.channels} ch · ` +
          `${(m.chunk_samples / m.sample_rate * 1000).toFixed(0)} ms chunks`;
      buildSteps(m.max_steps || Math.max(4, m.steps));
      applyState(m, true);
    } else if (m.type === 'status') {
      stats.status = m;
      applyState(m, false);
      showStats(m);
    } else if (m.type === 'error') {
      stats.errors.push(m.message);
      showError(m.message);
    } else if (m.type === 'ack') {
      showError('');
    }
  }

  function showError(text) {
    $('error').textContent = text;
  }

  function showStats(m) {
    const s = m.session || {};
    const ms = (v) => (typeof v === 'number' ? v.toFixed(1) : '–');
    const you = m.you || {};
    $('stats').textContent =
        `chunks ${s.chunks ?? '–'} · chunk ${ms(s.chunk_ms_p50)} ms ` +
        `(p95 ${ms(s.chunk_ms_p95)}) · underruns server ${m.underruns ?? 0}` +
        ` / here ${stats.workletUnderruns} · dropped ${you.dropped ?? 0}` +
        ` · listeners ${m.clients}`;
  }

  // Server state -> controls, unless the user is editing right now.
  function applyState(m, force) {
    serverPlaying = !!m.playing;
    $('transport').textContent = serverPlaying
        ? (node ? 'playing' : 'stream playing: press Play to listen')
        : 'stopped';
    if (node) node.port.postMessage({type: 'active', value: serverPlaying});
    const editing = document.activeElement &&
        document.activeElement.classList.contains('prompt-text');
    if (!force && (editing || Date.now() - lastEdit < 1500)) return;
    if (Array.isArray(m.prompts)) setRows(m.prompts);
    if (typeof m.cfg === 'number') {
      $('cfg').value = m.cfg;
      $('cfg-value').textContent = m.cfg.toFixed(1);
    }
    if (typeof m.steps === 'number') $('steps').value = String(m.steps);
  }

  // ---- prompt rows ----------------------------------------------------------
  function rowElements() {
    return Array.from($('rows').querySelectorAll('.row'));
  }

  function addRow(text, weight) {
    const row = document.createElement('div');
    row.className = 'row';
    const t = document.createElement('input');
    t.type = 'text';
    t.className = 'prompt-text';
    t.placeholder = 'a style, e.g. techno';
    t.value = text;
    const w = document.createElement('input');
    w.type = 'range';
    w.className = 'prompt-weight';
    w.min = '0';
    w.max = '2';
    w.step = '0.01';
    w.value = String(weight);
    const v = document.createElement('span');
    v.className = 'weight-value';
    v.textContent = Number(weight).toFixed(2);
    const rm = document.createElement('button');
    rm.className = 'remove';
    rm.title = 'remove this prompt';
    rm.textContent = '×';
    t.addEventListener('change', () => { lastEdit = Date.now(); sendRows(); });
    w.addEventListener('input', () => {
      lastEdit = Date.now();
      v.textContent = Number(w.value).toFixed(2);
      sendRowsSoon();
    });
    rm.addEventListener('click', () => {
      lastEdit = Date.now();
      row.remove();
      sendRows();
    });
    row.append(t, w, v, rm);
    $('rows').append(row);
    return row;
  }

  function setRows(prompts) {
    const rows = rowElements();
    if (rows.length !== prompts.length) {
      $('rows').textContent = '';
      prompts.forEach((p) => addRow(p.text, p.weight));
      return;
    }
    prompts.forEach((p, i) => {
      rows[i].querySelector('.prompt-text').value = p.text;
      rows[i].querySelector('.prompt-weight').value = String(p.weight);
      rows[i].querySelector('.weight-value').textContent =
          Number(p.weight).toFixed(2);
    });
  }

  function currentRows() {
    return rowElements()
        .map((r) => ({
          text: r.querySelector('.prompt-text').value.trim(),
          weight: Number(r.querySelector('.prompt-weight').value),
        }))
        .filter((p) => p.text.length > 0);
  }

  function sendRows() {
    const prompts = currentRows();
    if (prompts.length === 0) {
      showError('give at least one prompt some text');
      return;
    }
    send({type: 'prompt', prompts});
  }

  // At most one message per `ms` while a slider moves; the last position
  // is always sent.
  function throttle(fn, ms) {
    let timer = null;
    let last = 0;
    return () => {
      if (timer) return;
      const wait = Math.max(0, ms - (Date.now() - last));
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn();
      }, wait);
    };
  }
  const sendRowsSoon = throttle(sendRows, 60);
  const sendCfgSoon = throttle(
      () => send({type: 'cfg', value: Number($('cfg').value)}), 60);

  function buildSteps(maxSteps) {
    const sel = $('steps');
    sel.textContent = '';
    for (let k = 1; k <= maxSteps; k++) {
      const o = document.createElement('option');
      o.value = String(k);
      o.textContent = String(k);
      sel.append(o);
    }
  }

  // ---- wiring ---------------------------------------------------------------
  $('play').addEventListener('click', async () => {
    try {
      await ensureAudio();
      await ctx.resume();
      stats.audioState = ctx.state;
      send({type: 'play'});
    } catch (e) {
      showError('cannot start audio: ' + e.message);
    }
  });
  $('stop').addEventListener('click', () => {
    send({type: 'stop'});
    if (node) node.port.postMessage({type: 'reset'});
  });
  $('add').addEventListener('click', () => {
    addRow('', 1.0).querySelector('.prompt-text').focus();
  });
  $('cfg').addEventListener('input', () => {
    lastEdit = Date.now();
    $('cfg-value').textContent = Number($('cfg').value).toFixed(1);
    sendCfgSoon();
  });
  $('steps').addEventListener('change', () => {
    lastEdit = Date.now();
    send({type: 'steps', value: Number($('steps').value)});
  });

  connect();
})();
