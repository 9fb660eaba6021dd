"""Live playback of a `StreamSession` inside a notebook output (Colab first):
`LivePlayer`, the widget panel that steers the stream and plays it.

  sink = BrowserSink()                       # or WavSink / ListSink (tests)
  player = LivePlayer(session, sink, prompts="techno:1.0, funk:0.0")
  player.show()                              # widgets + the audio page
  player.play(); ...; player.stop()

The other parts, in sibling modules:
  colab_push          `PushLoop`: finished chunks from the session to a sink
  colab_sinks         `Sink`, and `ListSink` / `WavSink` (no speakers)
  colab_browser_sink  `BrowserSink`: the page over a kernel comm, paced
  colab_page          the page: HTML, its script and the AudioWorklet ring
  colab_pcm           samples on the wire (base64 int16 / float32)
`BrowserSink` and `WavSink` are importable from here too (the notebook
imports them from here).
"""

from __future__ import annotations

import html
import threading
import weakref

from mrt_distill.serve.colab_browser_sink import BrowserSink
from mrt_distill.serve.colab_push import PushLoop
from mrt_distill.serve.colab_sinks import Sink
from mrt_distill.serve.colab_sinks import WavSink

__all__ = ["BrowserSink", "LivePlayer", "WavSink"]


# ---- the widgets -------------------------------------------------------------
def _initial_rows(prompts, rows: int) -> list[tuple[str, float]]:
  from mrt_distill.style.mixing import parse_prompt_mix
  if isinstance(prompts, str):
    pairs = parse_prompt_mix(prompts)
  elif isinstance(prompts, dict):
    pairs = [(str(t), float(w)) for t, w in prompts.items()]
  else:
    pairs = [(str(t), float(w)) for t, w in prompts]
  return pairs + [("", 0.0)] * max(0, rows - len(pairs))


# The kernel's live player (weakly): a new player closes the previous one, so
# re-running a cell never leaves a stream playing (and burning CPU) that no
# widget can stop, and two loops never read one session.
_CURRENT: weakref.ref | None = None


