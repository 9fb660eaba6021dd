// The page's logic: WebSocket to the server, audio frames to the worklet
// (and through an AnalyserNode to the spectrogram, spectrogram.js), prompt
// rows / style-word chips / glide / CFG / steps / play / stop back to the
// server as JSON, the musician's input as binary frames (mic.js).
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
// - Style words come from the server (the loaded style model's vocabulary,
//   `hello.vocab`): chips toggle a word in the mix, and the prompt boxes
//   offer them as you type (a datalist). A model that takes any text has no
//   list, and then there are no chips.
// - Glide: with a glide time above 0, text and chip changes are sent as a
//   transition over that time; weight sliders stay immediate (they are
//   gradual already).
// - window.mrtStats exposes counters (frames received, chunks in the
//   worklet, underruns, level, spectrogram columns, input blocks sent) for
//   tests and for curious users.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const stats = window.mrtStats = {
    connected: false, framesReceived: 0, framesBeforeAudio: 0,
    lastIndex: -1, gaps: 0, workletChunks: 0, workletUnderruns: 0,
    buffered: 0, rmsDb: -120, peak: 0, audioState: 'none',
    errors: [], status: null, hello: null, spectrogramColumns: 0,
    spectrogramLit: 0, inputBlocks: 0, inputError: null,
  };
  const spectro = new window.MrtSpectrogram($('spectrogram'),
                                            $('spectro-labels'));
  const input = new window.MrtInput((buf) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(buf);
    return true;
  });
  let vocab = null;
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

  // ---- audio frames ---------------------------------------------------------
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
        const analyser = ctx.createAnalyser();
        analyser.fftSize = rate >= 32000 ? 4096 : 1024;
        analyser.smoothingTimeConstant = 0.2;
        analyser.minDecibels = -100;
        analyser.maxDecibels = -20;
        n.connect(analyser);
        spectro.attach(analyser);
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
    stats.spectrogramColumns = spectro.columns;
    stats.spectrogramLit = spectro.lit;
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
      buildVocab(m.vocab);
      if (typeof m.max_transition_seconds === 'number') {
        $('glide').max = String(Math.min(60, m.max_transition_seconds));
      }
      applyState(m, true);
      applyInput(m.input, true);
    } else if (m.type === 'status') {
      stats.status = m;
      applyState(m, false);
      applyInput(m.input, false);
      showStats(m);
    } else if (m.type === 'error') {
      stats.errors.push(m.message);
      if (m.message.startsWith('input')) stats.inputError = m.message;
      showError(m.message);
    } else if (m.type === 'ack') {
      showError('');
    }
  }

  function showError(text) {
    $('error').textContent = text;
  }

  function setNum(id, text, warn, note) {
    const el = $(id);
    el.querySelector('b').textContent = text;
    el.classList.toggle('warn', !!warn);
    if (note !== undefined) el.querySelector('span').textContent = note;
  }

  function showStats(m) {
    const s = m.session || {};
    const ms = (v) => (typeof v === 'number' ? v.toFixed(0) : '–');
    const you = m.you || {};
    const rate = hello ? hello.sample_rate : 1;
    // The session measures change -> first sample read by the server's
    // pump; this page's ring buffer comes on top.
    setNum('n-delay', typeof s.control_delay_ms_p50 === 'number'
        ? `${ms(s.control_delay_ms_p50)} ms` : 'no change yet', false,
           `control delay p50 · p95 ${ms(s.control_delay_ms_p95)} ms`);
    const under = m.underruns ?? 0;
    setNum('n-under', `${under} / ${stats.workletUnderruns}`,
           under + stats.workletUnderruns > 0);
    const chunkMs = hello ? hello.chunk_samples / hello.sample_rate * 1000 : 0;
    setNum('n-chunk', `${ms(s.chunk_ms_p50)} ms`,
           typeof s.chunk_ms_p50 === 'number' && s.chunk_ms_p50 > chunkMs,
           `chunk compute p50 · p95 ${ms(s.chunk_ms_p95)} · budget ` +
           `${chunkMs.toFixed(0)} ms`);
    setNum('n-buffer', node ? `${(stats.buffered / rate * 1000).toFixed(0)} ms`
                            : '–');
    setNum('n-listen', `${m.clients ?? '–'} · ${you.dropped ?? 0}`,
           (you.dropped ?? 0) > 0);
    const tr = s.transition;
    if (tr && typeof tr.progress === 'number') {
      $('glide-state').textContent =
          `gliding to ${tr.to} over ${tr.seconds} s`;
      $('glide-bar').firstElementChild.style.width =
          (100 * tr.progress).toFixed(0) + '%';
    } else {
      $('glide-state').textContent = 'no glide running';
      $('glide-bar').firstElementChild.style.width = '0';
    }
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

  // ---- style words ----------------------------------------------------------
  function buildVocab(words) {
    vocab = Array.isArray(words) && words.length ? words : null;
    const list = $('vocab-list');
    const chips = $('chips');
    list.textContent = '';
    chips.textContent = '';
    $('vocab-note').textContent = vocab
        ? `(${vocab.length} this style model knows: click to add or remove)`
        : '(this style model takes any text)';
    if (!vocab) return;
    for (const w of vocab) {
      const o = document.createElement('option');
      o.value = w;
      list.append(o);
      const b = document.createElement('button');
      b.className = 'chip';
      b.type = 'button';
      b.textContent = w;
      b.dataset.word = w;
      b.addEventListener('click', () => toggleWord(w));
      chips.append(b);
    }
    markChips();
  }

  function markChips() {
    const on = new Set(currentRows().map((p) => p.text.toLowerCase()));
    for (const b of $('chips').querySelectorAll('.chip')) {
      b.classList.toggle('on', on.has(b.dataset.word.toLowerCase()));
    }
  }

  // A chip adds its word as a prompt row (weight 1), or removes the row
  // that is exactly that word; the last prompt stays.
  function toggleWord(word) {
    lastEdit = Date.now();
    const rows = rowElements();
    const same = rows.find((r) => r.querySelector('.prompt-text').value.trim()
        .toLowerCase() === word.toLowerCase());
    if (same) {
      if (currentRows().length <= 1) {
        showError('the mix needs at least one prompt: add another word first');
        return;
      }
      same.remove();
    } else {
      const empty = rows.find(
          (r) => !r.querySelector('.prompt-text').value.trim());
      if (empty) empty.querySelector('.prompt-text').value = word;
      else addRow(word, 1.0);
    }
    markChips();
    sendMix();
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
    t.setAttribute('list', 'vocab-list');
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
    t.addEventListener('change', () => {
      lastEdit = Date.now();
      markChips();
      sendMix();
    });
    w.addEventListener('input', () => {
      lastEdit = Date.now();
      v.textContent = Number(w.value).toFixed(2);
      sendRowsSoon();
    });
    rm.addEventListener('click', () => {
      lastEdit = Date.now();
      row.remove();
      markChips();
      sendMix();
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
      markChips();
      return;
    }
    prompts.forEach((p, i) => {
      rows[i].querySelector('.prompt-text').value = p.text;
      rows[i].querySelector('.prompt-weight').value = String(p.weight);
      rows[i].querySelector('.weight-value').textContent =
          Number(p.weight).toFixed(2);
    });
    markChips();
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

  // A new mix (text, chips, rows added or removed): at once, or as a
  // transition over the glide time.
  function sendMix() {
    const seconds = Number($('glide').value);
    if (!(seconds > 0)) {
      sendRows();
      return;
    }
    const prompts = currentRows();
    if (prompts.length === 0) {
      showError('give at least one prompt some text');
      return;
    }
    send({type: 'transition', to: prompts, seconds});
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

  // ---- the musician's input ------------------------------------------------
  let inputEdit = 0;

  function inputSettings() {
    return {
      type: 'input', mode: $('input-mode').value,
      gain: Number($('input-gain').value),
      loop_seconds: Math.max(0.5, Number($('loop-seconds').value) || 4),
    };
  }

  function applyInput(s, force) {
    if (!s) return;
    $('mic').disabled = s.available === false;
    const focus = document.activeElement && document.activeElement.id;
    const editing = ['input-mode', 'input-gain', 'loop-seconds']
        .includes(focus) || Date.now() - inputEdit < 1500;
    if (force || !editing) {
      if (s.mode === 'free' || s.mode === 'looper') {
        $('input-mode').value = s.mode;
      }
      $('input-gain').value = String(s.gain);
      $('input-gain-value').textContent = Number(s.gain).toFixed(2);
      $('loop-seconds').value = String(s.loop_seconds);
    }
    const here = input.active ? 'sending from this page' : 'not sending here';
    const from = s.source ? ` · input from ${s.source}` : '';
    $('input-state').textContent = s.available === false
        ? 'this student cannot hear input (no traceable codec encoder)'
        : `input ${s.mode}${from} · ${here} · ${s.seconds.toFixed(1)} s ` +
          `received · ${s.level_db.toFixed(0)} dB`;
  }

  input.onLevel = (inp) => {
    stats.inputBlocks = inp.blocks;
    const pct = Math.max(0, Math.min(100, (inp.rmsDb + 60) / 60 * 100));
    $('input-meter').style.width = pct.toFixed(1) + '%';
  };

  async function startInput() {
    await ensureAudio();
    await ctx.resume();
    await input.start(ctx, hello.channels);  // the device first: it may say no
    send(inputSettings());
    $('mic').classList.add('on');
    $('mic').textContent = 'Stop input';
  }

  function stopInput() {
    input.stop();
    send({type: 'input', mode: 'off'});
    $('mic').classList.remove('on');
    $('mic').textContent = 'Use microphone / line in';
  }

  const sendGainSoon = throttle(
      () => send({type: 'input', gain: Number($('input-gain').value)}), 60);

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

  $('glide').addEventListener('input', () => {
    $('glide-value').textContent = `${Number($('glide').value)} s`;
  });
  $('mic').addEventListener('click', async () => {
    try {
      if (input.active) stopInput();
      else await startInput();
    } catch (e) {
      input.stop();
      showError('cannot use the input: ' + e.message);
    }
  });
  $('input-mode').addEventListener('change', () => {
    inputEdit = Date.now();
    if (input.active) send(inputSettings());
  });
  $('loop-seconds').addEventListener('input', () => {
    inputEdit = Date.now();
  });
  $('loop-seconds').addEventListener('change', () => {
    inputEdit = Date.now();
    if (input.active) send(inputSettings());
  });
  $('input-gain').addEventListener('input', () => {
    inputEdit = Date.now();
    $('input-gain-value').textContent =
        Number($('input-gain').value).toFixed(2);
    sendGainSoon();
  });

  connect();
})();
