"""`mrt-distill serve`: a local WebSocket server, web player and OSC control
for one live student stream.

  mrt-distill serve --checkpoint reference            # then open the URL
  mrt-distill serve --checkpoint runs/ref --osc-port 9000

Why it is shaped this way:
- One process, one port. The page, its scripts and the audio/control
  WebSocket share `--port` (the `websockets` package answers plain GETs in
  `process_request`), so a musician runs one command and opens one URL.
- One shared stream. Every page (and every OSC sender) steers the same
  `StreamSession`: it is one instrument, and several pages are several
  listeners or performers. Play/stop is the server's transport.
- The server keeps time. A pump thread reads the session at real-time pace
  (after a short prebuffer) and fans each chunk out to every client. A page
  never asks for audio, so a page that stalls cannot slow anyone else.
- Slow clients cannot hurt the others. Each client has a bounded outbox; when
  its socket stops draining, the oldest queued chunks are dropped (counted)
  and, after `max_drop_streak` drops without catching up, the client is
  disconnected (close code 1008). Other clients never wait on it.
- Controls are validated before they reach the session, and every mistake
  (bad JSON, unknown type, bad value, a message over 64 KiB) gets an
  `{"type": "error"}` reply naming it; the connection and the stream go on.
- Loopback by default. The stream can be steered by anyone who can reach the
  port, so the server binds 127.0.0.1 unless told otherwise (with a warning),
  and WebSocket handshakes from other web origins are refused (a page on
  another site must not be able to drive the local instrument).

The protocol (binary audio frames, JSON control and status messages) is in
docs/serving.md. The parts that need no network are plain classes in their
own modules, tested without a browser: message parsing and frame encoding
(`protocol`), the controller shared with OSC (`controller`), the real-time
pump and client outboxes (`pump`), the musician's input audio into the
session's injection (`live_input`; binary frames from a page, settings from
the page and OSC). The command line is `server_cli`. None
of them imports JAX at the top level: `mrt-distill` builds its parser from
`server_cli`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
import json
import logging
import math
import mimetypes
import pathlib
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from mrt_distill.serve.controller import Controller
from mrt_distill.serve.live_input import LiveInput
from mrt_distill.serve.protocol import FORMATS
from mrt_distill.serve.protocol import FRAME_HEADER
from mrt_distill.serve.protocol import FRAME_VERSION
from mrt_distill.serve.protocol import INPUT_MODES
from mrt_distill.serve.protocol import MAX_MESSAGE_BYTES
from mrt_distill.serve.protocol import MAX_PROMPTS
from mrt_distill.serve.protocol import MAX_TRANSITION_SECONDS
from mrt_distill.serve.protocol import PROTOCOL_MAX_BYTES
from mrt_distill.serve.protocol import ProtocolError
from mrt_distill.serve.protocol import Rows
from mrt_distill.serve.protocol import encode_frame
from mrt_distill.serve.protocol import parse_message
from mrt_distill.serve.protocol import rows_from_mix
from mrt_distill.serve.pump import Outbox
from mrt_distill.serve.pump import Pump
from mrt_distill.serve.pump import level

log = logging.getLogger(__name__)

WEB_DIR = pathlib.Path(__file__).with_name("web")
WS_PATH = "/ws"


# ---- the server --------------------------------------------------------------

def is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host.strip("[]")).is_loopback
  except ValueError:
    return False


def origin_allowed(origin: str | None, host_header: str | None,
                   bound_host: str, port: int,
                   allowed: Sequence[str] = ()) -> bool:
  """May a web page from `origin` open the WebSocket?

  Yes for non-browsers (no Origin), for `allowed` (--allow-origin), and for
  pages this server served: same port and the bound address (on loopback,
  any loopback name: localhost and 127.0.0.1 are the same machine). Bound
  to all interfaces, the page's host must be an IP literal equal to the
  Host it connects to: a DNS name could be rebound to this machine by
  another site, so names need --allow-origin.
  """
  if origin is None:
    return True
  if origin in allowed:
    return True
  parts = urlsplit(origin)
  try:
    origin_port = parts.port
  except ValueError:
    return False
  if parts.scheme not in ("http", "https") or origin_port != port:
    return False
  host = parts.hostname or ""
  bound = bound_host.strip("[]")
  if host == bound or (is_loopback(bound) and is_loopback(host)):
    return True
  if bound in ("0.0.0.0", "::", ""):
    try:
      ipaddress.ip_address(host)
    except ValueError:
      return False
    return urlsplit(f"//{host_header or ''}").hostname == host
  return False


@dataclasses.dataclass(eq=False)
class _Client:
  ws: Any
  fmt: str
  outbox: Outbox
  wake: asyncio.Event
  peer: str
  errors: int = 0
  closing: bool = False


class StreamServer:
  """HTTP (static page) + WebSocket (audio out, controls in) + optional OSC
  around one StreamSession. Use inside an asyncio loop (`start`, `close`,
  `serve_forever`) or through `ServerThread`."""

  def __init__(self, session, *, prompt: str | Rows = "techno:1.0",
               cfg_weight: float = 0.0, steps: int = 1,
               host: str = "127.0.0.1", port: int = 8765,
               osc_host: str | None = None, osc_port: int | None = None,
               max_clients: int = 64, queue_seconds: float = 4.0,
               max_drop_streak: int | None = None,
               prebuffer_seconds: float = 0.3, status_interval: float = 1.0,
               allowed_origins: Sequence[str] = (),
               max_steps: int | None = None,
               send_buffer_bytes: int | None = 128 * 1024,
               autoplay: bool = False, web_dir: pathlib.Path = WEB_DIR):
    self.session = session
    self.host, self._port = host, port
    self.osc_host = osc_host if osc_host is not None else host
    self.osc_port = osc_port
    self.max_clients = max_clients
    self.status_interval = status_interval
    if max_steps is None:  # the compiled step's limit, when it says
      max_steps = getattr(getattr(session, "stepper", None), "max_steps", None)
    self.max_steps = max_steps
    self.send_buffer_bytes = send_buffer_bytes
    self.autoplay = autoplay
    self.web_dir = pathlib.Path(web_dir)
    self.allowed_origins = set(allowed_origins)
    chunk_s = session.chunk_samples / session.sample_rate
    self.queue_chunks = max(4, math.ceil(queue_seconds / chunk_s))
    self.max_drop_streak = (max_drop_streak if max_drop_streak is not None
                            else 2 * self.queue_chunks)
    self.prebuffer_chunks = max(2, math.ceil(prebuffer_seconds / chunk_s))
    rows = rows_from_mix(prompt) if isinstance(prompt, str) else prompt
    self.pump = Pump(session, self._on_audio,
                     prebuffer_chunks=self.prebuffer_chunks)
    self.controller = Controller(session, rows, cfg_weight=cfg_weight,
                                 steps=steps, transport=self.pump,
                                 on_change=self._on_change)
    self.live_input = LiveInput(session, on_change=self._on_change)
    self.vocab = style_vocab(getattr(session, "style_model", None))
    self.osc = None
    self._clients: set[_Client] = set()
    self._loop: asyncio.AbstractEventLoop | None = None
    self._server = None
    self._status_task = None
    self._level = {"peak": 0.0, "rms_db": -120.0}
    self._status_pending = threading.Event()
    self.counters = collections.Counter()

  # ---- lifecycle -----------------------------------------------------------
  @property
  def port(self) -> int:
    return self._port

  @property
  def url(self) -> str:
    host = f"[{self.host}]" if ":" in self.host else self.host
    return f"http://{host}:{self._port}/"

  async def start(self) -> None:
    from websockets.asyncio.server import serve
    self._loop = asyncio.get_running_loop()
    self._files = self._static_files()
    self._server = await serve(
        self._handler, self.host, self._port,
        process_request=self._process_request,
        max_size=PROTOCOL_MAX_BYTES, compression=None,
        write_limit=64 * 1024, ping_interval=20, ping_timeout=20,
        close_timeout=2, server_header=None)
    self._port = self._server.sockets[0].getsockname()[1]
    if self.osc_port is not None:
      from mrt_distill.serve.osc import OscServer
      self.osc = OscServer(self.controller, self.osc_host, self.osc_port,
                           live_input=self.live_input,
                           check_words=self.check_words)
      self.osc.start()
      self.osc_port = self.osc.port
    self._status_task = asyncio.create_task(self._status_loop())
    if self.autoplay:
      self.controller.play()

  async def close(self) -> None:
    if self._status_task is not None:
      self._status_task.cancel()
    if self.osc is not None:
      self.osc.close()
    await asyncio.to_thread(self.pump.close)
    if self._server is not None:
      self._server.close()
      await self._server.wait_closed()

  async def serve_forever(self) -> None:
    await self.start()
    try:
      await asyncio.Future()  # until cancelled (Ctrl-C)
    finally:
      await self.close()

  # ---- HTTP ----------------------------------------------------------------
  def _static_files(self) -> dict[str, pathlib.Path]:
    """URL path -> file: exactly the files in web/, nothing else."""
    files = {"/" + p.name: p for p in sorted(self.web_dir.iterdir())
             if p.is_file() and not p.name.startswith(".")}
    if "/index.html" in files:
      files["/"] = files["/index.html"]
    return files

  def _process_request(self, connection, request):
    from websockets.datastructures import Headers
    from websockets.http11 import Response
    path = urlsplit(request.path).path
    if path == WS_PATH:
      if not origin_allowed(request.headers.get("Origin"),
                            request.headers.get("Host"), self.host,
                            self._port, self.allowed_origins):
        self.counters["rejected_origin"] += 1
        log.warning("refused a WebSocket from origin %r",
                    request.headers.get("Origin"))
        return connection.respond(403, "WebSocket origin not allowed\n")
      if len(self._clients) >= self.max_clients:
        self.counters["rejected_full"] += 1
        return connection.respond(
            503, f"server full ({self.max_clients} clients)\n")
      return None  # the WebSocket handshake
    f = self._files.get(path)
    if f is None:
      return connection.respond(404, f"not found: {path}\n")
    ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype.endswith("javascript"):
      ctype += "; charset=utf-8"
    body = f.read_bytes()
    return Response(200, "OK", Headers([
        ("Content-Type", ctype), ("Content-Length", str(len(body))),
        ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"),
        ("Connection", "close")]), body)

  # ---- WebSocket -----------------------------------------------------------
  def hello(self, fmt: str) -> dict:
    s = self.session
    return {"type": "hello", "protocol": FRAME_VERSION,
            "sample_rate": int(s.sample_rate), "channels": int(s.channels),
            "chunk_samples": int(s.chunk_samples), "format": fmt,
            "header_bytes": FRAME_HEADER.size,
            "prebuffer_chunks": self.prebuffer_chunks,
            "max_message_bytes": MAX_MESSAGE_BYTES,
            "max_prompts": MAX_PROMPTS, "max_steps": self.max_steps,
            "max_transition_seconds": MAX_TRANSITION_SECONDS,
            "vocab": self.vocab, "input_modes": list(INPUT_MODES),
            "input": self.live_input.snapshot(),
            **self.controller.snapshot()}

  async def _handler(self, ws) -> None:
    query = parse_qs(urlsplit(ws.request.path).query)
    fmt = query.get("format", ["float32"])[0]
    peer = "%s:%s" % tuple(ws.remote_address[:2]) if ws.remote_address else "?"
    client = _Client(ws, fmt if fmt in FORMATS else "float32",
                     Outbox(self.queue_chunks, self.max_drop_streak),
                     asyncio.Event(), peer)
    self._bound_send_buffer(ws)
    self._clients.add(client)
    self.counters["connected"] += 1
    log.info("client %s connected (%d now)", peer, len(self._clients))
    self._send_json(client, self.hello(client.fmt))
    if fmt not in FORMATS:
      self._send_json(client, _error(f"format {fmt!r} is not one of "
                                     f"{list(FORMATS)}; sending float32"))
    sender = asyncio.create_task(self._sender(client))
    try:
      async for message in ws:
        await self._on_message(client, message)
    except Exception as e:  # noqa: BLE001 -- any failure ends this client only
      from websockets.exceptions import ConnectionClosed
      if not isinstance(e, ConnectionClosed):
        log.exception("client %s failed", peer)
    finally:
      self._clients.discard(client)
      self.live_input.release(client)
      sender.cancel()
      log.info("client %s left (%d now)", peer, len(self._clients))

  def _bound_send_buffer(self, ws) -> None:
    """Cap the kernel's send buffer for this socket.

    Left alone, Linux grows it to megabytes for a peer that stops reading:
    seconds of stale audio piled up where the outbox cannot drop it, and a
    stalled client noticed only much later. Audio needs little bandwidth,
    so a small fixed buffer costs nothing."""
    sock = ws.transport.get_extra_info("socket") if ws.transport else None
    if sock is None or not self.send_buffer_bytes:
      return
    try:
      sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                      int(self.send_buffer_bytes))
    except OSError as e:
      log.debug("could not set SO_SNDBUF: %s", e)

  async def _on_message(self, client: _Client, message) -> None:
    if isinstance(message, (bytes, bytearray, memoryview)):
      await self._on_input_frame(client, message)
      return
    try:
      cmd = parse_message(message)
      if cmd.kind in ("prompt", "transition"):
        self.check_words(cmd.rows + (cmd.from_rows or ()))
      if cmd.kind == "input":
        await asyncio.to_thread(self.live_input.configure, cmd.mode,
                                cmd.value, cmd.seconds)
      elif cmd.kind != "status":
        # Embedding a new prompt may take a while: keep the loop free.
        await asyncio.to_thread(self.controller.apply, cmd)
    except ValueError as e:  # ProtocolError, or the session's own check
      client.errors += 1
      self.counters["errors"] += 1
      self._send_json(client, _error(str(e)))
      return
    self._send_json(client, {"type": "ack", "request": cmd.kind})
    if cmd.kind == "status":
      client.outbox.push_status(json.dumps(self.status(client)))
      client.wake.set()

  def check_words(self, rows: Rows) -> None:
    """A style model with a word list drops words it does not know with
    only a log warning, so a typo would silently change the music: refuse
    the prompt instead, naming the word and its nearest known ones."""
    if not self.vocab:
      return
    import difflib

    from mrt_distill.style.text_parsing import parse_text
    for text, weight in rows:
      if weight <= 0:
        continue  # not embedded
      known, unknown = parse_text(text, self.vocab)
      if unknown or not known:
        near = sorted({w for u in unknown for w in
                       difflib.get_close_matches(u, self.vocab, 3, 0.6)})
        raise ProtocolError(
            f"prompt {text!r}: "
            + (f"unknown word(s) {', '.join(map(repr, unknown))}"
               if unknown else "no style word")
            + (f"; did you mean {', '.join(near)}?" if near else "")
            + f" This style model knows {len(self.vocab)} words (the "
            f"chips on the page, `vocab` in the hello message)")

  async def _on_input_frame(self, client: _Client, frame) -> None:
    """The musician's audio (a binary frame): into the session's context;
    only mistakes get a reply (an ack per frame would double the chatter)."""
    try:
      # inject_audio waits for the session's control lock: off the loop.
      await asyncio.to_thread(self.live_input.feed, client, frame,
                              client.peer)
    except ValueError as e:
      client.errors += 1
      self.counters["errors"] += 1
      self._send_json(client, _error(str(e)))

  async def _sender(self, client: _Client) -> None:
    try:
      while True:
        msg = client.outbox.pop()
        if msg is None:
          client.wake.clear()
          await client.wake.wait()
          continue
        await client.ws.send(msg)
    except asyncio.CancelledError:
      raise
    except Exception:  # noqa: BLE001 -- a closed socket ends the sender
      pass

  def _send_json(self, client: _Client, msg: dict) -> None:
    client.outbox.push_control(json.dumps(msg))
    client.wake.set()

  async def _drop_slow(self, client: _Client) -> None:
    self.counters["disconnected_slow"] += 1
    log.warning("client %s is too slow (%d chunks dropped); disconnecting",
                client.peer, client.outbox.dropped)
    self._clients.discard(client)
    reason = f"too slow: {client.outbox.dropped} audio chunks dropped"
    try:
      await asyncio.wait_for(client.ws.close(1008, reason), timeout=2.0)
    except Exception:  # noqa: BLE001 -- a stuck socket is cut instead
      pass
    if client.ws.transport is not None and not client.ws.transport.is_closing():
      client.ws.transport.abort()

  # ---- fan-out (pump thread -> loop) ----------------------------------------
  def _on_audio(self, audio: np.ndarray, index: int) -> None:
    lvl = level(audio)
    sr = self.session.sample_rate
    frames = {fmt: encode_frame(audio, sr, index, fmt) for fmt in FORMATS}
    self._call_soon(self._fan_out, frames, lvl)

  def _call_soon(self, fn, *args) -> bool:
    """Queue fn(*args) on the server's loop from another thread; False
    when the loop is gone. The loop can close between the check and the
    call (server shutting down while the pump delivers a chunk), which
    asyncio reports as RuntimeError: then the chunk is dropped."""
    loop = self._loop
    if loop is None or loop.is_closed():
      return False
    try:
      loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # "Event loop is closed"
      return False
    return True

  def _fan_out(self, frames: dict[str, bytes], lvl: dict) -> None:
    self._level = lvl
    self.counters["chunks"] += 1
    for client in list(self._clients):
      if client.closing:
        continue
      client.outbox.push_audio(frames[client.fmt])
      client.wake.set()
      if client.outbox.too_slow:
        client.closing = True
        asyncio.ensure_future(self._drop_slow(client))

  def _on_change(self) -> None:
    """A control changed (any thread): one status broadcast soon, however
    many changes a moving slider makes in the meantime."""
    loop = self._loop
    if loop is None or self._status_pending.is_set():
      return
    self._status_pending.set()
    if not self._call_soon(loop.call_later, 0.05, self._broadcast_status):
      self._status_pending.clear()

  # ---- status --------------------------------------------------------------
  def stats(self) -> dict:
    """Server-side numbers: clients, drops, errors, the session's stats."""
    try:
      session = dict(self.session.stats())
    except Exception as e:  # noqa: BLE001 -- status must not kill the loop
      session = {"error": str(e)}
    return {"clients": len(self._clients), **dict(self.counters),
            "pump_errors": self.pump.errors,
            "osc": self.osc.stats() if self.osc is not None else None,
            "session": _jsonable(session)}

  def status(self, client: _Client | None = None,
             base: dict | None = None) -> dict:
    """The status message (for `client`: with its own numbers)."""
    if base is None:
      st = self.stats()
      base = {"type": "status", **self.controller.snapshot(),
              "level": self._level, "clients": st["clients"],
              "underruns": st["session"].get("underruns"),
              "input": self.live_input.snapshot(),
              "session": st["session"]}
    if client is None:
      return base
    return {**base, "you": {"dropped": client.outbox.dropped,
                            "errors": client.errors,
                            "queued": len(client.outbox)}}

  def _broadcast_status(self) -> None:
    self._status_pending.clear()
    base = self.status()
    for client in list(self._clients):
      if not client.closing:
        client.outbox.push_status(json.dumps(self.status(client, base)))
        client.wake.set()

  async def _status_loop(self) -> None:
    while True:
      await asyncio.sleep(self.status_interval)
      try:
        self._broadcast_status()
      except Exception:  # noqa: BLE001
        log.exception("status broadcast failed")


