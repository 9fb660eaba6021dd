"""The Colab demo without Colab.

Why these tests: the demo's failure modes are silent ones. A notebook that
no longer runs top to bottom, a PCM encoding that swaps bytes or channels, a
page whose worklet never registers, a push loop that floods the browser
(seconds of control delay) or starves it (clicks), widgets that no longer
reach the stream. So:
- the PCM wire format round-trips (values, byte order, channels, NaN);
- the push loop and the sinks keep order, end and pace as documented;
- the page, in a real headless Chromium with a stand-in for
  `google.colab.kernel.comms`, plays what Python pushes through its
  AudioWorklet at the level it was sent, without underruns, only
  `lead_seconds` ahead (skipped without Chromium/playwright, except under
  CI, like tests/serve/test_browser.py);
- the notebook itself runs headless in a kernel on this venv's Python
  (MRT_DISTILL_COLAB_TEST=1: no pip, a wav file instead of speakers), the
  wav has the expected length and sound, and the steering cell moved the
  session's style embedding to the mix its widgets show.
"""

from __future__ import annotations

import collections
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
import pytest
import soundfile as sf

from mrt_distill.serve.colab_browser_sink import BrowserSink
from mrt_distill.serve.colab_page import PROCESSOR_NAME
from mrt_distill.serve.colab_page import WORKLET_JS
from mrt_distill.serve.colab_page import player_html
from mrt_distill.serve.colab_pcm import PCM_FORMATS
from mrt_distill.serve.colab_pcm import decode_pcm
from mrt_distill.serve.colab_pcm import encode_pcm
from mrt_distill.serve.colab_player import LivePlayer
from mrt_distill.serve.colab_push import PushLoop
from mrt_distill.serve.colab_sinks import ListSink
from mrt_distill.serve.colab_sinks import WavSink

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "colab" / "mrt_distill_live.ipynb"


# ---- the wire format ---------------------------------------------------------
def test_pcm_f32_round_trip_is_exact():
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((257, 2)) * 1.5).astype(np.float32)
  got = decode_pcm(encode_pcm(x, "f32"), 2, "f32")
  assert got.dtype == np.float32 and got.shape == (257, 2)
  np.testing.assert_array_equal(got, x)  # beyond [-1, 1] too


def test_pcm_s16_round_trip_byte_order_and_channels():
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, (300, 2)).astype(np.float32)
  got = decode_pcm(encode_pcm(x, "s16"), 2, "s16")
  assert np.max(np.abs(got - x)) <= 0.5 / 32767 + 1e-7
  # Interleaved little-endian frames: [L0, R0, L1, R1].
  raw = np.frombuffer(
      __import__("base64").b64decode(encode_pcm(
          np.array([[0.5, -1.0], [1.0, 0.0]], np.float32), "s16")), "<i2")
  assert raw.tolist() == [16384, -32767, 32767, 0]
  # Mono as (S,), clipping and non-finite samples.
  y = np.array([0.25, 2.0, -3.0, np.nan, np.inf], np.float32)
  got = decode_pcm(encode_pcm(y), 1)
  np.testing.assert_allclose(got[:, 0], [0.25, 1.0, -1.0, 0.0, 0.0],
                             atol=1 / 32767)
  with pytest.raises(ValueError, match="frames"):
    decode_pcm(encode_pcm(np.zeros((3, 1))), 2)
  with pytest.raises(ValueError, match="format"):
    encode_pcm(x, "mp3")


def test_page_registers_the_worklet_and_opens_the_comm():
  page = player_html("t123", sample_rate=16000, channels=2,
                     lead_seconds=1.5, ring_seconds=4.0, prime_seconds=0.5)
  assert f"registerProcessor('{PROCESSOR_NAME}'" in WORKLET_JS
  assert "extends AudioWorkletProcessor" in WORKLET_JS
  assert "registerProcessor(" in page  # the worklet travels inside the page
  assert "audioWorklet.addModule" in page
  assert "google.colab.kernel" in page and "comms.open(cfg.target" in page
  assert page.count("</script>") == 1  # nothing ends the script early
  assert '"capacityFrames": 64000' in page and '"channels": 2' in page
  assert WORKLET_JS.isascii()  # the page loads it through btoa()


