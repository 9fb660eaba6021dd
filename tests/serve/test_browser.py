"""The web player in a real headless Chromium (Debian's /usr/bin/chromium,
driven by the `playwright` package; never `playwright install`).

Why a browser: the page's parts that can break without any Python test
noticing are browser-only: the AudioWorklet modules loading, frame parsing
and building in JavaScript, the ring buffer actually receiving chunks, the
analyser feeding the spectrogram, the sliders and chips sending messages the
server accepts, the microphone path (getUserMedia -> capture worklet ->
binary frames). The microphone is Chromium's fake capture device playing a
WAV this module writes (a 440 Hz tone), so the test can check that the tone,
not just some bytes, reached the session's audio injection.

One browser and one server serve the whole module (they cost most of the
time); each test starts from whatever state the others left (any order,
any -k selection works).

MRT_SCREENSHOTS=docs python -m pytest -q tests/serve/test_browser.py writes
the screenshots docs/web_player.png and docs/web_player_mic.png (after a few
seconds more of play, so the spectrogram has a past);
MRT_BROWSER_CHECKPOINT=reference runs it all on the shipped student instead
of random-tiny (its style model has a word list of its own).

Skipped when Chromium or playwright is missing, except under CI (env CI
set), where that is a failure: CI must install both.
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np
import pytest

TONE_HZ = 440.0
VOCAB = ("techno", "jazz", "flute", "rock", "ambient")


class _WithVocab:
  """The random-tiny style model (it embeds any text) with a closed word
  list, as the reference style model has: what the page's chips show."""
  vocab = VOCAB

  def __init__(self, inner):
    self._inner = inner

  def __getattr__(self, name):
    return getattr(self._inner, name)


def _wait(cond, what, timeout=15.0):
  deadline = time.monotonic() + timeout
  while not cond():
    assert time.monotonic() < deadline, f"timed out waiting for {what}"
    time.sleep(0.05)


@pytest.fixture(scope="module")
def served(chromium, tmp_path_factory):
  sync_playwright, exe, args = chromium
  import soundfile as sf

  from mrt_distill.serve import server as srv
  from mrt_distill.serve.bundle import load_student
  from mrt_distill.serve.session import StreamSession
  wav = tmp_path_factory.mktemp("mic") / "tone.wav"
  t = np.arange(2 * 48000) / 48000
  sf.write(wav, 0.5 * np.sin(2 * np.pi * TONE_HZ * t), 48000,
           subtype="PCM_16")
  bundle = load_student(os.environ.get("MRT_BROWSER_CHECKPOINT",
                                      "random-tiny"))
  style = bundle.style_model
  if srv.style_vocab(style) is None:
    style = _WithVocab(style)
  session = StreamSession(bundle.stepper(max_steps=2), bundle.params,
                          style, lead_chunks=2, prompt="techno:1.0, jazz:0.0")
  session.next_chunk()  # compile before the clock starts
  injected = []  # what reaches the session's injection, in order
  inject = session.inject_audio

  def spy(audio, *a, **kw):
    injected.append((np.array(audio), kw.get("gain"), kw.get("mode")))
    return inject(audio, *a, **kw)
  session.inject_audio = spy
  server = srv.StreamServer(session, prompt="techno:1.0, jazz:0.0", port=0,
                            max_steps=2, status_interval=0.3)
  mic = ["--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream",
         f"--use-file-for-fake-audio-capture={wav}"]
  with srv.ServerThread(server), sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=exe, args=args + mic,
                                 headless=True)
    try:
      page = browser.new_page(viewport={"width": 960, "height": 1000})
      errors = []
      page.on("pageerror", lambda e: errors.append(str(e)))
      page.goto(server.url)
      page.wait_for_function("window.mrtStats && window.mrtStats.hello",
                             timeout=15_000)
      yield page, bundle, session, server, injected
      assert errors == []
    finally:
      browser.close()


def _settle():
  if os.environ.get("MRT_SCREENSHOTS"):
    time.sleep(8)  # a spectrogram with some history for the picture