def style_vocab(style_model) -> list[str] | None:
  """The words a style model knows (its closed `vocab`), for the page's
  chips and typing help; None for one that embeds any text (MusicCoCa,
  the random-tiny student's minimal model)."""
  vocab = getattr(style_model, "vocab", None)
  if not vocab or isinstance(vocab, str):
    return None
  return [str(w) for w in vocab]


def _error(message: str) -> dict:
  return {"type": "error", "message": message}


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if x is None or isinstance(x, (bool, int, float, str)):
    return x
  return str(x)


class ServerThread:
  """A StreamServer on its own event loop in a daemon thread (tests, notebooks).

    with ServerThread(StreamServer(session, port=0)) as srv:
      print(srv.server.url)
  """

  def __init__(self, server: StreamServer):
    self.server = server
    self._loop = asyncio.new_event_loop()
    self._ready = threading.Event()
    self._error: BaseException | None = None
    self._thread = threading.Thread(target=self._run, name="mrt-serve-loop",
                                    daemon=True)

  def _run(self) -> None:
    asyncio.set_event_loop(self._loop)
    try:
      self._loop.run_until_complete(self.server.start())
    except BaseException as e:  # noqa: BLE001 -- reported to start()
      self._error = e
      self._ready.set()
      return
    self._ready.set()
    self._loop.run_forever()
    self._loop.run_until_complete(self.server.close())
    self._loop.close()

  def start(self, timeout: float = 30.0) -> "ServerThread":
    self._thread.start()
    if not self._ready.wait(timeout):
      raise TimeoutError("the server did not start in time")
    if self._error is not None:
      raise self._error
    return self

  def call(self, fn: Callable[[], Any], timeout: float = 10.0):
    """Run fn() on the server's loop and return its result."""
    async def wrap():
      return fn()
    return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout)

  def stop(self) -> None:
    if self._thread.is_alive():
      self._loop.call_soon_threadsafe(self._loop.stop)
      self._thread.join(timeout=15)

  def __enter__(self) -> "ServerThread":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()
