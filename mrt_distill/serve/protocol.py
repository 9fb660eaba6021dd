"""The wire protocol of `mrt-distill serve`: control messages and audio frames.

Control (client -> server): JSON text messages, objects with a "type" (one
of COMMANDS). `parse_message` checks one into a `Command`; anything wrong
raises ProtocolError, whose text the server sends back as
{"type": "error", "message": ...}. The check_* helpers are shared with the
controller and OSC.

Audio (server -> client): binary messages, a 16-byte little-endian header
(FRAME_HEADER: magic b"MRTA", version, sample format code, channels, sample
rate, chunk index) then the (T, channels) samples interleaved as float32 or
int16 (FORMATS); `encode_frame` / `decode_frame`. The musician's input
(client -> server, `live_input`) uses the same frame, the index counting the
client's own blocks; an "input" control message sets its mode and gain.

docs/serving.md describes the whole protocol. No network, no JAX.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

# Control messages larger than this get an error reply (the connection
# stays); `PROTOCOL_MAX_BYTES` is the hard WebSocket limit above which the
# `websockets` library closes the connection (1009) before we see it.
MAX_MESSAGE_BYTES = 64 * 1024
PROTOCOL_MAX_BYTES = 1024 * 1024
MAX_PROMPTS = 16
MAX_PROMPT_CHARS = 256
MAX_TRANSITION_SECONDS = 600.0
INPUT_MODES = ("off", "free", "looper")  # "off": no injection
MAX_INPUT_GAIN = 8.0
MAX_LOOP_SECONDS = 60.0

# Binary audio frame: a 16-byte little-endian header, then interleaved
# samples. magic, version, sample format, channels, sample rate, chunk index.
FRAME_MAGIC = b"MRTA"
FRAME_VERSION = 1
FRAME_HEADER = struct.Struct("<4sBBHII")
FORMATS = {"float32": 1, "int16": 2}

COMMANDS = ("prompt", "weight", "cfg", "steps", "play", "stop", "transition",
            "input", "status")


class ProtocolError(ValueError):
  """A control message that cannot be applied; the text goes to the client."""


# ---- control messages --------------------------------------------------------

Rows = tuple[tuple[str, float], ...]


def check_number(value, what: str) -> float:
  # bool is an int subclass; `true` is never a weight.
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ProtocolError(f"{what} must be a number, got {value!r}")
  try:
    value = float(value)
  except OverflowError:  # a JSON integer beyond any float, e.g. 10**400
    raise ProtocolError(f"{what} must be finite, got an integer of "
                        f"{len(str(abs(value)))} digits") from None
  if not math.isfinite(value):
    raise ProtocolError(f"{what} must be finite, got {value!r}")
  return value


def check_integer(value, what: str) -> int:
  # OSC senders (Pd, Max floats) send 2.0 for 2: accept integral floats.
  v = check_number(value, what)
  if v != int(v):
    raise ProtocolError(f"{what} must be a whole number, got {value!r}")
  return int(v)


def check_text(value, what: str) -> str:
  if not isinstance(value, str):
    raise ProtocolError(f"{what} must be a string, got {value!r}")
  text = value.strip()
  if not text:
    raise ProtocolError(f"{what} is empty")
  if len(text) > MAX_PROMPT_CHARS:
    raise ProtocolError(
        f"{what} has {len(text)} characters (at most {MAX_PROMPT_CHARS})")
  return text


def check_input(mode=None, gain=None, loop_seconds=None
                ) -> tuple[str | None, float | None, float | None]:
  """Input settings (None keeps a value) -> checked (mode, gain, seconds)."""
  if mode is not None and mode not in INPUT_MODES:
    raise ProtocolError(f"input mode {mode!r:.40}: expected one of "
                        f"{', '.join(INPUT_MODES)}")
  if gain is not None:
    gain = check_number(gain, "input gain")
    if not 0 <= gain <= MAX_INPUT_GAIN:
      raise ProtocolError(f"input gain must be in [0, {MAX_INPUT_GAIN:g}], got "
                          f"{gain:g}")
  if loop_seconds is not None:
    loop_seconds = check_number(loop_seconds, "loop_seconds")
    if not 0 < loop_seconds <= MAX_LOOP_SECONDS:
      raise ProtocolError(f"loop_seconds must be in (0, {MAX_LOOP_SECONDS:g}]"
                          f", got {loop_seconds:g}")
  return mode, gain, loop_seconds


def check_rows(rows: Sequence[tuple[Any, Any]], what: str = "prompts") -> Rows:
  """[(text, weight), ...] -> validated rows (stripped text, float weight).

  Raises ProtocolError: no rows, too many, empty or overlong text, weights
  that are not finite numbers >= 0, or all weights zero.
  """
  if not rows:
    raise ProtocolError(f"{what}: give at least one prompt")
  if len(rows) > MAX_PROMPTS:
    raise ProtocolError(f"{what}: {len(rows)} prompts (at most {MAX_PROMPTS})")
  out = []
  for i, (text, weight) in enumerate(rows):
    text = check_text(text, f"{what}[{i}].text")
    weight = check_number(weight, f"{what}[{i}].weight")
    if weight < 0:
      raise ProtocolError(f"{what}[{i}].weight is {weight}; weights must be "
                          f">= 0")
    out.append((text, weight))
  if not any(w > 0 for _, w in out):
    raise ProtocolError(f"{what}: all weights are zero; give at least one "
                        f"prompt a positive weight")
  return tuple(out)


def rows_from_mix(mix: str) -> Rows:
  """'techno:1, flute:0.5' -> rows (the CLI's and mixing's prompt syntax)."""
  from mrt_distill.style.mixing import parse_prompt_mix
  try:
    return check_rows(parse_prompt_mix(mix))
  except ProtocolError:
    raise
  except ValueError as e:
    raise ProtocolError(str(e)) from None


def rows_to_mix(rows: Rows) -> dict[str, float]:
  """Rows -> {text: weight} for the session; a text given twice adds up
  (the weighted mean is the same as with the rows apart)."""
  mix: dict[str, float] = {}
  for text, weight in rows:
    mix[text] = mix.get(text, 0.0) + weight
  return mix


def _json_rows(value, what: str) -> Rows:
  if isinstance(value, str):
    return rows_from_mix(value)
  if not isinstance(value, list):
    raise ProtocolError(
        f"{what} must be a list of {{\"text\": ..., \"weight\": ...}} objects "
        f"(or a string like \"techno:1, flute:0.5\"), got "
        f"{type(value).__name__}")
  rows = []
  for i, item in enumerate(value):
    if not isinstance(item, dict) or "text" not in item:
      raise ProtocolError(
          f"{what}[{i}] must be an object with \"text\" and \"weight\", got "
          f"{item!r:.80}")
    rows.append((item["text"], item.get("weight", 1.0)))
  return check_rows(rows, what)


@dataclasses.dataclass(frozen=True)
class Command:
  """One validated control: `kind` is one of COMMANDS."""
  kind: str
  rows: Rows = ()
  from_rows: Rows | None = None
  index: int | None = None
  value: float | None = None
  seconds: float | None = None
  mode: str | None = None


def parse_message(message: str | bytes,
                  max_bytes: int = MAX_MESSAGE_BYTES) -> Command:
  """One WebSocket control message -> Command.

  Raises ProtocolError with a message that names the problem: binary or
  oversized message, malformed JSON, unknown type, missing or bad values.
  """
  if isinstance(message, (bytes, bytearray, memoryview)):
    raise ProtocolError("binary messages are input audio frames (see "
                        "decode_frame), not control messages; send JSON text")
  size = len(message.encode("utf-8", "surrogatepass"))
  if size > max_bytes:
    raise ProtocolError(f"message of {size} bytes is over the {max_bytes} "
                        f"byte limit")
  try:
    msg = json.loads(message)
  except (json.JSONDecodeError, RecursionError) as e:
    raise ProtocolError(f"malformed JSON: {e}") from None
  if not isinstance(msg, dict):
    raise ProtocolError(f"a control message must be a JSON object, got "
                        f"{type(msg).__name__}")
  kind = msg.get("type")
  if not isinstance(kind, str):
    raise ProtocolError(
        f"message has no \"type\" (one of {', '.join(COMMANDS)})")
  if kind == "prompt":
    if "prompts" not in msg:
      raise ProtocolError("prompt message needs \"prompts\": "
                          "[{\"text\": ..., \"weight\": ...}, ...]")
    return Command("prompt", rows=_json_rows(msg["prompts"], "prompts"))
  if kind == "weight":
    for key in ("index", "weight"):
      if key not in msg:
        raise ProtocolError(f"weight message needs \"{key}\"")
    return Command("weight", index=check_integer(msg["index"], "index"),
                   value=check_number(msg["weight"], "weight"))
  if kind == "cfg":
    if "value" not in msg:
      raise ProtocolError("cfg message needs \"value\"")
    return Command("cfg", value=check_number(msg["value"], "cfg value"))
  if kind == "steps":
    if "value" not in msg:
      raise ProtocolError("steps message needs \"value\"")
    return Command("steps", value=check_integer(msg["value"], "steps value"))
  if kind in ("play", "stop", "status"):
    return Command(kind)
  if kind == "transition":
    if "to" not in msg or "seconds" not in msg:
      raise ProtocolError("transition message needs \"to\" (prompts) and "
                          "\"seconds\"")
    seconds = check_number(msg["seconds"], "seconds")
    if not 0 < seconds <= MAX_TRANSITION_SECONDS:
      raise ProtocolError(f"seconds must be in (0, {MAX_TRANSITION_SECONDS:g}]"
                          f", got {seconds:g}")
    src = msg.get("from")
    return Command("transition", rows=_json_rows(msg["to"], "to"),
                   from_rows=None if src is None else _json_rows(src, "from"),
                   seconds=seconds)
  if kind == "input":
    keys = ("mode", "gain", "loop_seconds")
    if not any(k in msg for k in keys):
      raise ProtocolError("input message needs \"mode\" (off, free, looper), "
                          "\"gain\" or \"loop_seconds\"")
    mode, gain, seconds = check_input(*(msg.get(k) for k in keys))
    return Command("input", mode=mode, value=gain, seconds=seconds)
  raise ProtocolError(f"unknown message type {kind!r:.60}; expected one of "
                      f"{', '.join(COMMANDS)}")


# ---- audio frames ------------------------------------------------------------

def encode_frame(audio_TxC: np.ndarray, sample_rate: int, index: int,
                 fmt: str = "float32") -> bytes:
  """(T, channels) float audio -> header + interleaved samples."""
  audio = np.asarray(audio_TxC, np.float32)
  if audio.ndim != 2:
    raise ValueError(f"audio of shape {audio.shape}: expected (T, channels)")
  if fmt == "int16":
    body = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
  elif fmt == "float32":
    body = audio.astype("<f4")
  else:
    raise ValueError(f"sample format {fmt!r}: expected one of {list(FORMATS)}")
  header = FRAME_HEADER.pack(FRAME_MAGIC, FRAME_VERSION, FORMATS[fmt],
                             audio.shape[1], int(sample_rate),
                             index & 0xFFFFFFFF)
  return header + np.ascontiguousarray(body).tobytes()


def decode_frame(frame: bytes) -> tuple[dict, np.ndarray]:
  """Inverse of encode_frame -> (header fields, (T, channels) float32)."""
  if len(frame) < FRAME_HEADER.size:
    raise ValueError(f"frame of {len(frame)} bytes is shorter than the header")
  magic, version, code, channels, rate, index = FRAME_HEADER.unpack_from(frame)
  if magic != FRAME_MAGIC or version != FRAME_VERSION:
    raise ValueError(f"not an audio frame (magic {magic!r}, version {version})")
  fmt = {v: k for k, v in FORMATS.items()}.get(code)
  if fmt is None:
    raise ValueError(f"unknown sample format code {code}")
  dtype = "<f4" if fmt == "float32" else "<i2"
  body = np.frombuffer(frame, dtype, offset=FRAME_HEADER.size)
  if channels == 0 or body.size % channels:
    raise ValueError(f"{body.size} samples do not split into {channels} "
                     f"channels")
  audio = body.reshape(-1, channels).astype(np.float32)
  if fmt == "int16":
    audio /= 32767.0
  return ({"format": fmt, "channels": channels, "sample_rate": rate,
           "index": index}, audio)
