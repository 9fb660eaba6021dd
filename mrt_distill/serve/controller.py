"""`Controller`: the one way controls (WebSocket and OSC) reach the session.

It holds the shared prompt rows, CFG weight and steps, and validates with
the checks in `protocol`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mrt_distill.serve.protocol import MAX_TRANSITION_SECONDS
from mrt_distill.serve.protocol import Command
from mrt_distill.serve.protocol import ProtocolError
from mrt_distill.serve.protocol import Rows
from mrt_distill.serve.protocol import check_integer
from mrt_distill.serve.protocol import check_number
from mrt_distill.serve.protocol import check_rows
from mrt_distill.serve.protocol import rows_to_mix


class Controller:
  """The one way controls reach the session.

  WebSocket and OSC both call it, so they share the prompt rows (OSC's
  `/mrt/weight 1 0.5` moves the second slider on every page) and the same
  validation. Methods raise ProtocolError (a ValueError) on bad input; the
  session's own ValueErrors pass through unchanged. `on_change()` is called
  after every applied change (from the caller's thread).
  """

  def __init__(self, session, rows: Rows, *, cfg_weight: float = 0.0,
               steps: int = 1, transport=None,
               on_change: Callable[[], None] | None = None):
    self.session = session
    self.transport = transport  # .play() / .stop() / .playing
    self.on_change = on_change
    self._lock = threading.RLock()
    self._rows = check_rows(rows)
    self._cfg = check_number(cfg_weight, "cfg")
    self._steps = check_integer(steps, "steps")
    # The session may have been built with other values: this is the truth.
    session.set_prompt(rows_to_mix(self._rows))
    session.set_controls(cfg_weight=self._cfg, steps=self._steps)

  def _changed(self):
    if self.on_change is not None:
      self.on_change()

  def snapshot(self) -> dict:
    with self._lock:
      return {
          "prompts": [{"text": t, "weight": w} for t, w in self._rows],
          "cfg": self._cfg,
          "steps": self._steps,
          "playing": bool(self.transport and self.transport.playing),
      }

  @property
  def rows(self) -> Rows:
    with self._lock:
      return self._rows

  def set_prompts(self, rows) -> None:
    rows = check_rows(rows)
    with self._lock:
      self.session.set_prompt(rows_to_mix(rows))
      self._rows = rows
    self._changed()

  def set_weight(self, index: int, weight: float) -> None:
    with self._lock:
      if not 0 <= index < len(self._rows):
        n = len(self._rows)
        raise ProtocolError(f"prompt index {index} out of range (there are "
                            f"{n} prompts: 0..{n - 1})")
      rows = list(self._rows)
      rows[index] = (rows[index][0], weight)
      self.set_prompts(rows)

  def set_cfg(self, value: float) -> None:
    value = check_number(value, "cfg")
    with self._lock:
      self.session.set_controls(cfg_weight=value)
      self._cfg = value
    self._changed()

  def set_steps(self, value: int) -> None:
    value = check_integer(value, "steps")
    with self._lock:
      self.session.set_controls(steps=value)
      self._steps = value
    self._changed()

  def transition(self, to_rows, seconds: float, from_rows=None) -> None:
    to_rows = check_rows(to_rows, "to")
    seconds = check_number(seconds, "seconds")
    if not 0 < seconds <= MAX_TRANSITION_SECONDS:
      raise ProtocolError(f"seconds must be in (0, {MAX_TRANSITION_SECONDS:g}]"
                          f", got {seconds:g}")
    with self._lock:
      src = self._rows if from_rows is None else check_rows(from_rows, "from")
      self.session.schedule_transition(rows_to_mix(src), rows_to_mix(to_rows),
                                       seconds)
      self._rows = to_rows
    self._changed()

  def play(self) -> None:
    if self.transport is None:
      raise ProtocolError("this server has no transport to start")
    self.transport.play()
    self._changed()

  def stop(self) -> None:
    if self.transport is None:
      raise ProtocolError("this server has no transport to stop")
    self.transport.stop()
    self._changed()

  def apply(self, cmd: Command) -> None:
    """Run one parsed WebSocket command ('status' is the server's job)."""
    if cmd.kind == "prompt":
      self.set_prompts(cmd.rows)
    elif cmd.kind == "weight":
      self.set_weight(cmd.index, cmd.value)
    elif cmd.kind == "cfg":
      self.set_cfg(cmd.value)
    elif cmd.kind == "steps":
      self.set_steps(int(cmd.value))
    elif cmd.kind == "transition":
      self.transition(cmd.rows, cmd.seconds, cmd.from_rows)
    elif cmd.kind == "play":
      self.play()
    elif cmd.kind == "stop":
      self.stop()
    elif cmd.kind != "status":
      raise ProtocolError(f"unknown command {cmd.kind!r}")