# ---- push loop and sinks -----------------------------------------------------
class _RampSession:
  """Stands in for StreamSession: chunk k is all k; `stop_after` chunks."""

  batch = 1

  def __init__(self, sample_rate=1000, chunk_samples=100, stop_after=None):
    self.sample_rate, self.chunk_samples = sample_rate, chunk_samples
    self.k, self.stop_after = 0, stop_after

  @property
  def running(self):
    return self.stop_after is None or self.k < self.stop_after

  def read(self, n, timeout=None):
    assert n == self.chunk_samples
    out = np.full((n, 1), float(self.k), np.float32)
    self.k += 1
    return out

  def stats(self):
    return {"lead_seconds": 0.0 if not self.running else 1.0}


def test_push_loop_fills_a_finite_sink_in_order_and_ends():
  sink = ListSink(max_chunks=5)
  sink.open(1000, 1)
  loop = PushLoop(_RampSession(), sink).start()
  assert loop.wait(10) and loop.error is None
  assert sink.concatenated()[::100, 0].tolist() == [0, 1, 2, 3, 4]
  assert sink.done and loop.chunks == 5 and len(sink.concatenated()) == 500
  # A stopped producer with nothing left ends the loop (no silence pushed).
  sink = ListSink()
  sink.open(1000, 1)
  loop = PushLoop(_RampSession(stop_after=3), sink).start()
  assert loop.wait(10) and len(sink.audio) == 3


def test_realtime_wav_sink_paces_and_writes_what_it_got(tmp_path):
  sink = WavSink(tmp_path / "x.wav", max_chunks=6, realtime=True,
                 lead_seconds=0.1, wire_format="s16")
  sink.open(1000, 1)  # 0.1 s chunks
  t0 = time.monotonic()
  loop = PushLoop(_RampSession(), sink).start()
  assert loop.wait(10) and loop.error is None
  took = time.monotonic() - t0
  # 0.6 s of audio with a 0.1 s lead: about 0.4 s of wall clock, not 0.
  assert 0.3 <= took < 3.0, took
  audio, sr = sf.read(tmp_path / "x.wav", dtype="float32")
  assert sr == 1000 and audio.shape == (600,)
  np.testing.assert_allclose(audio[::100], [0, 1, 1, 1, 1, 1], atol=1e-4)


class _ControlSession(_RampSession):
  """A ramp stream that records the controls it is given and rejects an
  all-zero mix the way StreamSession does."""

  channels = 1
  stepper = type("Stepper", (), {"max_steps": 3})

  def __init__(self):
    super().__init__(stop_after=0)
    self.calls = []
    self.cfg, self.steps = 0.0, 1

  def start(self):
    self.stop_after = None

  def stop(self):
    self.stop_after = self.k

  def set_prompt(self, mix):
    if not any(w > 0 for _, w in mix):
      raise ValueError("all prompt weights are zero; the stream keeps "
                       "playing the previous prompt")
    self.calls.append(("prompt", list(mix)))

  def schedule_transition(self, a, b, seconds):
    self.calls.append(("glide", list(a), list(b), seconds))

  def set_controls(self, cfg_weight=None, steps=None):
    self.cfg, self.steps = cfg_weight, steps
    self.calls.append(("controls", cfg_weight, steps))

  def stats(self):
    return {"lead_seconds": 0.0 if not self.running else 1.0,
            "chunks": self.k, "chunk_ms_p50": 1.0, "chunk_seconds": 0.1,
            "underruns": 0, "errors": 0, "last_error": None,
            "cfg_weight": self.cfg, "steps": self.steps}


