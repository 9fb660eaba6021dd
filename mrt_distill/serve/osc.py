"""OSC control of the live stream (python-osc, UDP).

Max/MSP, Pure Data, SuperCollider, TouchOSC and most DAWs speak OSC, so a
musician can steer the stream from the patch they already play, next to the
web page. Every message goes through the server's `Controller`, the same
path as the page's WebSocket controls: one validation, one prompt list (an
OSC weight change moves the page's slider).

Addresses (arguments in order; numbers may be int or float, so Pd's and
Max's floats work for indices and steps; docs/serving.md has the table with
examples):

  /mrt/prompt "techno:1, flute:0.5"     replace the mix (prompt-mix syntax)
  /mrt/prompt techno 1.0 flute 0.5      replace the mix (text, weight pairs)
  /mrt/prompt techno                    one prompt, weight 1
  /mrt/weight <index> <weight>          change the weight of prompt row index
  /mrt/cfg <w>                          classifier-free guidance weight
  /mrt/steps <k>                        student steps per chunk
  /mrt/play   (optionally 1 / 0)        start (0 stops: a Max toggle works)
  /mrt/stop
  /mrt/transition <seconds> <text> <weight> ...   glide to a new mix
  /mrt/input <mode> [gain] [loop_seconds]   the page's input: off/free/looper
  /mrt/input/gain <g>                   input gain (0..8; 0 mutes the input)
  /mrt/input/loop <seconds>             looper length

The input's audio itself comes from a page (its microphone or line input,
over the WebSocket); OSC sets how the model hears it, e.g. a foot switch
that toggles the looper.

UDP has no replies here, so a bad message (unknown address, wrong
arguments, a value the session refuses) is logged with the reason and
ignored; nothing an OSC sender does can stop the stream or the server.
"""

from __future__ import annotations

import collections
import logging
import threading

from pythonosc import dispatcher as osc_dispatcher
from pythonosc import osc_server

from mrt_distill.serve.protocol import ProtocolError
from mrt_distill.serve.protocol import check_integer
from mrt_distill.serve.protocol import check_number
from mrt_distill.serve.protocol import check_rows
from mrt_distill.serve.protocol import rows_from_mix

log = logging.getLogger(__name__)

PREFIX = "/mrt"


def _pairs(args, what: str):
  """("a", 1, "b", 0.5) | ("a:1, b:0.5",) | ("a",) -> rows."""
  if len(args) == 1 and isinstance(args[0], str):
    return rows_from_mix(args[0])
  if not args or len(args) % 2:
    raise ProtocolError(f"{what} takes one mix string or <text> <weight> "
                        f"pairs, got {len(args)} arguments {list(args)!r:.120}")
  return [(args[i], args[i + 1]) for i in range(0, len(args), 2)]


class OscServer:
  """A UDP OSC server in a daemon thread that drives a Controller.

  `stats()` counts handled and rejected messages (tests and the status
  message read it); `port` is the bound port (pass 0 for a free one).
  """

  def __init__(self, controller, host: str = "127.0.0.1", port: int = 9000,
               live_input=None, check_words=None):
    self.controller = controller
    self.live_input = live_input
    self.check_words = check_words or (lambda rows: None)
    d = osc_dispatcher.Dispatcher(strict_timing=False)  # never sleep on bundles
    for name, fn in (("prompt", self._prompt), ("weight", self._weight),
                     ("cfg", self._cfg), ("steps", self._steps),
                     ("play", self._play), ("stop", self._stop),
                     ("transition", self._transition),
                     ("input", self._input), ("input/gain", self._input_gain),
                     ("input/loop", self._input_loop)):
      d.map(f"{PREFIX}/{name}", self._guard(fn))
    d.set_default_handler(self._unknown)
    self._server = osc_server.BlockingOSCUDPServer((host, port), d)
    self.host, self.port = self._server.server_address[:2]
    self._counts = collections.Counter()
    self.last_error: str | None = None
    self._thread = threading.Thread(target=self._server.serve_forever,
                                    kwargs={"poll_interval": 0.2},
                                    name="mrt-serve-osc", daemon=True)

  def start(self) -> "OscServer":
    self._thread.start()
    log.info("OSC listening on udp %s:%d (%s/...)", self.host, self.port,
             PREFIX)
    return self

  def close(self) -> None:
    if self._thread.is_alive():
      self._server.shutdown()
      self._thread.join(timeout=5)
    self._server.server_close()

  def stats(self) -> dict:
    return {"handled": self._counts["handled"],
            "rejected": self._counts["rejected"],
            "last_error": self.last_error}

  # ---- handlers ------------------------------------------------------------
  def _guard(self, fn):
    def handler(address, *args):
      try:
        fn(*args)
      except Exception as e:  # noqa: BLE001 -- log, ignore, keep serving
        self._reject(address, args, e)
      else:
        self._counts["handled"] += 1
      return None  # python-osc would send a non-None result back as a reply
    return handler

  def _reject(self, address, args, error) -> None:
    self._counts["rejected"] += 1
    self.last_error = f"{address} {list(args)!r:.120}: {error}"
    if isinstance(error, (ValueError, TypeError)):
      log.warning("OSC message ignored: %s", self.last_error)
    else:
      log.exception("OSC message failed: %s", self.last_error)

  def _unknown(self, address, *args):
    self._reject(address, args, ProtocolError(
        f"unknown address; use {PREFIX}/prompt, /weight, /cfg, /steps, "
        f"/play, /stop, /transition, /input, /input/gain or /input/loop"))

  def _prompt(self, *args):
    rows = check_rows(_pairs(args, f"{PREFIX}/prompt"))
    self.check_words(rows)
    self.controller.set_prompts(rows)

  def _weight(self, *args):
    if len(args) != 2:
      raise ProtocolError(f"{PREFIX}/weight takes <index> <weight>")
    self.controller.set_weight(check_integer(args[0], "index"),
                               check_number(args[1], "weight"))

  def _cfg(self, *args):
    if len(args) != 1:
      raise ProtocolError(f"{PREFIX}/cfg takes one number")
    self.controller.set_cfg(args[0])

  def _steps(self, *args):
    if len(args) != 1:
      raise ProtocolError(f"{PREFIX}/steps takes one whole number")
    self.controller.set_steps(args[0])

  def _play(self, *args):
    if len(args) > 1:
      raise ProtocolError(f"{PREFIX}/play takes no argument or 1 / 0")
    if args and check_number(args[0], f"{PREFIX}/play argument") == 0:
      self.controller.stop()
    else:
      self.controller.play()

  def _stop(self, *args):
    self.controller.stop()

  def _transition(self, *args):
    if len(args) < 2:
      raise ProtocolError(f"{PREFIX}/transition takes <seconds> then a mix")
    rows = check_rows(_pairs(args[1:], f"{PREFIX}/transition"), "to")
    self.check_words(rows)
    self.controller.transition(rows, args[0])

  def _live_input(self):
    if self.live_input is None:
      raise ProtocolError("this server takes no input audio")
    return self.live_input

  def _input(self, *args):
    if not 1 <= len(args) <= 3:
      raise ProtocolError(f"{PREFIX}/input takes <mode> [gain] [loop_seconds]"
                          f" (mode off, free or looper)")
    self._live_input().configure(*args)

  def _input_gain(self, *args):
    if len(args) != 1:
      raise ProtocolError(f"{PREFIX}/input/gain takes one number")
    self._live_input().configure(gain=args[0])

  def _input_loop(self, *args):
    if len(args) != 1:
      raise ProtocolError(f"{PREFIX}/input/loop takes one number (seconds)")
    self._live_input().configure(loop_seconds=args[0])
