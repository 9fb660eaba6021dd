"""`mrt-distill serve` without a browser: message validation, client outboxes,
frame encoding, then a real server on a free loopback port driving the
random tiny student, with websockets and python-osc clients.

What would fail silently otherwise: a prompt change that never reaches the
style embedding, a bad message that kills the connection or the stream, a
slow listener that stalls everyone, OSC input that crashes the server.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from mrt_distill.serve import protocol
from mrt_distill.serve import pump
from mrt_distill.serve import server as srv

# ---- pure logic ------------------------------------------------------------


def test_parse_valid_messages():
  cmd = protocol.parse_message(json.dumps({"type": "prompt", "prompts": [
      {"text": " techno ", "weight": 1}, {"text": "jazz", "weight": 0.5}]}))
  assert cmd == protocol.Command("prompt",
                                 rows=(("techno", 1.0), ("jazz", 0.5)))
  assert protocol.parse_message(
      '{"type": "prompt", "prompts": "a:1, b:0"}').rows \
      == (("a", 1.0), ("b", 0.0))
  assert protocol.parse_message('{"type": "cfg", "value": 2.5}').value == 2.5
  assert protocol.parse_message('{"type": "steps", "value": 3.0}').value == 3
  assert protocol.parse_message('{"type": "weight", "index": 1, "weight": 0}') \
      == protocol.Command("weight", index=1, value=0.0)
  assert protocol.parse_message('{"type": "play"}').kind == "play"
  t = protocol.parse_message(json.dumps({
      "type": "transition", "seconds": 4,
      "to": [{"text": "rock", "weight": 1}], "from": "jazz:1"}))
  assert (t.rows, t.from_rows, t.seconds) == ((("rock", 1.0),),
                                              (("jazz", 1.0),), 4.0)


@pytest.mark.parametrize("message, expected", [
    ("{not json", "malformed JSON"),
    ("[1, 2]", "JSON object"),
    ('{"value": 1}', 'no "type"'),
    ('{"type": "dance"}', "unknown message type 'dance'"),
    ('{"type": "prompt"}', 'needs "prompts"'),
    ('{"type": "prompt", "prompts": []}', "at least one prompt"),
    ('{"type": "prompt", "prompts": [{"text": "a", "weight": -1}]}',
     "must be >= 0"),
    ('{"type": "prompt", "prompts": [{"text": "a", "weight": "x"}]}',
     "must be a number"),
    ('{"type": "prompt", "prompts": [{"text": "a", "weight": NaN}]}',
     "must be finite"),
    ('{"type": "prompt", "prompts": [{"text": "  ", "weight": 1}]}',
     "prompts[0].text is empty"),
    ('{"type": "prompt", "prompts": [{"text": "a", "weight": 0}]}',
     "all weights are zero"),
    ('{"type": "prompt", "prompts": [{"weight": 1}]}', '"text" and "weight"'),
    ('{"type": "prompt", "prompts": "a:lots"}', "is not a number"),
    ('{"type": "cfg", "value": true}', "must be a number"),
    ('{"type": "steps", "value": 1.5}', "whole number"),
    ('{"type": "transition", "to": "a", "seconds": 0}', "seconds must be"),
    ("x" * (protocol.MAX_MESSAGE_BYTES + 1), "byte limit"),
    (b"\x00\x01", "binary messages"),
])
def test_parse_rejects_with_reason(message, expected):
  with pytest.raises(protocol.ProtocolError) as e:
    protocol.parse_message(message)
  assert expected in str(e.value)


def test_too_many_prompts():
  rows = [{"text": f"p{i}", "weight": 1}
          for i in range(protocol.MAX_PROMPTS + 1)]
  with pytest.raises(protocol.ProtocolError, match="at most"):
    protocol.parse_message(json.dumps({"type": "prompt", "prompts": rows}))


def test_outbox_drops_oldest_and_forgives_a_client_that_catches_up():
  box = pump.Outbox(max_audio=3, max_drop_streak=4)
  for i in range(5):
    box.push_audio(bytes([i]))
  assert (box.dropped, box.streak, box.too_slow) == (2, 2, False)
  box.push_control("hello")
  # Control replies jump the queue; the oldest audio went first.
  assert [box.pop() for _ in range(3)] == ["hello", b"\x02", b"\x03"]
  assert box.streak == 2
  assert box.pop() == b"\x04" and box.streak == 0  # drained: forgiven
  assert box.pop() is None
  for i in range(3 + 4):
    box.push_audio(bytes([i]))
  assert box.too_slow and box.dropped == 6


def test_outbox_keeps_only_the_newest_status():
  box = pump.Outbox(max_audio=2, max_drop_streak=2)
  box.push_audio(b"a")
  box.push_status("old")
  box.push_control("error")
  box.push_status("new")
  assert [box.pop() for _ in range(4)] == ["error", "new", b"a", None]


@pytest.mark.parametrize("origin, host_header, bound, ok", [
    (None, "127.0.0.1:8765", "127.0.0.1", True),  # a script, Max, Pd
    ("http://127.0.0.1:8765", "127.0.0.1:8765", "127.0.0.1", True),
    ("http://localhost:8765", "localhost:8765", "127.0.0.1", True),
    ("http://evil.example", "127.0.0.1:8765", "127.0.0.1", False),
    ("http://127.0.0.1:9999", "127.0.0.1:8765", "127.0.0.1", False),
    ("http://evil.example:8765", "evil.example:8765", "127.0.0.1", False),
    ("http://192.168.1.5:8765", "192.168.1.5:8765", "192.168.1.5", True),
    ("http://192.168.1.5:8765", "192.168.1.5:8765", "0.0.0.0", True),
    ("http://10.0.0.9:8765", "192.168.1.5:8765", "0.0.0.0", False),
    # DNS rebinding: a name that points at this machine is not enough.
    ("http://rebind.example:8765", "rebind.example:8765", "0.0.0.0", False),
    ("http://127.0.0.1:bad", "127.0.0.1:8765", "127.0.0.1", False),
])
def test_origin_allowed(origin, host_header, bound, ok):
  assert srv.origin_allowed(origin, host_header, bound, 8765) is ok


def test_allow_origin_flag():
  assert srv.origin_allowed("http://box.local:8080", "box.local:8765",
                            "0.0.0.0", 8765, ["http://box.local:8080"])


@pytest.mark.parametrize("fmt, tol", [("float32", 0.0), ("int16", 1 / 32767)])
def test_frame_roundtrip(fmt, tol):
  rng = np.random.default_rng(0)
  audio = rng.uniform(-1, 1, (37, 2)).astype(np.float32)
  frame = protocol.encode_frame(audio, 16000, 2**32 + 5, fmt)
  assert len(frame) == 16 + audio.size * (4 if fmt == "float32" else 2)
  head, back = protocol.decode_frame(frame)
  assert head == {"format": fmt, "channels": 2, "sample_rate": 16000,
                  "index": 5}
  np.testing.assert_allclose(back, audio, atol=tol)


# ---- a live server -----------------------------------------------------------

CHUNK_WAIT = 20.0  # seconds to wait for anything the stream should do


@pytest.fixture(scope="module")
def live():
  from mrt_distill.serve.bundle import load_student
  from mrt_distill.serve.session import StreamSession
  bundle = load_student("random-tiny")
  session = StreamSession(bundle.stepper(max_steps=2), bundle.params,
                          bundle.style_model, lead_chunks=2,
                          prompt="techno:1.0")
  session.next_chunk()  # compile before the clock starts
  server = srv.StreamServer(
      session, prompt="techno:1.0", port=0, osc_port=0, max_steps=2,
      queue_seconds=0.5, max_drop_streak=6, status_interval=0.3,
      send_buffer_bytes=32 * 1024,
      autoplay=True)
  with srv.ServerThread(server) as thread:
    yield bundle, session, server, thread


def _connect(server, **kw):
  from websockets.sync.client import connect
  return connect(f"ws://127.0.0.1:{server.port}/ws", proxy=None,
                 compression=None, open_timeout=10, **kw)


def _recv(ws, want, timeout=CHUNK_WAIT):
  """Messages until want(msg) holds -> (that msg, [all before it])."""
  seen = []
  deadline = time.monotonic() + timeout
  while True:
    left = deadline - time.monotonic()
    if left <= 0:
      kinds = [m if isinstance(m, bytes) else json.loads(m)["type"]
               for m in seen[-10:]]
      raise AssertionError(f"timed out; last messages: {kinds!r:.300}")
    msg = ws.recv(timeout=left)
    if not isinstance(msg, bytes):
      msg = json.loads(msg)
    if want(msg):
      return msg, seen
    seen.append(msg)


def _is_audio(m):
  return isinstance(m, bytes)


def _of_type(kind):
  return lambda m: isinstance(m, dict) and m["type"] == kind


def _frames(ws, n):
  out = []
  for _ in range(n):
    frame, _ = _recv(ws, _is_audio)
    out.append(protocol.decode_frame(frame))
  return out


def _wait_for(cond, timeout=CHUNK_WAIT, what="condition"):
  deadline = time.monotonic() + timeout
  while not cond():
    if time.monotonic() > deadline:
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.02)


def test_audio_frames_stream(live):
  _, session, server, _ = live
  with _connect(server) as ws:
    hello, _ = _recv(ws, _of_type("hello"))
    assert hello["sample_rate"] == session.sample_rate
    assert hello["chunk_samples"] == session.chunk_samples
    assert hello["prompts"] == [{"text": "techno", "weight": 1.0}]
    frames = _frames(ws, 6)
  indices = [h["index"] for h, _ in frames]
  assert indices == list(range(indices[0], indices[0] + 6))
  for head, audio in frames:
    assert head["format"] == "float32"
    assert (head["sample_rate"], head["channels"]) == (session.sample_rate,
                                                       session.channels)
    assert audio.shape == (session.chunk_samples, session.channels)
    assert np.all(np.isfinite(audio))
  assert max(np.abs(a).max() for _, a in frames) > 0  # not silence


def test_int16_frames(live):
  _, session, server, _ = live
  from websockets.sync.client import connect
  with connect(f"ws://127.0.0.1:{server.port}/ws?format=int16",
               proxy=None) as ws:
    head, audio = _frames(ws, 1)[0]
  assert head["format"] == "int16"
  assert audio.shape == (session.chunk_samples, session.channels)


def _expected(bundle, mix):
  from mrt_distill.style.mixing import embed_prompt_mix
  return embed_prompt_mix(bundle.style_model, mix)


def _embedding_is(session, want):
  return lambda: np.allclose(np.asarray(session.style_embedding).reshape(-1),
                             want, atol=1e-5)


def test_prompt_message_changes_style_embedding(live):
  bundle, session, server, _ = live
  before = np.array(session.style_embedding).reshape(-1)
  want = _expected(bundle, [("jazz", 1.0), ("ambient piano", 0.5)])
  assert not np.allclose(before, want, atol=1e-3)
  with _connect(server) as ws:
    ws.send(json.dumps({"type": "prompt", "prompts": [
        {"text": "jazz", "weight": 1.0},
        {"text": "ambient piano", "weight": 0.5}]}))
    _recv(ws, _of_type("ack"))
    _wait_for(_embedding_is(session, want), what="the new style embedding")
    status, _ = _recv(ws, _of_type("status"))
    assert status["prompts"] == [{"text": "jazz", "weight": 1.0},
                                 {"text": "ambient piano", "weight": 0.5}]
    # One row's weight, by index (what OSC /mrt/weight does too).
    ws.send(json.dumps({"type": "weight", "index": 1, "weight": 2.0}))
    _recv(ws, _of_type("ack"))
    _wait_for(_embedding_is(
        session, _expected(bundle, [("jazz", 1.0), ("ambient piano", 2.0)])),
              what="the reweighted embedding")
    _recv(ws, _is_audio)  # still streaming


def test_bad_messages_get_errors_and_the_stream_goes_on(live):
  _, _, server, _ = live
  with _connect(server) as ws:
    _recv(ws, _is_audio)
    bad = [
        ("{oops", "malformed JSON"),
        ('{"type": "warp"}', "unknown message type"),
        ('{"type": "cfg", "value": "loud"}', "must be a number"),
        ('{"type": "steps", "value": 99}', "steps"),  # the session refuses
        ('{"type": "weight", "index": 7, "weight": 1}', "out of range"),
        ("x" * (100 * 1024), "byte limit"),
        (b"\x00" * 10, "binary"),
    ]
    for message, expected in bad:
      ws.send(message)
      err, _ = _recv(ws, _of_type("error"))
      assert expected in err["message"], (message[:40], err)
    last = None
    for head, audio in _frames(ws, 3):
      assert last is None or head["index"] == last + 1
      last = head["index"]
      assert np.all(np.isfinite(audio))
    ws.send('{"type": "status"}')
    status, _ = _recv(ws, _of_type("status"))
    assert status["you"]["errors"] == len(bad)
    assert status["playing"] is True


def test_slow_client_is_dropped_while_others_play(live):
  _, _, server, _ = live
  before = server.counters["disconnected_slow"]
  # A listener that never reads, with a tiny receive window.
  slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
  slow.connect(("127.0.0.1", server.port))
  key = base64.b64encode(os.urandom(16)).decode()
  slow.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"\r\n").encode())
  slow.settimeout(10)
  head = b""
  while b"\r\n\r\n" not in head:
    head += slow.recv(1)
  assert head.startswith(b"HTTP/1.1 101")
  indices = []
  with _connect(server) as good:
    deadline = time.monotonic() + 40
    while server.counters["disconnected_slow"] == before:
      assert time.monotonic() < deadline, "the slow client was never dropped"
      msg, _ = _recv(good, _is_audio)
      indices.append(protocol.decode_frame(msg)[0]["index"])
    for _ in range(3):  # and the good one keeps playing afterwards
      msg, _ = _recv(good, _is_audio)
      indices.append(protocol.decode_frame(msg)[0]["index"])
    good.send('{"type": "status"}')
    status, _ = _recv(good, _of_type("status"))
  assert indices == list(range(indices[0], indices[0] + len(indices)))
  assert status["you"]["dropped"] == 0
  # The slow socket was closed by the server: it reads EOF (or a reset)
  # once its buffered bytes are drained.
  slow.settimeout(5)
  closed = False
  try:
    while slow.recv(65536):
      pass
    closed = True
  except ConnectionResetError:
    closed = True
  finally:
    slow.close()
  assert closed


def test_osc_controls(live):
  from pythonosc.udp_client import SimpleUDPClient
  bundle, session, server, _ = live
  osc = SimpleUDPClient("127.0.0.1", server.osc_port)
  start = server.osc.stats()
  osc.send_message("/mrt/cfg", 1.5)
  _wait_for(lambda: server.controller.snapshot()["cfg"] == 1.5,
            what="OSC cfg")
  _wait_for(lambda: session.stats()["cfg_weight"] == 1.5, what="session cfg")
  osc.send_message("/mrt/prompt", ["rock", 1.0, "flute", 0.25])
  want = _expected(bundle, [("rock", 1.0), ("flute", 0.25)])
  _wait_for(_embedding_is(session, want), what="OSC prompt embedding")
  osc.send_message("/mrt/weight", [1.0, 1])  # Pd sends floats for indices
  want = _expected(bundle, [("rock", 1.0), ("flute", 1.0)])
  _wait_for(_embedding_is(session, want), what="OSC weight embedding")
  # Bad input is logged and ignored; nothing stops.
  osc.send_message("/mrt/cfg", "loud")
  osc.send_message("/mrt/weight", [9, 1.0])
  osc.send_message("/mrt/prompt", ["rock", 1.0, "flute"])
  osc.send_message("/mrt/elsewhere", 1)
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.sendto(b"/mrt/cfg\x00\x00\x00\x00,f\x00", ("127.0.0.1", server.osc_port))
  _wait_for(lambda: server.osc.stats()["rejected"] - start["rejected"] >= 4,
            what="rejections")
  osc.send_message("/mrt/prompt", "techno:1, jazz:0.5")
  want = _expected(bundle, "techno:1, jazz:0.5")
  _wait_for(_embedding_is(session, want), what="OSC mix string")
  assert server.controller.snapshot()["cfg"] == 1.5
  osc.send_message("/mrt/cfg", 0.0)
  _wait_for(lambda: server.controller.snapshot()["cfg"] == 0.0,
            what="cfg back to 0")
  with _connect(server) as ws:  # the stream went on throughout
    _frames(ws, 2)


def test_hello_and_status_describe_vocab_and_input(live):
  _, session, server, _ = live
  with _connect(server) as ws:
    hello, _ = _recv(ws, _of_type("hello"))
    assert hello["vocab"] is None  # random-tiny's style model takes any text
    assert hello["input_modes"] == ["off", "free", "looper"]
    assert hello["input"]["mode"] == "off" and hello["input"]["available"]
    assert hello["max_transition_seconds"] == protocol.MAX_TRANSITION_SECONDS
    status, _ = _recv(ws, _of_type("status"))
    assert status["input"]["mode"] == "off"
    assert "control_delay_ms_p50" in status["session"]


def test_style_vocab():
  from mrt_distill.style.base import MinimalStyleModel

  class Closed:
    vocab = ("techno", "jazz")
  assert srv.style_vocab(Closed()) == ["techno", "jazz"]
  assert srv.style_vocab(None) is None
  assert srv.style_vocab(MinimalStyleModel.__new__(MinimalStyleModel)) is None

  class Text:
    vocab = "abc"  # not a word list
  assert srv.style_vocab(Text()) is None


def test_unknown_words_are_refused_with_suggestions():
  server = srv.StreamServer.__new__(srv.StreamServer)
  server.vocab = ["techno", "jazz", "flute", "drum_and_bass"]
  server.check_words((("techno", 1.0), ("drum and bass", 0.5),
                      ("jaz", 0.0)))  # a zero weight is not embedded
  with pytest.raises(protocol.ProtocolError, match=(
      r"prompt 'jaz flute': unknown word\(s\) 'jaz'; did you mean jazz\? "
      r"This style model knows 4 words")):
    server.check_words((("techno", 1.0), ("jaz flute", 0.5)))
  with pytest.raises(protocol.ProtocolError, match="'music': no style word"):
    server.check_words((("music", 1.0),))
  server.vocab = None  # a model that takes any text: nothing to check
  server.check_words((("jaz", 1.0),))


def test_osc_prompts_are_checked_against_the_word_list():
  from mrt_distill.serve.osc import OscServer
  got = []

  class Ctl:
    def set_prompts(self, rows):
      got.append(("prompt", rows))

    def transition(self, rows, seconds):
      got.append(("transition", rows, seconds))
  server = srv.StreamServer.__new__(srv.StreamServer)
  server.vocab = ["techno", "jazz"]
  osc = OscServer(Ctl(), port=0, check_words=server.check_words)
  try:
    osc._prompt("techno", 1.0, "jazz", 0.5)
    with pytest.raises(protocol.ProtocolError, match="did you mean jazz"):
      osc._prompt("techno:1, jaz:1")
    with pytest.raises(protocol.ProtocolError, match="did you mean techno"):
      osc._transition(4, "tecno")
    osc._transition(4, "jazz")
  finally:
    osc.close()
  assert got == [("prompt", (("techno", 1.0), ("jazz", 0.5))),
                 ("transition", (("jazz", 1.0),), 4)]


def _tone(n, sr, hz=440.0, amp=0.5):
  return (amp * np.sin(2 * np.pi * hz * np.arange(n) / sr)
          ).astype(np.float32)[:, None]


def test_input_frames_reach_the_session(live, monkeypatch):
  _, session, server, _ = live
  sr = session.sample_rate
  calls = []
  inject = session.inject_audio

  def spy(audio, *a, **kw):
    calls.append((np.array(audio), kw))
    return inject(audio, *a, **kw)
  monkeypatch.setattr(session, "inject_audio", spy)
  x = _tone(5 * 400, sr)
  with _connect(server) as ws, _connect(server) as other:
    ws.send(json.dumps({"type": "input", "mode": "free", "gain": 0.5}))
    _recv(ws, _of_type("ack"))
    # Switching on compiled the context re-encoder already (a warm-up on a
    # throwaway state), so the stream will not stall on it.
    compiled = session.stepper.context_compiles
    assert compiled >= 1
    for i in range(5):
      ws.send(protocol.encode_frame(x[i * 400:(i + 1) * 400], sr, i))
    _wait_for(lambda: server.live_input.snapshot()["frames"] == 5,
              what="five input frames")
    chunks_then = session.chunks
    fed = [c for c in calls if c[1].get("gain") == 0.5]
    np.testing.assert_array_equal(np.concatenate([a for a, _ in fed]), x)
    assert {kw["mode"] for _, kw in fed} == {"free"}
    assert session.stats()["inject_mode"] == "free"
    status, _ = _recv(ws, lambda m: _of_type("status")(m)
                      and m["input"]["frames"] == 5)
    assert status["input"]["mode"] == "free"
    assert status["input"]["source"] is not None
    assert -10 < status["input"]["level_db"] < -8  # 0.5 amplitude: -9 dB

    # Another page cannot talk over it: one error, then quiet drops.
    other.send(protocol.encode_frame(x[:400], sr, 0))
    err, _ = _recv(other, _of_type("error"))
    assert "is sending input now" in err["message"]
    # Mistakes get an error naming them; the stream goes on.
    for frame, want in [
        (protocol.encode_frame(x[:400], sr * 2, 5),
         f"the stream runs at {sr} Hz"),
        (b"MRTA" + b"\x00" * 3, "not an input audio frame")]:
      ws.send(frame)
      err, _ = _recv(ws, _of_type("error"))
      assert want in err["message"], err
    _wait_for(lambda: session.chunks > chunks_then + 2,
              what="chunks produced with the input")
    assert session.stepper.context_compiles == compiled
    ws.send(json.dumps({"type": "input", "mode": "off"}))
    _recv(ws, _of_type("ack"))
    _wait_for(lambda: session.stats()["inject_mode"] is None,
              what="injection off")
    _frames(ws, 2)


def test_osc_input_settings(live):
  from pythonosc.udp_client import SimpleUDPClient
  _, session, server, _ = live
  osc = SimpleUDPClient("127.0.0.1", server.osc_port)
  li = server.live_input
  rejected = server.osc.stats()["rejected"]
  osc.send_message("/mrt/input", ["looper", 0.75, 3])
  _wait_for(lambda: (li.mode, li.gain, li.loop_seconds) == ("looper", 0.75,
                                                           3.0),
            what="OSC input settings")
  osc.send_message("/mrt/input/gain", 0.25)
  osc.send_message("/mrt/input/loop", 1.5)
  _wait_for(lambda: (li.gain, li.loop_seconds) == (0.25, 1.5),
            what="OSC input gain and loop")
  for address, args in [("/mrt/input", "loud"), ("/mrt/input/gain", -1.0),
                        ("/mrt/input/loop", [1.0, 2.0]), ("/mrt/input", [])]:
    osc.send_message(address, args)
  _wait_for(lambda: server.osc.stats()["rejected"] - rejected >= 4,
            what="rejected OSC input messages")
  assert "takes <mode> [gain] [loop_seconds]" in \
      server.osc.stats()["last_error"]  # the last one: no arguments
  osc.send_message("/mrt/input", "off")
  _wait_for(lambda: li.mode == "off", what="OSC input off")
  assert (li.gain, li.loop_seconds) == (0.25, 1.5)


def test_play_stop(live):
  _, _, server, _ = live
  with _connect(server) as ws:
    _recv(ws, _is_audio)
    ws.send('{"type": "stop"}')
    _recv(ws, _of_type("ack"))
    _wait_for(lambda: not server.pump.playing, what="stop")
    time.sleep(0.3)
    sent = server.counters["chunks"]
    time.sleep(0.6)
    assert server.counters["chunks"] == sent  # nothing while stopped
    ws.send('{"type": "play"}')
    _recv(ws, _of_type("ack"))
    _recv(ws, _is_audio)


def test_http_page_and_origin_check(live):
  _, _, server, _ = live
  base = f"http://127.0.0.1:{server.port}"
  opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
  page = opener.open(base + "/", timeout=10).read().decode()
  assert "player.js" in page
  js = opener.open(base + "/pcm-worklet.js", timeout=10)
  assert "javascript" in js.headers["Content-Type"]
  assert b"registerProcessor" in js.read()
  for path in ("/server.py", "/../server.py", "/web/index.html"):
    with pytest.raises(urllib.error.HTTPError) as e:
      opener.open(base + path, timeout=10)
    assert e.value.code == 404
  from websockets.exceptions import InvalidStatus
  with pytest.raises(InvalidStatus) as e:
    _connect(server, origin="http://evil.example")
  assert e.value.response.status_code == 403
  with _connect(server, origin=f"http://localhost:{server.port}") as ws:
    _recv(ws, _of_type("hello"))


def test_max_clients(live):
  _, _, server, thread = live
  from websockets.exceptions import InvalidStatus
  with _connect(server) as ws:
    _recv(ws, _of_type("hello"))
    old = server.max_clients
    server.max_clients = 1
    try:
      with pytest.raises(InvalidStatus) as e:
        _connect(server)
      assert e.value.response.status_code == 503
    finally:
      server.max_clients = old


def test_cli_defaults_to_loopback():
  from mrt_distill import main
  args = main.build_parser().parse_args(["serve"])
  assert (args.host, args.port, args.osc_port, args.max_clients) == (
      "127.0.0.1", 8765, None, 64)
  assert args.fn is not None
  assert srv.is_loopback("127.0.0.1") and srv.is_loopback("::1")
  assert srv.is_loopback("localhost") and not srv.is_loopback("0.0.0.0")


def test_audio_after_the_loop_closes_is_dropped_not_raised():
  """The pump thread can deliver a chunk while the server shuts down: the
  loop closes between the is_closed() check and call_soon_threadsafe."""
  import asyncio

  class Racing:  # open when checked, closed when called
    def is_closed(self):
      return False

    def call_soon_threadsafe(self, *a):
      raise RuntimeError("Event loop is closed")

  server = srv.StreamServer.__new__(srv.StreamServer)
  closed = asyncio.new_event_loop()
  closed.close()
  for loop, want in ((None, False), (closed, False), (Racing(), False)):
    server._loop = loop
    assert server._call_soon(print) is want
  running = asyncio.new_event_loop()
  try:
    server._loop = running
    got = []
    assert server._call_soon(got.append, 1) is True
    running.call_soon(running.stop)
    running.run_forever()
    assert got == [1]
  finally:
    running.close()
