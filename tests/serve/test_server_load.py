"""Load test for `mrt-distill serve`: many listeners, some of them rude.

Why: test_server.py checks one client at a time. What breaks a live
instrument in front of an audience is the mix: dozens of pages listening,
tabs closed mid-stream without a goodbye, one stalled listener, junk on the
control socket, all while the one shared stream must keep time. Each of
these fails silently (a gap in someone else's audio, a handler that never
exits, a message that ends its connection or poisons every listener's audio
with NaN), so this test runs them together in one event loop against one
real server (the random-tiny student, loopback only) and checks:

  * well-behaved clients get every chunk index in order, with finite audio,
    nothing dropped for them, and the session counts 0 underruns;
  * every fuzzed message (random bytes, JSON of wrong types, huge numbers,
    NaN, deep nesting, oversized text) gets an error reply and its
    connection goes on; one message over the WebSocket library's 1 MiB
    limit closes only its own connection (1009);
  * the slow reader is dropped (the server's `disconnected_slow`) while the
    others keep playing, and clients that vanished are cleaned up (0
    clients at the end);
  * the process RSS stays under RSS_BOUND_MIB over the baseline taken after
    the server started. Server and clients share this process, so the bound
    covers both: a leaked outbox per aborted client, or an unbounded queue
    for the slow one, would show here;
  * the server binds 127.0.0.1 by default and caps messages at 64 KiB
    (error reply) and 1 MiB (WebSocket limit).

`test_load_small` (10 clients, >= 5 s of play) runs in the default suite.
It tightens only the slow-client limits (0.5 s outbox, 6 drops, 16 KiB send
buffer) so the slow reader is dropped within seconds; a smaller outbox only
makes gaps for the good clients more likely. `test_load_full` (50 clients,
the server's default settings, >= 30 s; at the defaults the slow reader
needs about 20 s to be dropped) is marked slow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import socket
import time
from collections.abc import Callable

import numpy as np
import pytest

from mrt_distill.info import rss_mib
from mrt_distill.serve import protocol
from mrt_distill.serve import server as srv

RSS_BOUND_MIB = 300.0
REPLY_TIMEOUT = 15.0  # seconds for one reply on a busy 2-core machine
SLOW_READ_SECONDS = 1.0  # the slow client reads one message per this
N_FUZZ = 42  # messages per fuzzing client (_fuzz_messages)


# ---- fuzzed control messages ---------------------------------------------------

def _junk(rng, depth=0):
  """A random JSON value (never a number: numbers are right somewhere)."""
  k = int(rng.integers(0, 6 if depth < 3 else 4))
  if k == 0:
    return None
  if k == 1:
    return bool(rng.integers(0, 2))
  if k in (2, 3):
    return "".join(chr(int(c)) for c in rng.integers(32, 0x2FFF,
                                                     int(rng.integers(0, 40))))
  if k == 4:
    return [_junk(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
  return {f"k{i}": _junk(rng, depth + 1) for i in range(int(rng.integers(0, 4)))}


def _fuzz_messages(rng) -> list[str | bytes]:
  """Control messages that must all be refused with an error reply."""
  big = 10**400  # beyond any float
  deep = 20_000  # past the JSON parser's recursion limit
  out: list[str | bytes] = [
      rng.bytes(int(rng.integers(1, 4096))),  # binary
      rng.bytes(512).decode("latin-1"),  # random text
      "",
      '{"type": "cfg", "value": NaN}',
      '{"type": "prompt", "prompts": [{"text": "a", "weight": Infinity}]}',
      '{"type": "weight", "index": 0, "weight": -Infinity}',
      '{"type": "cfg", "value": 1e999}',
      '{"type": "cfg", "value": 1e39}',  # finite double, inf as float32
      '{"type": "cfg", "value": -1}',
      f'{{"type": "cfg", "value": {big}}}',
      f'{{"type": "steps", "value": {big}}}',
      f'{{"type": "weight", "index": {big}, "weight": 1}}',
      f'{{"type": "weight", "index": 0, "weight": {big}}}',
      f'{{"type": "transition", "to": "techno:1", "seconds": {big}}}',
      '{"type": "steps", "value": ' + "9" * 5000 + "}",  # > int digit limit
      '{"type": "steps", "value": 1e300}',
      '{"type": "steps", "value": 0}',
      '{"type": "weight", "index": -1, "weight": 1}',
      "[" * deep + "]" * deep,
      '{"a": ' * (deep // 3) + "1" + "}" * (deep // 3),
      '{"type": "cfg", "value": ' + "[" * 900 + "]" * 900 + "}",
      '{"type": "prompt", "prompts": [' + "[" * 900 + "]" * 900 + "]}",
      json.dumps({"type": "prompt", "prompts": [
          {"text": "é" * (protocol.MAX_PROMPT_CHARS + 1), "weight": 1}]}),
      json.dumps({"type": "prompt", "prompts": [
          {"text": f"p{i}", "weight": 1}
          for i in range(protocol.MAX_PROMPTS + 1)]}),
      "x" * (protocol.MAX_MESSAGE_BYTES + 1),  # over our limit: an error reply
      json.dumps({"type": "prompt",  # just under the library's limit
                  "prompts": "a" * (protocol.PROTOCOL_MAX_BYTES - 64)}),
  ]
  fields = {"prompt": "prompts", "weight": "weight", "cfg": "value",
            "steps": "value", "transition": "seconds"}
  for _ in range(12):
    kind = str(rng.choice(list(fields)))
    msg = {"type": kind, fields[kind]: _junk(rng)}
    if kind == "weight":
      msg["index"] = 0
    if kind == "transition":
      msg["to"] = "techno:1"
    if kind == "prompt" and isinstance(msg["prompts"], (str, list)):
      msg["prompts"] = {"not": "a list"}  # a str or list could be valid
    out.append(json.dumps(msg))
  for _ in range(4):  # "type" that names nothing
    t = _junk(rng)
    out.append(json.dumps({"type": t if t not in protocol.COMMANDS else None}))
  assert len(out) == N_FUZZ
  order = rng.permutation(len(out))
  return [out[i] for i in order]


# ---- clients -------------------------------------------------------------------

@dataclasses.dataclass
class _Record:
  role: str
  indices: list = dataclasses.field(default_factory=list)
  nonfinite: int = 0
  errors: list = dataclasses.field(default_factory=list)
  last_you: dict | None = None
  hello: dict | None = None
  replies: list = dataclasses.field(default_factory=list)  # (msg, reply)
  close_code: int | None = None
  failure: str | None = None
  reconnects: int = 0


def _connect(url, **kw):
  from websockets.asyncio.client import connect
  kw.setdefault("open_timeout", 30)
  return connect(url, proxy=None, compression=None, **kw)


def _take(rec: _Record, msg) -> dict | None:
  """Book one received message; -> the JSON object, None for audio."""
  if isinstance(msg, bytes):
    head, audio = protocol.decode_frame(msg)
    rec.indices.append(head["index"])
    rec.nonfinite += int(not np.all(np.isfinite(audio)))
    return None
  obj = json.loads(msg)
  if obj["type"] == "status":
    rec.last_you = obj["you"]
  elif obj["type"] == "hello":
    rec.hello = obj
  return obj


async def _play_until(ws, rec: _Record, done: asyncio.Event) -> None:
  while not done.is_set():
    try:
      msg = await asyncio.wait_for(ws.recv(), 0.5)
    except asyncio.TimeoutError:
      continue
    obj = _take(rec, msg)
    if obj is not None and obj["type"] == "error":
      rec.errors.append(obj["message"])


async def _reply(ws, rec: _Record) -> dict:
  """Read until the next error/ack (audio and status are booked)."""
  deadline = time.monotonic() + REPLY_TIMEOUT
  while True:
    msg = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
    obj = _take(rec, msg)
    if obj is not None and obj["type"] in ("error", "ack"):
      return obj


async def _listener(url, rec: _Record, done: asyncio.Event) -> None:
  async with _connect(url) as ws:
    await _play_until(ws, rec, done)
    await ws.send('{"type": "status"}')
    while (await _reply(ws, rec))["type"] != "ack":
      pass
    while True:  # the status follows its ack
      if (_take(rec, await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
          or {}).get("type") == "status":
        break


async def _quitter(url, rec: _Record, done: asyncio.Event, rng) -> None:
  """Listens a few chunks, then drops the TCP connection without a close
  frame (a tab killed, a laptop lid shut), again and again."""
  while not done.is_set():
    ws = await _connect(url)
    want = int(rng.integers(2, 12))
    got = 0
    while got < want:
      got += isinstance(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT),
                        bytes)
    ws.transport.abort()
    rec.reconnects += 1
    await asyncio.sleep(float(rng.uniform(0, 0.3)))


async def _fuzzer(url, rec: _Record, done: asyncio.Event, rng,
                  oversize: bool) -> None:
  from websockets.exceptions import ConnectionClosed
  async with _connect(url) as ws:
    for msg in _fuzz_messages(rng):
      await ws.send(msg)
      try:
        reply = await _reply(ws, rec)
      except (ConnectionClosed, asyncio.TimeoutError) as e:
        rec.failure = f"{type(e).__name__} after {msg[:60]!r}"
        return
      rec.replies.append((msg, reply))
    if oversize:  # over the library's limit: only this connection closes
      await ws.send("x" * (protocol.PROTOCOL_MAX_BYTES + 1))
      try:
        while True:
          await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
      except ConnectionClosed as e:
        rec.close_code = e.rcvd.code if e.rcvd is not None else None
      return
    rec.indices.clear()  # from here on it is a listener like the others
    await _play_until(ws, rec, done)
    while len(rec.indices) < 3:  # and its connection still plays
      _take(rec, await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))


async def _slow(url, port, rec: _Record, dropped: Callable) -> None:
  """Reads one message per SLOW_READ_SECONDS through a tiny receive window
  (a stalled tab), then drains fast once the server says it was dropped."""
  from websockets.exceptions import ConnectionClosed
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
  sock.setblocking(False)
  await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
  async with _connect(url, sock=sock, max_queue=1) as ws:
    try:
      while True:
        msg = await asyncio.wait_for(ws.recv(), 60)
        if isinstance(msg, bytes):
          rec.indices.append(protocol.decode_frame(msg)[0]["index"])
        if not dropped():
          await asyncio.sleep(SLOW_READ_SECONDS)
    except ConnectionClosed as e:
      rec.close_code = e.rcvd.code if e.rcvd is not None else 1006


# ---- the run ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def student():
  from mrt_distill.serve.bundle import load_student
  bundle = load_student("random-tiny")
  return bundle, bundle.stepper(max_steps=2)  # compiled once for both tests


def _run(student, *, clients: int, quitters: int, fuzzers: int,
         min_seconds: float, max_seconds: float, **server_kw) -> None:
  from mrt_distill.serve.session import StreamSession
  bundle, stepper = student
  session = StreamSession(stepper, bundle.params, bundle.style_model,
                          prompt="techno:1.0")
  session.next_chunk()  # compile (once per stepper) before the clock starts
  # Default host, default message limits; port 0 picks a free port.
  server = srv.StreamServer(session, port=0, autoplay=True, **server_kw)
  with srv.ServerThread(server) as thread:
    assert server.host == "127.0.0.1"
    assert server._server.sockets[0].getsockname()[0] == "127.0.0.1"
    url = f"ws://127.0.0.1:{server.port}/ws"
    rss0 = rss_mib()
    good = clients - quitters - fuzzers - 1
    recs = ([_Record("good") for _ in range(good)]
            + [_Record("quitter") for _ in range(quitters)]
            + [_Record("fuzzer") for _ in range(fuzzers)]
            + [_Record("slow")])
    peak = [rss0]
    t_run = [0.0]

    def dropped():
      return server.counters["disconnected_slow"] > 0

    async def main():
      done = asyncio.Event()
      t0 = time.monotonic()

      async def watch():  # RSS samples; the end of the run
        while not done.is_set():
          peak[0] = max(peak[0], rss_mib())
          t = time.monotonic() - t0
          if (t >= min_seconds and dropped()) or t >= max_seconds:
            t_run[0] = t
            done.set()
          await asyncio.sleep(0.2)

      rng = np.random.default_rng(0)
      tasks = []
      for r in recs:
        sub = np.random.default_rng(rng.integers(2**31))
        if r.role == "good":
          tasks.append(_listener(url, r, done))
        elif r.role == "quitter":
          tasks.append(_quitter(url, r, done, sub))
        elif r.role == "fuzzer":
          tasks.append(_fuzzer(url, r, done, sub,
                               oversize=r is recs[good + quitters]))
        else:
          tasks.append(_slow(url, server.port, r, dropped))
      results = await asyncio.gather(watch(), *tasks, return_exceptions=True)
      for r, res in zip([None] + recs, results):
        if isinstance(res, BaseException):
          raise AssertionError(f"a {r and r.role} client failed: {res!r}") \
              from res

    asyncio.run(main())
    deadline = time.monotonic() + 15
    while thread.call(lambda: server.stats()["clients"]) > 0:
      assert time.monotonic() < deadline, "clients left behind on the server"
      time.sleep(0.1)
    stats = thread.call(server.stats)

  chunk_s = session.chunk_seconds
  print(f"\nload: {clients} clients, {t_run[0]:.1f} s, "
        f"{stats['chunks']} chunks sent, RSS {rss0:.0f} -> peak "
        f"{peak[0]:.0f} MiB, counters {dict(server.counters)}")
  assert t_run[0] < max_seconds, "the slow client was never dropped"
  assert stats["session"]["underruns"] == 0, stats["session"]
  assert stats["pump_errors"] == 0 and stats["session"]["errors"] == 0
  fuzz = [r for r in recs if r.role == "fuzzer"]
  listeners = [r for r in recs if r.role == "good"] + fuzz[1:]
  for r in listeners:
    assert r.failure is None, r.failure
    idx = r.indices
    assert len(idx) >= (0.5 * min_seconds / chunk_s if r.role == "good"
                        else 3), (r.role, len(idx))
    assert idx == list(range(idx[0], idx[0] + len(idx))), (
        f"{r.role} client: gaps in {idx}")
    assert r.nonfinite == 0, "NaN/inf audio reached a listener"
  for r in recs:
    if r.role == "good":
      assert r.errors == [] and r.last_you["dropped"] == 0, r
      assert r.hello["max_message_bytes"] == protocol.MAX_MESSAGE_BYTES
  # Fuzz: each message got an error (nothing was applied), the connection
  # stayed, and only the message over the library limit closed one (1009).
  for r in fuzz:
    assert r.failure is None, r.failure
    assert len(r.replies) == N_FUZZ, (len(r.replies), N_FUZZ)
    accepted = [m[:80] for m, reply in r.replies if reply["type"] != "error"]
    assert not accepted, f"fuzzed messages were applied: {accepted}"
  assert fuzz[0].close_code == 1009
  assert server.counters["errors"] >= sum(len(r.replies) for r in fuzz)
  quit_ = [r for r in recs if r.role == "quitter"]
  assert all(r.reconnects >= 1 for r in quit_)
  # The slow client, and only it, was dropped; it had stopped getting audio.
  slow = recs[-1]
  assert server.counters["disconnected_slow"] == 1
  assert slow.close_code in (1008, 1006), slow.close_code
  assert len(slow.indices) < stats["chunks"] - 10
  assert peak[0] - rss0 < RSS_BOUND_MIB, (rss0, peak[0])


def test_defaults_bind_loopback_and_cap_messages():
  params = inspect.signature(srv.StreamServer).parameters
  assert params["host"].default == "127.0.0.1"
  assert params["max_clients"].default == 64
  assert protocol.MAX_MESSAGE_BYTES == 64 * 1024
  assert protocol.PROTOCOL_MAX_BYTES == 1024 * 1024


def test_load_small(student):
  _run(student, clients=10, quitters=2, fuzzers=2, min_seconds=5,
       max_seconds=40, queue_seconds=0.5, max_drop_streak=6,
       send_buffer_bytes=16 * 1024)


@pytest.mark.slow
def test_load_full(student):
  _run(student, clients=50, quitters=6, fuzzers=3, min_seconds=30,
       max_seconds=90)
