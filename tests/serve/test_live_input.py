"""`LiveInput` without a network or a model: input frames and settings ->
`inject_audio` calls on a recording fake session, and the `input` control
message. The same path with a real server, page and OSC: test_server.py
and test_browser.py.

What would fail silently otherwise: a sound card clock a little faster than
the stream pushing the input further and further ahead, two senders
interleaving in time, stereo input injected into a mono stream as garbage.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrt_distill.serve import protocol
from mrt_distill.serve.live_input import LiveInput

SR = 8000


class FakeSession:
  """Records inject_audio; `played` is the played position."""

  def __init__(self, channels=1):
    self.sample_rate, self.channels = SR, channels
    self.played = 0
    self.calls = []
    self._end = 0

  def played_position(self):
    return self.played

  def inject_audio(self, audio, sample_rate, gain=1.0, mode="free", *,
                   loop_seconds=None, at=None):
    start = at if at is not None else max(self._end, self.played)
    self.calls.append({"audio": np.array(audio), "gain": gain, "mode": mode,
                       "loop_seconds": loop_seconds, "at": at,
                       "start": start})
    self._end = start + len(audio)
    return start


def _frame(audio, index=0, rate=SR):
  a = np.asarray(audio, np.float32)
  return protocol.encode_frame(a.reshape(len(a), -1), rate, index)


def test_frames_are_injected_back_to_back_with_the_gain_and_mode():
  s = FakeSession()
  li = LiveInput(s)
  li.configure(mode="free", gain=0.5)
  x = np.linspace(-1, 1, 400, dtype=np.float32)
  s.played = 1000
  assert li.feed("page", _frame(x, 0)) == 1000  # the first goes to "now"
  assert li.feed("page", _frame(x, 1)) == 1400  # the next right after it
  assert [c["start"] for c in s.calls] == [1000, 1400]
  assert {(c["gain"], c["mode"]) for c in s.calls} == {(0.5, "free")}
  np.testing.assert_array_equal(s.calls[1]["audio"][:, 0], x)
  snap = li.snapshot()
  assert (snap["frames"], snap["seconds"], snap["gaps"]) == (2, 0.1, 0)
  li.feed("page", _frame(x, 5))  # blocks 2..4 never arrived
  assert li.snapshot()["gaps"] == 1


def test_a_fast_input_clock_is_pulled_back_to_the_stream():
  s = FakeSession()
  li = LiveInput(s, max_ahead_seconds=0.1)  # 800 samples
  li.configure(mode="free")
  block = np.zeros(400, np.float32)
  starts = [li.feed("page", _frame(block, i)) for i in range(3)]
  assert starts == [0, 400, 800]  # 800 ahead of the played position 0
  assert li.feed("page", _frame(block, 3)) == 0  # 1200 ahead: back to now
  assert li.snapshot()["resyncs"] == 1
  s.played = 5000  # the input paused: it resumes at the stream's "now"
  assert li.feed("page", _frame(block, 4)) == 5000


def test_one_input_at_a_time():
  s = FakeSession()
  li = LiveInput(s, idle_seconds=60)
  li.configure(mode="free")
  block = np.zeros(100, np.float32)
  li.feed("a", _frame(block), peer="10.0.0.1:5")
  with pytest.raises(protocol.ProtocolError, match="10.0.0.1:5 is sending"):
    li.feed("b", _frame(block))
  assert li.feed("b", _frame(block)) is None  # refused quietly from now on
  assert li.snapshot()["refused"] == 2 and len(s.calls) == 1
  li.release("a")  # a leaves: b may play
  assert li.feed("b", _frame(block)) is not None
  assert li.snapshot()["source"] == "?"


def test_channels_are_adapted_and_bad_frames_refused():
  mono = FakeSession(channels=1)
  li = LiveInput(mono)
  li.configure(mode="looper", loop_seconds=2)
  st = np.stack([np.full(10, 0.2), np.full(10, 0.6)], 1)
  li.feed("p", _frame(st))
  np.testing.assert_allclose(mono.calls[0]["audio"], np.full((10, 1), 0.4),
                             rtol=1e-6)
  assert mono.calls[0]["loop_seconds"] == 2 and mono.calls[0]["at"] is None
  stereo = FakeSession(channels=2)
  li2 = LiveInput(stereo)
  li2.configure(mode="free")
  li2.feed("p", _frame(np.full(10, 0.3)))
  assert stereo.calls[0]["audio"].shape == (10, 2)
  for frame, msg in [
      (b"\x00" * 10, "not an input audio frame"),
      (_frame(np.zeros(10), rate=44100),
       "44100 Hz; the stream runs at 8000 Hz"),
      (_frame(np.full(10, np.nan)), "NaN"),
      (_frame(np.zeros(3 * SR)), "longer than 2 s"),
      (_frame(np.zeros((10, 3))), "3 channels; the stream has 2"),
  ]:
    with pytest.raises(protocol.ProtocolError, match=msg):
      li2.feed("p", frame)
  assert len(stereo.calls) == 1


def test_off_drops_frames_and_silences_the_injection():
  s = FakeSession()
  li = LiveInput(s)
  assert li.feed("p", _frame(np.ones(10))) is None  # off by default
  assert s.calls == [] and li.snapshot()["ignored"] == 1
  li.configure(mode="free", gain=2.0)
  li.feed("p", _frame(np.ones(10)))
  li.configure(mode="off")
  assert s.calls[-1]["gain"] == 0.0  # gain 0 turns the session's input off
  assert li.snapshot()["mode"] == "off"


def test_settings_are_checked_and_a_refusal_changes_nothing():
  changes = []
  li = LiveInput(FakeSession(), on_change=lambda: changes.append(1))
  li.configure(mode="looper", gain=1.5, loop_seconds=3)
  assert (li.mode, li.gain, li.loop_seconds, len(changes)) == (
      "looper", 1.5, 3.0, 1)
  for kw, msg in [({"mode": "loop"}, "input mode 'loop'"),
                  ({"gain": -0.1}, r"gain must be in \[0, 8\]"),
                  ({"gain": True}, "must be a number"),
                  ({"loop_seconds": 0}, r"loop_seconds must be in \(0, 60\]"),
                  ({"mode": "free", "gain": 99}, "gain")]:
    with pytest.raises(protocol.ProtocolError, match=msg):
      li.configure(**kw)
  assert (li.mode, li.gain, li.loop_seconds, len(changes)) == (
      "looper", 1.5, 3.0, 1)


def test_input_message():
  cmd = protocol.parse_message(json.dumps(
      {"type": "input", "mode": "looper", "gain": 0.5, "loop_seconds": 2}))
  assert cmd == protocol.Command("input", mode="looper", value=0.5,
                                 seconds=2.0)
  assert protocol.parse_message('{"type": "input", "gain": 1}') == \
      protocol.Command("input", value=1.0)
  for message, msg in [('{"type": "input"}', 'needs "mode"'),
                       ('{"type": "input", "mode": 3}', "input mode 3"),
                       ('{"type": "input", "gain": "max"}', "a number")]:
    with pytest.raises(protocol.ProtocolError, match=msg):
      protocol.parse_message(message)


def test_a_student_that_cannot_hear_input_says_so():
  s = FakeSession()
  s.stepper = type("Stepper", (), {"can_inject": False})()
  li = LiveInput(s)
  assert li.snapshot()["available"] is False
  with pytest.raises(protocol.ProtocolError, match="cannot hear input"):
    li.configure(mode="free")
  li.configure(mode="off", gain=0.5)  # off and the gain are still fine
  assert (li.mode, li.gain) == ("off", 0.5)