def test_live_player_widgets_steer_and_survive_bad_input():
  s = _ControlSession()
  sink = ListSink()
  player = LivePlayer(s, sink, prompts="funk:1, rock:0", rows=3)
  assert [p.value for p in player.prompts] == ["funk", "rock", ""]
  assert s.calls == [("prompt", [("funk", 1.0), ("rock", 0.0)])]
  player.weights[1].value = 0.5
  player.prompts[2].value = "flute"  # weight 0: joins the mix, muted
  assert s.calls[-1] == ("prompt", [("funk", 1.0), ("rock", 0.5),
                                    ("flute", 0.0)])
  # All weights zero: refused, shown, the stream keeps the last mix.
  player.weights[0].value = 0.0  # rock alone: fine
  n = len(s.calls)
  player.weights[1].value = 0.0
  assert len(s.calls) == n and "zero" in player.last_error
  assert "zero" in player.message.value
  player.weights[0].value = 1.0  # valid again: the error clears
  assert player.last_error is None
  player.glide.value = 2.0
  player.weights[1].value = 1.0
  assert s.calls[-1] == ("glide", [("funk", 1.0), ("rock", 0.0),
                                   ("flute", 0.0)],
                         [("funk", 1.0), ("rock", 1.0), ("flute", 0.0)], 2.0)
  player.cfg.value, player.steps.value = 1.5, 3
  assert s.calls[-1] == ("controls", 1.5, 3)
  # Play pushes chunks, stop stops them; a new player closes the old one.
  player.play()
  deadline = time.monotonic() + 5
  while len(sink.audio) < 3:
    assert time.monotonic() < deadline
    time.sleep(0.01)
  player.stop()
  assert not player.playing and not s.running
  got = len(sink.audio)
  time.sleep(0.05)
  assert len(sink.audio) == got and "stopped" in player.status.value
  player.play()
  assert player.playing
  again = LivePlayer(s, ListSink())
  assert not player.playing and sink.done  # closed
  again.play()
  assert again.playing
  again.close()
  assert not again.playing


class _FakeComm:
  def __init__(self):
    self.sent = collections.deque()
    self.on_msg_cb = None

  def send(self, data):
    self.sent.append(data)

  def on_msg(self, cb):
    self.on_msg_cb = cb

  def on_close(self, cb):
    pass

  def close(self):
    pass


class _FakeCommManager:
  def __init__(self):
    self.targets = {}

  def register_target(self, name, fn):
    self.targets[name] = fn


def test_browser_sink_keeps_the_page_only_lead_seconds_ahead():
  mgr = _FakeCommManager()
  sink = BrowserSink(lead_seconds=0.5, comm_manager=mgr)
  sink.open(1000, 1, chunk_samples=200)
  assert not sink.wait_room(0.01)  # no page yet: nothing to push to
  comm = _FakeComm()
  mgr.targets[sink.target](comm, {"content": {"data": {
      "type": "hello", "ctx_state": "suspended"}}})
  chunk = np.zeros((200, 1), np.float32)
  pushed = 0
  while pushed < 10 and sink.wait_room(0.01):
    sink.write(chunk, {"index": pushed})
    pushed += 1
  assert pushed == 3  # 0, 0.2, 0.4 s ahead had room; 0.6 s has none
  assert [m["seq"] for m in comm.sent] == [0, 1, 2]
  assert comm.sent[0]["frames"] == 200 and comm.sent[0]["fmt"] == "s16"
  # The page reports it played 0.3 s and is playing: room again, and the
  # clock keeps counting between reports.
  comm.on_msg_cb({"content": {"data": {
      "type": "report", "consumed": 300, "received": 600, "fill": 300,
      "playing": True, "ctx_state": "running", "underruns": 0}}})
  assert sink.wait_room(0.01)
  ahead = sink.ahead_seconds()
  assert 0.2 < ahead <= 0.3
  time.sleep(0.1)
  assert sink.ahead_seconds() < ahead - 0.05
  sink.flush()
  assert comm.sent[-1] == {"type": "flush"}
  sink.close()
  assert comm.sent[-1] == {"type": "close"} and not sink.wait_room(0.01)


# ---- the page in a real browser ----------------------------------------------
# A stand-in for Colab's comms API: open() resolves to a channel whose
# `messages` async iterator yields what the test delivers and whose send()
# the test collects.
_COLAB_SHIM = r"""<script>
window.__mrt = {inbox: [], sent: [], waiters: [], opened: null};
const __next = () => new Promise((res) => {
  if (window.__mrt.inbox.length) {
    res({value: {data: window.__mrt.inbox.shift()}, done: false});
  } else {
    window.__mrt.waiters.push(res);
  }
});
const __channel = {
  send: (d) => window.__mrt.sent.push(d),
  close: () => {},
  messages: {[Symbol.asyncIterator]() { return {next: __next}; }},
};
window.__mrt.deliver = (d) => {
  const w = window.__mrt.waiters.shift();
  if (w) {
    w({value: {data: d}, done: false});
  } else {
    window.__mrt.inbox.push(d);
  }
};
window.google = {colab: {kernel: {accessAllowed: true, comms: {
  open: async (target, data) => {
    window.__mrt.opened = {target, data};
    return __channel;
  }}}}};
</script>"""


