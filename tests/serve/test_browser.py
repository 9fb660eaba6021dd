"""The web player in a real headless Chromium (Debian's /usr/bin/chromium,
driven by the `playwright` package; never `playwright install`).

Why a browser: the page's parts that can break without any Python test
noticing are browser-only: the AudioWorklet module loading, frame parsing in
JavaScript, the ring buffer actually receiving chunks, the sliders sending
messages the server accepts. The test loads the page, presses Play, waits
for chunks to reach the worklet (the page counts them on window.mrtStats),
moves a weight slider and checks the server session's style embedding.

Skipped when Chromium or playwright is missing, except under CI (env CI
set), where that is a failure: CI must install both.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

@pytest.fixture(scope="module")
def served(chromium):
  sync_playwright, exe, args = chromium
  from mrt_distill.serve import server as srv
  from mrt_distill.serve.bundle import load_student
  from mrt_distill.serve.session import StreamSession
  bundle = load_student("random-tiny")
  session = StreamSession(bundle.stepper(max_steps=2), bundle.params,
                          bundle.style_model, lead_chunks=2,
                          prompt="techno:1.0, jazz:0.0")
  session.next_chunk()  # compile before the clock starts
  server = srv.StreamServer(session, prompt="techno:1.0, jazz:0.0", port=0,
                            max_steps=2, status_interval=0.3)
  with srv.ServerThread(server):
    yield sync_playwright, exe, args, bundle, session, server


def test_page_plays_and_steers(served):
  sync_playwright, exe, args, bundle, session, server = served
  from mrt_distill.style.mixing import embed_prompt_mix
  errors = []
  with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=exe, args=args,
                                 headless=True)
    try:
      page = browser.new_page()
      page.on("pageerror", lambda e: errors.append(str(e)))
      page.goto(server.url)
      page.wait_for_function("window.mrtStats && window.mrtStats.hello",
                             timeout=15_000)
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
      want = embed_prompt_mix(bundle.style_model, [("techno", 1.0),
                                                   ("jazz", 0.7)])
      assert not np.allclose(before, want, atol=1e-3)
      deadline = time.monotonic() + 15
      while not np.allclose(np.asarray(session.style_embedding).reshape(-1),
                            want, atol=1e-5):
        assert time.monotonic() < deadline, "the slider did not reach the " \
            "session's style embedding"
        time.sleep(0.05)
      assert server.controller.snapshot()["prompts"][1] == {
          "text": "jazz", "weight": 0.7}

      # The server's view of the page: connected, nothing dropped, no errors.
      page.wait_for_function(
          "window.mrtStats.status && window.mrtStats.status.prompts[1]"
          ".weight === 0.7", timeout=10_000)
      status = page.evaluate("window.mrtStats.status")
      assert (status["you"]["dropped"], status["you"]["errors"]) == (0, 0)
      assert page.evaluate("window.mrtStats.errors") == []
      chunks = page.evaluate("window.mrtStats.workletChunks")
      page.wait_for_function(f"window.mrtStats.workletChunks > {chunks}",
                             timeout=10_000)
    finally:
      browser.close()
  assert errors == []
