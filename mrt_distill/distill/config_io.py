"""Loading ml-collections experiment configs and `--config.x=y` overrides.

A config is a Python file with `get_config(arg) -> ConfigDict`, named by path
(`configs/reference_cpu.py`, optionally `:arg`) or by the name of a config
shipped in the package (`reference_cpu`; the repository's `configs/` folder
is installed as `mrt_distill.configs`).
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.resources
import importlib.util
import json
import pathlib

import ml_collections

DEFAULT_CONFIG = "reference_cpu"


def _shipped(name: str) -> pathlib.Path | None:
  try:
    path = importlib.resources.files("mrt_distill.configs") / f"{name}.py"
  except ModuleNotFoundError:
    return None
  return pathlib.Path(str(path)) if path.is_file() else None


def load_config(spec: str | None = None) -> ml_collections.ConfigDict:
  """'path/to/x.py[:arg]' or 'name[:arg]' -> the ConfigDict.

  Raises:
    ValueError: the file does not exist (naming the shipped configs), does
      not run (a syntax or import error, named with its line), or has no
      get_config.
  """
  spec = spec or DEFAULT_CONFIG
  path_text, _, arg = spec.partition(":")
  path = pathlib.Path(path_text)
  if not path.is_file():
    found = _shipped(path.stem) if path.suffix in ("", ".py") else None
    if found is None:
      shipped = sorted(p.stem for p in pathlib.Path(str(
          importlib.resources.files("mrt_distill.configs"))).glob("*.py")
                       if not p.stem.startswith("_"))
      raise ValueError(f"config {path_text!r} not found: give a path to a "
                       f"config .py file or one of the shipped configs "
                       f"{shipped}")
    path = found
  mod_spec = importlib.util.spec_from_file_location(
      f"_mrt_config_{path.stem}", path)
  module = importlib.util.module_from_spec(mod_spec)
  try:
    mod_spec.loader.exec_module(module)
  except Exception as e:  # the user's file: any error, one line
    raise ValueError(f"config {path} cannot be loaded: {type(e).__name__}: "
                     f"{e}; fix the file (`python {path}` shows the "
                     f"traceback)") from e
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} has no get_config(arg) function; define "
                     f"`def get_config(arg=None)` returning an "
                     f"ml_collections.ConfigDict (see "
                     f"configs/reference_cpu.py)")
  cfg = module.get_config(arg or None)
  cfg.config_source = f"{path}{':' + arg if arg else ''}"
  return cfg


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare string


def _a(noun: str) -> str:
  return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _all_keys(cfg, prefix="") -> list[str]:
  out = []
  for k, v in cfg.items():
    full = f"{prefix}{k}"
    out.append(full)
    if isinstance(v, ml_collections.ConfigDict):
      out.extend(_all_keys(v, full + "."))
  return out


def apply_overrides(cfg: ml_collections.ConfigDict,
                    overrides: list[str]) -> ml_collections.ConfigDict:
  """Applies 'a.b=value' strings (values as Python literals, else strings).

  Raises:
    ValueError: a key that does not exist (with the closest existing keys)
      or a value of the wrong type.
  """
  for item in overrides:
    key, sep, value_text = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r} must look like "
                       f"--config.train.steps=100")
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict):
        raise ValueError(
            f"config key {'.'.join(parts[:i])!r} is "
            f"{_a(type(node).__name__)}, not a group: {key!r} does not "
            f"exist")
      if part not in node:
        close = difflib.get_close_matches(key, _all_keys(cfg), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"config key {key!r} does not exist{hint}")
      if i < len(parts) - 1:
        node = node[part]
    value = _parse_value(value_text)
    old = node[parts[-1]]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(
        value, bool):
      value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    if old is not None and type(value) is not type(old):
      want, got = _a(type(old).__name__), _a(type(value).__name__)
      raise ValueError(
          f"config key {key!r} is {want} ({old!r}); {value_text!r} is "
          f"{got}: give {want}, e.g. --config.{key}={old!r}")
    node[parts[-1]] = value
  return cfg


# Config fields that fix array shapes in a checkpoint; a run resuming from a
# checkpoint must agree on all of them.
# (student.coupled adds the noise_in head and the noise in the replay
# buffer: a run trained uncoupled cannot resume coupled, or the reverse.)
SHAPE_KEYS = ("world", "student.lora_rank", "student.chunk_frames",
              "student.coupled", "student.token_head",
              "student.token_feedback", "student.frame_state",
              "student.head_layers",
              "rollout.batch",
              "rollout.replay_capacity", "optim.name")
# Keys added after the first release, with the value older configs meant.
SHAPE_DEFAULTS = {"student.chunk_frames": 0, "optim.ema": False,
                  "student.coupled": False, "student.token_head": False,
                  "student.token_feedback": False,
                  "student.frame_state": False,
                  "student.head_layers": 1,
                  "soft_tokens": False}


def shape_fingerprint(cfg: ml_collections.ConfigDict) -> dict:
  out = {}
  for key in SHAPE_KEYS:
    node = cfg
    for part in key.split("."):
      node = node.get(part) if hasattr(node, "get") else None
      if node is None:
        break
    out[key] = SHAPE_DEFAULTS.get(key) if node is None else node
  # A parameter average adds a tree to the optimizer state; its decay does
  # not change any shape, so only on/off is part of the fingerprint.
  optim = cfg.get("optim") or {}
  out["optim.ema"] = bool(float(optim.get("ema_decay", 0.0) or 0.0) > 0)
  # losses.token_kl adds the teacher's distributions to every example (the
  # replay buffer's and the batch's structure); only on/off matters.
  losses = cfg.get("losses") or {}
  out["soft_tokens"] = bool(float(losses.get("token_kl", 0.0) or 0.0) > 0)
  out["sha"] = hashlib.sha256(json.dumps(out, sort_keys=True).encode()
                              ).hexdigest()[:16]
  return out