def _screenshot(page, name):
  folder = os.environ.get("MRT_SCREENSHOTS")
  if not folder:
    return
  page.mouse.move(1, 1)  # no hover highlight in the picture
  out = pathlib.Path(folder) / name
  tmp = out.with_name(f".{name}.tmp.png")
  page.screenshot(path=str(tmp), full_page=True)
  os.replace(tmp, out)  # never a half-written picture in docs/


def srv_vocab(server):
  vocab = server.vocab
  assert vocab and {"techno", "jazz", "flute"} <= set(vocab), vocab
  return vocab


def _play(page, server):
  if not server.pump.playing:
    page.click("#play")
  page.wait_for_function("window.mrtStats.workletChunks >= 2",
                         timeout=20_000)


def _rows(server):
  return [(p["text"], p["weight"])
          for p in server.controller.snapshot()["prompts"]]


def _label(rows):
  return ", ".join(f"{t}:{w:g}" for t, w in rows)


def _embedding_reaches(session, want, what):
  _wait(lambda: np.allclose(np.asarray(session.style_embedding).reshape(-1),
                            want, atol=1e-5), what)


def test_page_plays_and_steers(served):
  page, bundle, session, server, _ = served
  from mrt_distill.style.mixing import embed_prompt_mix
  assert page.locator(".row").count() == 2
  assert not server.pump.playing
  page.click("#play")
  # Chunks reach the worklet's ring buffer and it plays them.
  page.wait_for_function("window.mrtStats.workletChunks >= 4",
                         timeout=20_000)
  stats = page.evaluate("({...window.mrtStats, hello: 0, status: 0})")
  assert server.pump.playing
  assert stats["audioState"] == "running"
  assert stats["gaps"] == 0
  assert stats["rmsDb"] > -100  # the worklet outputs the stream, not 0s

  # Move the second prompt's weight slider.
  before = np.array(session.style_embedding).reshape(-1)
  page.locator(".prompt-weight").nth(1).fill("0.7")
  want = embed_prompt_mix(session.style_model, [("techno", 1.0),
                                                ("jazz", 0.7)])
  assert not np.allclose(before, want, atol=1e-3)
  _embedding_reaches(session, want, "the slider's mix in the session")
  assert server.controller.snapshot()["prompts"][1] == {
      "text": "jazz", "weight": 0.7}

  # The server's view of the page: connected, nothing dropped, no errors.
  page.wait_for_function(
      "window.mrtStats.status && window.mrtStats.status.prompts[1]"
      ".weight === 0.7", timeout=10_000)
  status = page.evaluate("window.mrtStats.status")
  assert (status["you"]["dropped"], status["you"]["errors"]) == (0, 0)
  assert page.evaluate("window.mrtStats.errors") == []

  # The spectrogram scrolls and shows the stream: columns with energy, and
  # the newest part of the canvas is not the empty background.
  page.wait_for_function("window.mrtStats.spectrogramLit >= 20",
                         timeout=10_000)
  lit = page.evaluate("""() => {
    const c = document.getElementById('spectrogram');
    const d = c.getContext('2d').getImageData(c.width - 40, 0, 40,
                                              c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4)
      if (d[i] + d[i + 1] + d[i + 2] > 3 * 40) n++;
    return n / (d.length / 4);
  }""")
  assert lit > 0.05, f"only {lit:.1%} of the newest spectrogram is lit"
  # The measured control delay of the slider change is on the page.
  page.wait_for_function(
      "document.querySelector('#n-delay b').textContent.endsWith(' ms')",
      timeout=10_000)
  delay = page.text_content("#n-delay b")
  p50 = server.session.stats()["control_delay_ms_p50"]
  assert p50 is not None and 0 < p50 < 10_000, delay