class _SineSession:
  """A 440 Hz sine at amplitude 0.3, always ready."""

  batch, running = 1, True

  def __init__(self, sample_rate, chunk_samples):
    self.sample_rate, self.chunk_samples, self.pos = (sample_rate,
                                                      chunk_samples, 0)

  def read(self, n, timeout=None):
    t = (self.pos + np.arange(n)) / self.sample_rate
    self.pos += n
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]

  def stats(self):
    return {"lead_seconds": 10.0}


def test_page_plays_pushed_chunks_through_the_worklet(chromium):
  sync_playwright, exe, args = chromium
  sr, n, lead = 16000, 4000, 0.6  # 0.25 s chunks
  mgr = _FakeCommManager()
  sink = BrowserSink(lead_seconds=lead, comm_manager=mgr)
  sink.open(sr, 1, n)
  page_html = ("<!doctype html><html><body>" + _COLAB_SHIM + sink.html()
               + "</body></html>")
  errors = []
  with sync_playwright() as pw:
    browser = pw.chromium.launch(
        executable_path=exe, headless=True, args=args)
    loop = None
    try:
      page = browser.new_page()
      page.on("pageerror", lambda e: errors.append(str(e)))
      # A secure https origin (AudioWorklet needs one), served by the test.
      page.route("https://colab.test/**", lambda route: route.fulfill(
          status=200, content_type="text/html", body=page_html))
      page.goto("https://colab.test/player.html")
      page.wait_for_function("window.__mrt.opened !== null", timeout=15_000)
      opened = page.evaluate("window.__mrt.opened")
      assert opened["target"] == sink.target
      assert opened["data"]["type"] == "hello"
      comm = _FakeComm()
      mgr.targets[sink.target](comm, {"content": {"data": opened["data"]}})

      # The page's decoder agrees with Python's, channel by channel.
      x = np.array([[0.5, -0.25], [1.0, -1.0], [0.0, 0.125]], np.float32)
      for fmt in PCM_FORMATS:
        planes = page.evaluate(
            "([b, f]) => Object.values(window.mrtDistillColab)[0]"
            ".decode(b, f, 2).map((p) => Array.from(p))",
            [encode_pcm(x, fmt), fmt])
        np.testing.assert_allclose(np.array(planes).T,
                                   decode_pcm(encode_pcm(x, fmt), 2, fmt),
                                   atol=1e-7)

      def pump(seconds):
        """Carry comm messages both ways, as Colab would."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
          out = []
          while comm.sent:
            out.append(comm.sent.popleft())
          if out:
            page.evaluate("ms => ms.forEach((m) => window.__mrt.deliver(m))",
                          out)
          for d in page.evaluate("window.__mrt.sent.splice(0)"):
            comm.on_msg_cb({"content": {"data": d}})
          time.sleep(0.02)

      stats = ("(() => { const a = Object.values(window.mrtDistillColab)[0];"
               " return {...a.stats, errors: a.errors}; })()")
      t0 = time.monotonic()
      loop = PushLoop(_SineSession(sr, n), sink).start()
      pump(3.0)
      elapsed = time.monotonic() - t0
      s = page.evaluate(stats)
      assert s["errors"] == [] and s["ctxState"] == "running"
      assert s["underruns"] == 0 and s["dropped"] == 0
      # It played for real, at the level that was sent (0.3 / sqrt 2).
      assert s["consumed"] > 0.6 * elapsed * sr
      assert s["rms"] == pytest.approx(0.3 / np.sqrt(2), rel=0.05)
      # Paced: what was pushed is what played plus about `lead`, never a
      # flood (3 s of pumping would otherwise be hundreds of chunks).
      ahead = (sink.frames - s["consumed"]) / sr
      assert ahead <= lead + n / sr + 0.3, ahead
      assert sink.chunks <= (elapsed + lead) * sr / n + 2
      assert s["fill"] <= (lead + n / sr) * sr

      # Stop means stop: a flush empties the page's ring at once.
      loop.stop()
      sink.flush()
      pump(0.3)
      s = page.evaluate(stats)
      assert s["fill"] == 0 and s["received"] == s["consumed"]
    finally:
      if loop is not None:
        loop.stop()
      browser.close()
  assert errors == []


# ---- the notebook, headless --------------------------------------------------
def _kernel_manager(tmp_path: pathlib.Path, env: dict):
  """A kernel on this interpreter (the venv), with `env` added."""
  from jupyter_client.kernelspec import KernelSpecManager
  from jupyter_client.manager import AsyncKernelManager
  spec_dir = tmp_path / "kernels" / "mrt-distill-test"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
               "{connection_file}"],
      "display_name": "mrt_distill test", "language": "python",
      "env": env}))
  ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
  return AsyncKernelManager(kernel_name="mrt-distill-test",
                            kernel_spec_manager=ksm)


# Appended to the notebook: read back what the cells did.
_REPORT_CELL = """\
import json as _json
from mrt_distill.style.mixing import embed_prompt_mix as _embed
print("MRT_REPORT " + _json.dumps({
    "before": before.tolist(), "after": session.style_embedding.tolist(),
    "expected": _embed(bundle.style_model, player.mix()).tolist(),
    "mix": player.mix(), "stats": player.stats(),
    "sample_rate": session.sample_rate, "channels": session.channels,
    "chunk_samples": session.chunk_samples,
    "playing": player.playing}, default=str))