class LivePlayer:
  """Prompt text boxes with weight sliders, CFG, steps, glide and play/stop
  around a `StreamSession`; every control steers the stream while it plays
  (at the next chunk). Setting a widget's `.value` from code does the same
  as moving it. One live player per kernel: a new one closes the previous.

  Args:
    session: a `StreamSession` (batch 1).
    sink: where audio goes (default: a `BrowserSink`).
    prompts: initial rows, "a:1, b:0" or {text: weight} or [(text, w)].
    rows: prompt rows shown (at least len(prompts)).
    weight_max, cfg_max: slider ranges.
  """

  def __init__(self, session, sink: Sink | None = None, *,
               prompts="techno:1.0", rows: int = 4, weight_max: float = 2.0,
               cfg_max: float = 4.0, status_seconds: float = 1.0):
    import ipywidgets as W
    global _CURRENT
    previous = _CURRENT() if _CURRENT is not None else None
    if previous is not None:
      previous.close()
    _CURRENT = weakref.ref(self)
    self.session = session
    self.sink = sink if sink is not None else BrowserSink()
    self.sink.open(session.sample_rate, session.channels,
                   session.chunk_samples)
    self.status_seconds = status_seconds
    self._loop: PushLoop | None = None
    self._lock = threading.RLock()
    self.last_error: str | None = None

    rows_ = _initial_rows(prompts, rows)
    stats = session.stats()
    wide = W.Layout(width="260px")
    self.prompts = [W.Text(value=t, placeholder="prompt (e.g. funk)",
                           continuous_update=False, layout=wide)
                    for t, _ in rows_]
    self.weights = [W.FloatSlider(value=w, min=0.0, max=weight_max,
                                  step=0.05, continuous_update=False,
                                  description="weight", readout_format=".2f")
                    for _, w in rows_]
    self.cfg = W.FloatSlider(value=float(stats["cfg_weight"]), min=0.0,
                             max=cfg_max, step=0.1, continuous_update=False,
                             description="CFG")
    self.steps = W.IntSlider(value=int(stats["steps"]), min=1,
                             max=int(session.stepper.max_steps),
                             continuous_update=False, description="steps")
    self.glide = W.FloatSlider(value=0.0, min=0.0, max=8.0, step=0.5,
                               continuous_update=False,
                               description="glide (s)")
    self.play_button = W.Button(description="Play", icon="play",
                                button_style="success")
    self.stop_button = W.Button(description="Stop", icon="stop")
    self.status = W.HTML(value="stopped")
    self.message = W.HTML(value="")

    self._applied = self.mix()
    session.set_prompt(self._applied)  # the widgets and the stream agree
    for w in self.prompts + self.weights:
      w.observe(self._on_prompt, names="value")
    self.cfg.observe(self._on_controls, names="value")
    self.steps.observe(self._on_controls, names="value")
    self.play_button.on_click(lambda _: self.play())
    self.stop_button.on_click(lambda _: self.stop())
    self.widget = W.VBox(
        [W.HBox([p, w]) for p, w in zip(self.prompts, self.weights)]
        + [W.HBox([self.cfg, self.steps, self.glide]),
           W.HBox([self.play_button, self.stop_button, self.status]),
           self.message])

  # ---- controls --------------------------------------------------------------
  def mix(self) -> list[tuple[str, float]]:
    """The prompt rows with text, as (text, weight) pairs."""
    return [(p.value.strip(), float(w.value))
            for p, w in zip(self.prompts, self.weights) if p.value.strip()]

  def _say(self, text: str, error: bool = False) -> None:
    self.last_error = text if error else None
    color = "#b00020" if error else "#555"
    self.message.value = (f'<span style="color: {color}">'
                          f'{html.escape(text)}</span>')

  def _on_prompt(self, _change=None) -> None:
    mix = self.mix()
    with self._lock:
      try:
        if not mix:
          raise ValueError("every prompt box is empty; type a prompt")
        glide = float(self.glide.value)
        if glide > 0:
          self.session.schedule_transition(self._applied, mix, glide)
        else:
          self.session.set_prompt(mix)
      except ValueError as e:
        self._say(str(e), error=True)
        return
      self._applied = mix
    label = ", ".join(f"{t}:{w:g}" for t, w in mix)
    self._say(f"prompt: {label}" + (f" (glide {glide:g} s)" if glide > 0
                                    else ""))

  def _on_controls(self, _change=None) -> None:
    try:
      self.session.set_controls(cfg_weight=float(self.cfg.value),
                                steps=int(self.steps.value))
    except ValueError as e:
      self._say(str(e), error=True)
      return
    self._say(f"CFG {self.cfg.value:g}, steps {self.steps.value}")

  # ---- transport -------------------------------------------------------------
  @property
  def playing(self) -> bool:
    return self._loop is not None and self._loop.running

  def play(self) -> None:
    """Start the producer and the push loop (no-op when playing)."""
    with self._lock:
      if self.playing:
        return
      self.session.start()
      self._loop = PushLoop(self.session, self.sink,
                            status_seconds=self.status_seconds,
                            on_status=lambda loop: self._show_status())
      self._loop.start()
    self._show_status()

  def stop(self, timeout: float | None = 10.0) -> None:
    """Stop pushing and producing; the page drops what it has queued."""
    with self._lock:
      loop = self._loop
      if loop is not None:
        loop.request_stop()
      self.session.stop()
      if loop is not None:
        loop.stop(timeout)
      self.sink.flush()
    self._show_status()

  def wait(self, timeout: float | None = None) -> bool:
    """Block until the push loop ends (a finite sink is full); False on
    timeout or when not started."""
    loop = self._loop
    return loop.wait(timeout) if loop is not None else False

  def close(self) -> None:
    self.stop()
    self.sink.close()

  # ---- numbers ---------------------------------------------------------------
  def stats(self) -> dict:
    loop = self._loop
    return {"session": self.session.stats(), "sink": self.sink.stats(),
            "pushed_chunks": loop.chunks if loop else 0,
            "push_error": None if loop is None or loop.error is None
            else f"{type(loop.error).__name__}: {loop.error}",
            "last_error": self.last_error}

  def _show_status(self) -> None:
    s = self.session.stats()
    k = self.sink.stats()
    loop = self._loop
    state = "playing" if self.playing else "stopped"
    if loop is not None and loop.error is not None:
      state = f"push loop failed: {type(loop.error).__name__}: {loop.error}"
    parts = [state, f"chunk {s['chunks']}"]
    if s["chunk_ms_p50"] is not None:
      rtf = 1000 * s["chunk_seconds"] / max(s["chunk_ms_p50"], 1e-6)
      parts.append(f"{s['chunk_ms_p50']:.0f} ms/chunk (RTF {rtf:.1f})")
    if k.get("ahead_seconds") is not None:
      parts.append(f"browser lead {k['ahead_seconds']:.1f} s")
    elif "connected" in k and not k["connected"]:
      parts.append("waiting for the page")
    if s["underruns"] or k.get("browser_underruns"):
      parts.append(f"underruns {s['underruns']}/"
                   f"{k.get('browser_underruns') or 0}")
    if s["errors"]:
      parts.append(f"errors {s['errors']}: {s['last_error']}")
    self.status.value = html.escape(" | ".join(parts))

  def show(self) -> None:
    from IPython.display import display
    display(self.widget)
    view = self.sink.view()
    if view is not None:
      display(view)

  def _ipython_display_(self) -> None:
    self.show()
