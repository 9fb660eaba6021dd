"""The command line of `mrt-distill serve`: flags, checks that fail in a
second (a bad prompt, a busy port) before the student loads, then the server
until Ctrl-C. The server itself is `mrt_distill.serve.server`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket

from mrt_distill.serve.protocol import rows_from_mix
from mrt_distill.serve.protocol import rows_to_mix
from mrt_distill.serve.server import WS_PATH
from mrt_distill.serve.server import StreamServer
from mrt_distill.serve.server import is_loopback

log = logging.getLogger("mrt_distill.serve.server")


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--checkpoint", default="reference",
                 help="'reference' (the shipped student, default), "
                      "'random-tiny', a distill workdir (WORKDIR@STEP: its "
                      "checkpoint at that step) or a student .npz")
  p.add_argument("--host", default="127.0.0.1",
                 help="address to bind (default 127.0.0.1: this machine "
                      "only; anything else exposes the stream, with a warning)")
  p.add_argument("--port", type=int, default=8765,
                 help="HTTP + WebSocket port (default 8765)")
  p.add_argument("--osc-port", type=int, default=None,
                 help="UDP port for OSC control, e.g. 9000 (default: no OSC)")
  p.add_argument("--osc-host", default=None,
                 help="address for OSC to bind (default: --host)")
  p.add_argument("--max-clients", type=int, default=64,
                 help="WebSocket clients at once (default 64)")
  p.add_argument("--prompt", default="techno:1.0",
                 help='initial weighted prompt mix, e.g. "techno:1, flute:0.5"')
  p.add_argument("--cfg", type=float, default=None,
                 help="initial classifier-free guidance weight (default: "
                      "the student's config, student.cfg_weight)")
  p.add_argument("--steps", type=int, default=1,
                 help="initial student steps per chunk (default 1)")
  p.add_argument("--max-steps", type=int, default=4,
                 help="largest --steps the page may choose (compiled once)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--lead-chunks", type=int, default=2,
                 help="chunks the producer keeps ready ahead of playback")
  p.add_argument("--allow-origin", action="append", default=[],
                 help="extra web origin allowed to open the WebSocket "
                      "(repeatable), e.g. http://mybox.local:8080")
  p.add_argument("--play", action="store_true",
                 help="start playing at once (for OSC-only use)")


def _warn_exposed(what: str, host: str) -> None:
  if not is_loopback(host):
    log.warning("%s binds %s, not loopback: anyone who can reach this "
                "address can hear and steer the stream (there is no "
                "authentication). Use --host 127.0.0.1 unless you mean it.",
                what, host)


def _check_bindable(host: str, port: int, what: str,
                    kind: int = socket.SOCK_STREAM) -> None:
  """Fail in a second, not after loading the student, on a busy port."""
  if not port:
    return
  try:
    infos = socket.getaddrinfo(host, port, type=kind)
  except socket.gaierror as e:
    raise ValueError(f"{what}: cannot resolve host {host!r}: {e}") from None
  family, _, _, _, addr = infos[0]
  with socket.socket(family, kind) as s:
    if kind == socket.SOCK_STREAM:  # as asyncio's create_server does
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind(addr)
    except OSError as e:
      raise ValueError(f"{what}: cannot listen on {host}:{port} "
                       f"({e.strerror}); is another server running? Pick "
                       f"another port") from None


# Upper bounds of the size arguments, and why.
MAX_CLIENTS = 1024  # each client is sent its own copy of every chunk
MAX_LEAD_CHUNKS = 16  # each chunk kept ready adds a chunk of control delay


def _check_range(flag: str, value, lo, hi, why: str = "") -> None:
  import math
  ok = isinstance(value, (int, float)) and math.isfinite(value) and (
      lo <= value <= hi)
  if not ok:
    raise ValueError(f"{flag} {value}: must be in {lo}..{hi}"
                     + (f" ({why})" if why else ""))


def check_args(args) -> None:
  """Every number the command takes, before anything loads."""
  from mrt_distill.serve.generate import MAX_STEPS
  _check_range("--max-steps", args.max_steps, 1, MAX_STEPS,
               "each step is one more network pass per chunk; the chunk "
               "step is compiled for this many")
  if not 1 <= args.steps <= args.max_steps:
    raise ValueError(f"--steps {args.steps} must be in 1..--max-steps "
                     f"{args.max_steps}")
  _check_range("--port", args.port, 0, 65535, "a TCP port; 0 picks a free "
               "one")
  if args.osc_port is not None:
    _check_range("--osc-port", args.osc_port, 1, 65535, "a UDP port")
  _check_range("--max-clients", args.max_clients, 1, MAX_CLIENTS,
               "each client is sent its own copy of every chunk")
  _check_range("--lead-chunks", args.lead_chunks, 1, MAX_LEAD_CHUNKS,
               "each chunk kept ready adds one chunk of delay before a "
               "control change is heard")
  if args.seed < 0:
    raise ValueError(f"--seed {args.seed}: must be an integer >= 0")
  if args.cfg is not None:
    _check_range("--cfg", args.cfg, 0.0, 100.0, "the guidance weight; 0 = "
                 "no guidance, 1-8 is typical")


def run(args) -> int:
  logging.getLogger("websockets").setLevel(logging.WARNING)
  check_args(args)
  _warn_exposed("the web server", args.host)
  osc_host = args.osc_host if args.osc_host is not None else args.host
  if args.osc_port is not None:
    _warn_exposed("OSC", osc_host)
  rows = rows_from_mix(args.prompt)  # fail on a bad prompt before loading
  from mrt_distill.serve.generate import check_prompt_words, early_vocab
  vocab = early_vocab(args.checkpoint)
  if vocab is not None:  # unknown words, before the student loads
    check_prompt_words(vocab, args.prompt, "--prompt")
  _check_bindable(args.host, args.port, "--port")
  if args.osc_port is not None:
    _check_bindable(osc_host, args.osc_port, "--osc-port", socket.SOCK_DGRAM)
  from mrt_distill.serve.bundle import load_student
  from mrt_distill.serve.session import StreamSession
  print(f"loading student {args.checkpoint!r} ...", flush=True)
  bundle = load_student(args.checkpoint)
  if args.cfg is None:
    args.cfg = float(bundle.config.student.get("cfg_weight", 0.0))
  if args.cfg < 0:
    raise ValueError(f"--cfg {args.cfg}: the guidance weight must be >= 0")
  session = StreamSession(bundle.stepper(max_steps=args.max_steps),
                          bundle.params, bundle.style_model,
                          lead_chunks=args.lead_chunks, cfg_weight=args.cfg,
                          steps=args.steps, seed=args.seed,
                          prompt=rows_to_mix(rows))
  print("compiling the chunk step ...", flush=True)
  session.next_chunk()  # compile now, not when the first listener presses play
  server = StreamServer(session, prompt=rows, cfg_weight=args.cfg,
                        steps=args.steps, host=args.host, port=args.port,
                        osc_host=osc_host, osc_port=args.osc_port,
                        max_clients=args.max_clients, max_steps=args.max_steps,
                        allowed_origins=args.allow_origin, autoplay=args.play)

  async def main():
    try:
      await server.start()
    except OSError as e:  # lost a race for the port since the check
      await server.close()
      raise ValueError(f"cannot start the server: {e}") from None
    print(f"mrt-distill serve: open {server.url}  (WebSocket {WS_PATH}"
          + (f", OSC udp {server.osc_host}:{server.osc_port}"
             if server.osc is not None else "") + ")  Ctrl-C to quit",
          flush=True)
    quit_ = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        loop.add_signal_handler(sig, quit_.set)
      except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises
        pass
    try:
      await quit_.wait()
    finally:
      await server.close()

  try:
    asyncio.run(main())
  except KeyboardInterrupt:
    pass
  print("stopped", flush=True)
  return 0