"""


def test_notebook_runs_headless_and_steers(tmp_path):
  import nbformat
  from nbclient import NotebookClient
  chunks = 20
  wav = tmp_path / "live.wav"
  env = {
      "MRT_DISTILL_COLAB_TEST": "1",
      # The tiny random student: seconds to load, same code path.
      "MRT_DISTILL_CHECKPOINT": "random-tiny",
      "MRT_DISTILL_COLAB_WAV": str(wav),
      "MRT_DISTILL_COLAB_CHUNKS": str(chunks),
      "JAX_PLATFORMS": "cpu",
      # Reuse compiled XLA programs across runs (the tiny world's op-by-op
      # init is hundreds of small compiles).
      "JAX_COMPILATION_CACHE_DIR": str(
          pathlib.Path(tempfile.gettempdir()) / "mrt_distill_test_jax_cache"),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
  }
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # Exactly one install cell, and it installs from the one REPO_URL.
  install = [c for c in nb.cells if c.cell_type == "code"
             and "pip" in c.source and "install" in c.source]
  assert len(install) == 1
  assert 'f"git+{REPO_URL}"' in install[0].source
  assert '"--no-deps", "tinysoundfont"' in install[0].source
  nb.cells.append(nbformat.v4.new_code_cell(_REPORT_CELL))
  client = NotebookClient(nb, km=_kernel_manager(tmp_path, env), timeout=300,
                          startup_timeout=120,
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError on any failing cell

  outputs = [o for c in nb.cells if c.cell_type == "code"
             for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs
                 if o.output_type == "stream")
  assert "Traceback" not in text, text
  line = next(l for l in text.splitlines() if l.startswith("MRT_REPORT "))
  rep = json.loads(line[len("MRT_REPORT "):])

  # The wav: TEST_CHUNKS chunks of finite, audible audio.
  audio, sr = sf.read(wav, dtype="float32", always_2d=True)
  assert sr == rep["sample_rate"]
  assert audio.shape == (chunks * rep["chunk_samples"], rep["channels"])
  assert np.all(np.isfinite(audio))
  assert float(np.sqrt(np.mean(audio ** 2))) > 1e-4
  stats = rep["stats"]
  assert stats["push_error"] is None and stats["last_error"] is None
  assert stats["sink"]["chunks"] == chunks and not rep["playing"]
  assert stats["session"]["errors"] == 0
  assert stats["session"]["compiles"] == 1  # steering never recompiles

  # The steering cell: the widgets' new mix reached the stream.
  assert rep["mix"] == [["techno", 0.3], ["jazz piano trio", 1.0],
                        ["ambient pads", 0.0], ["funk", 0.0]]
  before, after = np.array(rep["before"]), np.array(rep["after"])
  assert np.linalg.norm(after - before) > 1e-3
  np.testing.assert_allclose(after, rep["expected"], rtol=1e-5, atol=1e-6)
  assert stats["session"]["cfg_weight"] == 1.0
