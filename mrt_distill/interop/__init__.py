"""seqio / TFDS interop for prompt sets (the `[interop]` extra).

Prompt sets can come from a TFDS dataset or a seqio Task instead of a prompt
file; both yield the same `PromptRecord`s as `read_prompt_file`, so the grain
prompt pipeline does not change. Install: pip install -c constraints.txt -e
".[interop]".

  tfds_prompts.py   MrtPrompts (TFDS builder over local prompt files),
                    build_prompt_tfds, records_from_tfds
  seqio_prompts.py  register_prompt_task (a seqio.Task), records_from_seqio

This package is cheap to import: TensorFlow loads only with one of those two
modules (or one of their names below, resolved lazily). Spec strings, as
taken by `mrt_distill.distill.prompt_source.load_prompt_source` and so by
`--config.prompts.file`:

  tfds:NAME[/CONFIG][:VERSION]:SPLIT[@DATA_DIR]
      e.g. tfds:mrt_prompts/my_set:train@/data/tfds. A prepared TFDS dataset
      with a text "start" (or "prompt") feature and optional "end" ("" when
      none), "transition_chunks" and "index" features; DATA_DIR defaults to
      TFDS's ($TFDS_DATA_DIR or ~/tensorflow_datasets). Never downloads or
      builds anything: build first with `build_prompt_tfds`.
  seqio:TASK:SPLIT[@MODULE]
      e.g. seqio:my_prompts:train@my_tasks.py. A registered seqio Task;
      MODULE (a dotted module name or a .py file) is imported first, so that
      it can register the task. TASK may contain ":" (seqio allows it): the
      split is the text after the last ":".
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from typing import Any

INSTALL_HINT = 'pip install -c constraints.txt -e ".[interop]"'
SCHEMES = ("tfds:", "seqio:")

_TFDS_SPEC = re.compile(
    r"^tfds:(?P<name>[\w.-]+(?:/[\w.-]+)?)"
    r"(?::(?P<version>\d+\.\d+\.\d+))?"
    r":(?P<split>[^@]+)"
    r"(?:@(?P<data_dir>.+))?$")
_TFDS_FORMAT = "tfds:NAME[/CONFIG][:VERSION]:SPLIT[@DATA_DIR]"
_SEQIO_FORMAT = "seqio:TASK:SPLIT[@MODULE]"

# Names resolved on first use (PEP 562), so `import mrt_distill.interop`
# stays free of TensorFlow.
_LAZY = {
    "MrtPrompts": "tfds_prompts", "MrtPromptsConfig": "tfds_prompts",
    "build_prompt_tfds": "tfds_prompts", "records_from_tfds": "tfds_prompts",
    "register_prompt_task": "seqio_prompts",
    "records_from_seqio": "seqio_prompts",
}


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """A parsed `tfds:` / `seqio:` prompt source spec.

  Attributes:
    kind: "tfds" or "seqio".
    name: TFDS "NAME[/CONFIG][:VERSION]" or the seqio task name.
    split: split to read (TFDS slicing such as "train[:50%]" is allowed).
    location: TFDS data dir, or the seqio module that registers the task;
      None for the default.
  """

  kind: str
  name: str
  split: str
  location: str | None = None


def parse_spec(spec: str) -> SourceSpec:
  """Parses a `tfds:` or `seqio:` spec; see the module docstring for syntax.

  Raises:
    PromptSourceError: the spec does not match its format (named).
  """
  from mrt_distill.distill.prompts import PromptSourceError
  if spec.startswith("tfds:"):
    m = _TFDS_SPEC.match(spec)
    if not m:
      raise PromptSourceError(
          f"prompt source {spec!r}: expected {_TFDS_FORMAT}, e.g. "
          "tfds:mrt_prompts/my_set:train@/data/tfds")
    name = m["name"] + (f":{m['version']}" if m["version"] else "")
    return SourceSpec("tfds", name, m["split"].strip(), m["data_dir"])
  if spec.startswith("seqio:"):
    body, _, module = spec[len("seqio:"):].partition("@")
    task, _, split = body.rpartition(":")
    if not task or not split.strip() or (not module and "@" in spec):
      raise PromptSourceError(
          f"prompt source {spec!r}: expected {_SEQIO_FORMAT}, e.g. "
          "seqio:my_prompts:train@my_tasks.py")
    return SourceSpec("seqio", task, split.strip(), module or None)
  raise PromptSourceError(
      f"prompt source {spec!r}: not a {' or '.join(SCHEMES)} spec")


def load_spec(spec: str) -> list:
  """Records of a `tfds:` / `seqio:` spec, in source (index) order.

  Returns:
    list[PromptRecord].

  Raises:
    PromptSourceError: bad spec, the interop extra is not installed, or the
      dataset / task / split is not found.
  """
  from mrt_distill.distill.prompts import PromptSourceError
  s = parse_spec(spec)
  try:
    if s.kind == "tfds":
      from mrt_distill.interop import tfds_prompts
    else:
      from mrt_distill.interop import seqio_prompts
  except ImportError as e:
    raise PromptSourceError(
        f"prompt source {spec!r} needs TensorFlow Datasets and seqio, which "
        f"are not installed ({e}); install the interop extra: "
        f"{INSTALL_HINT}") from e
  if s.kind == "tfds":
    return tfds_prompts.records_from_tfds(s.name, s.split,
                                          data_dir=s.location)
  if s.location:
    import_task_module(s.location)
  return seqio_prompts.records_from_seqio(s.name, s.split)


def import_task_module(module: str) -> None:
  """Imports a dotted module or a .py file (once) so it registers tasks."""
  from mrt_distill.distill.prompts import PromptSourceError
  if module.endswith(".py"):
    path = os.path.abspath(module)
    # One module name per file: a second import would register twice.
    name = "_mrt_prompt_tasks_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    if name in sys.modules:
      return
    if not os.path.isfile(path):
      raise PromptSourceError(f"seqio task module {module} does not exist")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
      spec.loader.exec_module(mod)
    except BaseException:
      del sys.modules[name]  # A fixed file can be retried.
      raise
    return
  try:
    importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name and (module == e.name or module.startswith(e.name + ".")):
      # The module (or its package) is missing, not one of its imports.
      raise PromptSourceError(
          f"seqio task module {module!r} is not importable ({e}); give a "
          "dotted module on sys.path or a path ending in .py") from None
    raise


class InteropDependencyError(ImportError, ValueError):
  """A package of the [interop] extra (TensorFlow, tf2jax, sentencepiece,
  seqio, TFDS) is not installed; the message names the install line.

  Also a ValueError so that the CLI reports it as one line (main.py).
  """


def import_optional(module: str, what: str):
  """Imports `module` of the [interop] extra or says how to install it."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise InteropDependencyError(
        f"{what} needs the Python package {module!r}, which is not "
        f"importable ({e}); install the interop extra: {INSTALL_HINT}"
    ) from e


def import_tensorflow():
  """Imports TensorFlow quietly and keeps it off the accelerators.

  JAX owns the GPUs/TPUs: TF only reads small prompt datasets and runs the
  Magenta RT SavedModels on the host, and would otherwise reserve most of
  the GPU memory when it starts.

  Returns:
    The `tensorflow` module.

  Raises:
    InteropDependencyError: TensorFlow is not installed (names the fix).
  """
  # Before the import: TF's C++ logging reads it once, at load.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  tf = import_optional("tensorflow", "TensorFlow interop (SavedModels, "
                       "TFDS, seqio)")
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):
      pass  # Devices already initialised (TF imported earlier), or none.
  return tf


__all__ = ["INSTALL_HINT", "InteropDependencyError", "SCHEMES", "SourceSpec",
           "import_optional", "import_task_module", "import_tensorflow", "load_spec", "parse_spec", *_LAZY]