def test_style_word_chips_and_glide(served):
  page, bundle, session, server, _ = served
  from mrt_distill.style.mixing import embed_prompt_mix
  _play(page, server)
  page.locator("#glide").fill("0")
  before = _rows(server)
  assert "flute" not in [t for t, _ in before]
  vocab = list(srv_vocab(server))
  chips = page.locator("#chips .chip")
  assert chips.all_text_contents() == vocab
  options = page.eval_on_selector_all("#vocab-list option",
                                      "os => os.map(o => o.value)")
  assert options == vocab
  assert page.get_attribute(".prompt-text >> nth=0", "list") == "vocab-list"
  assert page.get_attribute("#chips .chip >> text=techno", "class") \
      == "chip on"

  # A click adds the word to the mix the server plays.
  page.click("#chips .chip >> text=flute")
  want = before + [("flute", 1.0)]
  _wait(lambda: _rows(server) == want, "the chip's prompt")
  _embedding_reaches(session, embed_prompt_mix(session.style_model, want),
                     "the chip's mix in the session")
  assert "on" in page.get_attribute("#chips .chip >> text=flute", "class")

  # A typo in the prompt box is refused by name; the music keeps its mix.
  flute_row = page.locator(".prompt-text").nth(len(before))
  flute_row.fill("flutte")
  flute_row.press("Enter")
  page.wait_for_function("window.mrtStats.errors.length > 0",
                         timeout=10_000)
  assert page.evaluate("window.mrtStats.errors.pop()").startswith(
      "prompt 'flutte': unknown word(s) 'flutte'; did you mean flute?")
  assert page.text_content("#error").startswith("prompt 'flutte'")
  assert _rows(server) == want
  flute_row.fill("flute")
  flute_row.press("Enter")

  # With a glide time, a chip starts a transition instead of a jump.
  page.locator("#glide").fill("2")
  _settle()
  page.click("#chips .chip >> text=flute")  # off again, over 3 s
  _wait(lambda: session.stats()["transition"] is not None, "the glide")
  tr = session.stats()["transition"]
  assert tr is not None and (tr["to"], tr["seconds"]) == (_label(before),
                                                          2.0)
  page.wait_for_function(
      "document.getElementById('glide-state').textContent"
      f".startsWith('gliding to {_label(before)}')", timeout=10_000)
  _screenshot(page, "web_player.png")
  _wait(lambda: session.stats()["transition"] is None, "the glide's end",
        timeout=20)
  assert session.stats()["prompt"] == _label(before)
  assert _rows(server) == before
  page.locator("#glide").fill("0")


def test_microphone_reaches_the_session(served):
  page, bundle, session, server, injected = served
  sr = session.sample_rate
  _play(page, server)
  injected.clear()
  page.locator("#input-gain").fill("0.5")
  page.click("#mic")
  page.wait_for_function("window.mrtStats.inputBlocks >= 12",
                         timeout=15_000)
  _wait(lambda: server.live_input.snapshot()["seconds"] > 0.5,
        "input at the server")
  snap = server.live_input.snapshot()
  assert (snap["mode"], snap["gain"], snap["gaps"]) == ("free", 0.5, 0)
  assert snap["level_db"] > -12  # the 0.5-amplitude tone (-9 dB), not zeros
  assert session.stats()["inject_mode"] == "free"
  # The tone itself reached the injection, at the stream's rate and gain.
  _wait(lambda: sum(len(a) for a, _, _ in injected) >= sr // 2,
        "injected audio")
  audio = np.concatenate([a for a, _, _ in injected])[:, 0]
  assert {(g, m) for _, g, m in injected} == {(0.5, "free")}
  spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
  peak_hz = np.argmax(spectrum) * sr / len(audio)
  assert abs(peak_hz - TONE_HZ) < 10, peak_hz
  # Its level as sent (the session applies the gain): amplitude 0.5.
  assert 0.45 < np.percentile(np.abs(audio), 99) < 0.56

  # Looper mode and its length go to the server (and on to the session).
  page.locator("#loop-seconds").fill("2")
  page.select_option("#input-mode", "looper")
  _wait(lambda: server.live_input.snapshot()["mode"] == "looper",
        "looper mode")
  _wait(lambda: session.stats()["inject_mode"] == "looper",
        "the session's looper")
  assert server.live_input.loop_seconds == 2.0
  page.wait_for_function(
      "document.getElementById('input-state').textContent"
      ".startsWith('input looper')", timeout=10_000)
  _settle()
  _screenshot(page, "web_player_mic.png")
  page.click("#mic")  # stop
  _wait(lambda: server.live_input.snapshot()["mode"] == "off", "input off")
  _wait(lambda: session.stats()["inject_mode"] is None, "injection off")
  assert page.evaluate("window.mrtStats.errors") == []
  assert server.pump.playing and session.stats()["errors"] == 0
