"""Reads and writes the legacy t5x checkpoint format, without importing t5x.

Magenta RT v1 weights ship as legacy t5x checkpoints. On disk one looks like:

  checkpoint_<step>/
    checkpoint                       # msgpack (flax.serialization)
    target.<a>.<b>.kernel/           # one zarr v2 array per large leaf
      .zarray
      0.0  0.1  1.0 ...              # chunk files, dot-joined chunk indices
    state.param_states.<a>.<b>.kernel.v_row/
      ...

The msgpack file holds

  {"version": 3,
   "optimizer": {"target": <params>,
                 "state": {"step": <int array>,
                           "param_states": <Adafactor slots>}}}

where every leaf that t5x wrote to TensorStore is replaced by the JSON of its
TensorStore spec, e.g.

  {"driver": "zarr", "dtype": "float32",
   "kvstore": {"driver": "file", "path": "target.a.b.kernel/"},
   "metadata": {"chunks": [...], "compressor": {"id": "gzip", "level": 1},
                "shape": [...]}}

The kvstore path is relative to the checkpoint directory. Small leaves (the
step, unpartitioned arrays) are stored inline as msgpack-encoded arrays.

`read_t5x_checkpoint` decodes the zarr arrays itself (numpy + gzip/zlib) rather
than through TensorStore, so that a missing chunk file is an error instead of
being silently read as zeros. `write_t5x_checkpoint` writes through
TensorStore, which is what t5x itself uses, so its output is exactly what the
real format looks like (including the `.zarray` TensorStore emits).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import re
import shutil
from typing import Any, Iterator, Mapping

import numpy as np

from mrt_distill.teacher.zarr_v2 import ZarrFormatError, read_zarr_array

_log = logging.getLogger(__name__)

PathLike = str | os.PathLike

# The msgpack version field t5x has written since 2021-06 (bf16 stored natively
# in TensorStore instead of as uint16).
T5X_VERSION = 3
# t5x's target chunk size.
DEFAULT_MAX_CHUNK_BYTES = 64 * 2**20
# Name of the msgpack file inside a checkpoint directory.
MSGPACK_NAME = "checkpoint"

_TARGET_PREFIX = ("target",)
_PARAM_STATES_PREFIX = ("state", "param_states")
_CKPT_DIR_RE = re.compile(r"^checkpoint_(\d+)$")
_SPEC_KEYS = frozenset({"driver", "kvstore"})


class T5xFormatError(ZarrFormatError):
  """A t5x checkpoint is missing, malformed, or cannot be decoded."""


@dataclasses.dataclass
class T5xCheckpoint:
  """The contents of one t5x checkpoint.

  Attributes:
    params: Nested dict of float32 arrays: the `optimizer.target` tree.
    step: Training step stored in `optimizer.state.step`, or None if absent.
    param_states: Nested dict of optimizer slots (`optimizer.state.
      param_states`, e.g. Adafactor `v_row`/`v_col`/`v`), or None when not
      requested or not present.
    names: Sorted flat dotted names of `params`, e.g.
      `decoder.layers_0.mlp.wo.kernel`.
    path: The resolved `checkpoint_<step>` directory that was read.
  """

  params: dict[str, Any]
  step: int | None
  param_states: dict[str, Any] | None
  names: list[str]
  path: pathlib.Path | None = None


# ---------------------------------------------------------------------------
# Tree helpers.


def flatten(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Flattens a nested dict into `{"a.b.c": leaf}`.

  Empty sub-dicts and None leaves are dropped.

  Args:
    tree: Nested mapping with string keys; leaves are arrays (or scalars).

  Returns:
    A flat dict keyed by '.'-joined paths, in sorted key order.

  Raises:
    ValueError: If a key is not a string, is empty, or contains '.'.
  """
  out: dict[str, np.ndarray] = {}
  for path, leaf in _iter_leaves(tree, ()):
    out[".".join(path)] = leaf
  return dict(sorted(out.items()))


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of `flatten`: `{"a.b.c": x}` -> `{"a": {"b": {"c": x}}}`.

  Args:
    flat: Mapping from '.'-joined paths to leaves.

  Returns:
    The nested dict.

  Raises:
    ValueError: If one name is a prefix of another (a leaf and a subtree would
      share a path) or a name has an empty part.
  """
  tree: dict[str, Any] = {}
  for name in sorted(flat):
    parts = name.split(".")
    if not all(parts):
      raise ValueError(f"unflatten: name {name!r} has an empty part.")
    node = tree
    for i, part in enumerate(parts[:-1]):
      child = node.setdefault(part, {})
      if not isinstance(child, dict):
        raise ValueError(
            f"unflatten: {'.'.join(parts[:i + 1])!r} is a leaf but {name!r} "
            "needs it to be a subtree.")
      node = child
    if parts[-1] in node:
      raise ValueError(
          f"unflatten: {name!r} is both a leaf and a subtree.")
    node[parts[-1]] = flat[name]
  return tree


def _iter_leaves(tree: Any, path: tuple[str, ...]) -> Iterator[
    tuple[tuple[str, ...], Any]]:
  """Yields `(path, leaf)` for every non-dict, non-None leaf."""
  if isinstance(tree, Mapping):
    for key, value in tree.items():
      if not isinstance(key, str) or not key or "." in key:
        raise ValueError(
            f"Tree key {key!r} under {'.'.join(path) or '<root>'!r} must be a "
            "non-empty string without '.' (t5x array directory names join "
            "the path with '.').")
      yield from _iter_leaves(value, path + (key,))
  elif tree is not None:
    yield path, tree


# ---------------------------------------------------------------------------
# Writing.


def choose_chunk_shape(shape: tuple[int, ...], itemsize: int,
                       max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
                       ) -> list[int]:
  """Chooses a zarr chunk shape the way t5x does.

  Starts from the full shape and, while a chunk is larger than
  `max_chunk_bytes`, shrinks the currently-largest chunk dimension (the first
  one on ties) to the next smaller divisor of that array dimension. Chunks
  therefore always tile the array exactly.

  Args:
    shape: Array shape.
    itemsize: Bytes per element.
    max_chunk_bytes: Upper bound on the bytes of one chunk.

  Returns:
    The chunk shape, one entry per dimension (sizes >= 1).
  """
  max_elements = max(1, max_chunk_bytes // max(1, itemsize))
  divisors = [[d for d in range(1, max(n, 1) + 1) if max(n, 1) % d == 0]
              for n in shape]
  chunk = [divs[-1] for divs in divisors]
  while math.prod(chunk) > max_elements:
    dim = max(range(len(chunk)), key=lambda i: (chunk[i], -i))
    if chunk[dim] <= 1:
      break
    divisors[dim].pop()
    chunk[dim] = divisors[dim][-1]
  return chunk


def write_t5x_checkpoint(ckpt_dir: PathLike,
                         params: Mapping[str, Any],
                         step: int,
                         param_states: Mapping[str, Any] | None = None,
                         max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
                         compress: bool = True) -> None:
  """Writes a legacy t5x checkpoint (msgpack + one zarr array per leaf).

  Every array leaf of `params` (cast to float32, as t5x's default save dtype
  does) and of `param_states` (dtype kept) is written to its own zarr v2
  directory through TensorStore; the msgpack `checkpoint` file holds the
  relative TensorStore spec in its place. The step is stored inline as an
  int32 scalar array.

  The files are first written to a sibling temporary directory and renamed
  into place, so a crash never leaves a half-written `ckpt_dir`.

  Args:
    ckpt_dir: The checkpoint directory to create; by t5x convention name it
      `<parent>/checkpoint_<step>`. It must not exist or be empty.
    params: Nested dict of arrays (the model parameters, `optimizer.target`).
    step: Training step to record.
    param_states: Optional nested dict of optimizer slots, e.g.
      `{"decoder": {"wo": {"kernel": {"v_row": ..., "v_col": ...}}}}`.
    max_chunk_bytes: Largest zarr chunk in bytes (t5x: 64 MiB). Tests pass a
      small value to force multi-chunk arrays.
    compress: gzip-compress chunks (t5x does); False writes raw chunks.

  Raises:
    T5xFormatError: If `ckpt_dir` is non-empty or a tree is malformed.
  """
  import flax.serialization  # pylint: disable=g-import-not-at-top
  import tensorstore as ts  # pylint: disable=g-import-not-at-top

  ckpt_dir = pathlib.Path(ckpt_dir)
  if ckpt_dir.exists() and (not ckpt_dir.is_dir() or any(ckpt_dir.iterdir())):
    raise T5xFormatError(
        f"Refusing to write a t5x checkpoint into {ckpt_dir}: it already "
        "exists and is not an empty directory. Remove it or pick another "
        "path.")
  if max_chunk_bytes < 1:
    raise T5xFormatError(f"max_chunk_bytes must be >= 1, got {max_chunk_bytes}")
  try:
    target_leaves = list(_iter_leaves(params, ()))
    state_leaves = list(_iter_leaves(param_states or {}, ()))
  except ValueError as e:
    raise T5xFormatError(str(e)) from e

  tmp_dir = ckpt_dir.with_name(f"{ckpt_dir.name}.tmp-{os.getpid()}")
  if tmp_dir.exists():
    shutil.rmtree(tmp_dir)
  tmp_dir.mkdir(parents=True)
  try:
    def write_tree(leaves, prefix, cast_f32):
      flat = {}
      for path, leaf in leaves:
        arr = np.asarray(leaf)
        if cast_f32 and arr.dtype != np.float32:
          arr = arr.astype(np.float32)
        name = ".".join(prefix + path)
        rel_spec = {
            "driver": "zarr",
            "dtype": arr.dtype.name,
            "kvstore": {"driver": "file", "path": name},
            "metadata": {
                "compressor": {"id": "gzip"} if compress else None,
                "shape": list(arr.shape),
                "chunks": choose_chunk_shape(arr.shape, arr.dtype.itemsize,
                                             max_chunk_bytes),
            },
        }
        abs_spec = json.loads(json.dumps(rel_spec))
        abs_spec["kvstore"]["path"] = str(tmp_dir / name)
        store = ts.open(abs_spec, create=True, open=True).result()
        store.write(arr).result()
        # Exactly what t5x puts in the msgpack: the JSON of the relative spec.
        flat[".".join(path)] = ts.Spec(rel_spec).to_json()
      return unflatten(flat)

    contents = {
        "version": T5X_VERSION,
        "optimizer": {
            "target": write_tree(target_leaves, _TARGET_PREFIX, True),
            "state": {
                "step": np.asarray(step, dtype=np.int32),
                "param_states": write_tree(state_leaves, _PARAM_STATES_PREFIX,
                                           False),
            },
        },
    }
    (tmp_dir / MSGPACK_NAME).write_bytes(
        flax.serialization.msgpack_serialize(contents))
    if ckpt_dir.exists():
      ckpt_dir.rmdir()  # Empty (checked above).
    os.replace(tmp_dir, ckpt_dir)
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  _log.info("Wrote t5x checkpoint (step %d, %d params, %d slots) to %s", step,
            len(target_leaves), len(state_leaves), ckpt_dir)


# ---------------------------------------------------------------------------
# Reading.


def resolve_checkpoint_dir(path: PathLike) -> pathlib.Path:
  """Finds the `checkpoint_<N>` directory to read.

  Args:
    path: A `checkpoint_<N>` directory, the `checkpoint` msgpack file inside
      one, or a parent directory holding one or more `checkpoint_<N>`
      directories (the largest N is taken).

  Returns:
    The directory that contains the `checkpoint` msgpack file.

  Raises:
    T5xFormatError: If nothing usable is found.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise T5xFormatError(
        f"t5x checkpoint path {path} does not exist. Pass the "
        "checkpoint_<step> directory (or its parent); download/unpack the "
        "checkpoint first.")
  if path.is_file():
    if path.name == MSGPACK_NAME:
      return path.parent
    raise T5xFormatError(
        f"{path} is a file, not a t5x checkpoint directory. Pass the "
        f"checkpoint_<step> directory that contains the '{MSGPACK_NAME}' "
        "msgpack file.")
  if (path / MSGPACK_NAME).is_file():
    return path
  steps = sorted(
      (int(m.group(1)), child) for child in path.iterdir()
      if child.is_dir() and (m := _CKPT_DIR_RE.match(child.name)))
  if not steps:
    raise T5xFormatError(
        f"No t5x checkpoint in {path}: there is no '{MSGPACK_NAME}' msgpack "
        "file and no checkpoint_<step> subdirectory. Point at the "
        "checkpoint_<step> directory of a complete t5x checkpoint (the "
        f"'{MSGPACK_NAME}' file may be missing from an incomplete download).")
  step, chosen = steps[-1]
  if len(steps) > 1:
    _log.info("%s holds %d t5x checkpoints (steps %s); using the latest, %s.",
              path, len(steps), [s for s, _ in steps], chosen.name)
  else:
    _log.info("Using t5x checkpoint %s (step %d).", chosen, step)
  if not (chosen / MSGPACK_NAME).is_file():
    raise T5xFormatError(
        f"t5x checkpoint directory {chosen} has no '{MSGPACK_NAME}' msgpack "
        "file; the checkpoint is incomplete (t5x writes it last). Re-download "
        "it or pass another checkpoint_<step> directory.")
  return chosen


def read_t5x_checkpoint(ckpt_dir: PathLike, *,
                        include_optimizer_state: bool = False
                        ) -> T5xCheckpoint:
  """Reads a legacy t5x checkpoint.

  Args:
    ckpt_dir: The `checkpoint_<step>` directory, or a parent holding one or
      more of them (the largest step is used and logged).
    include_optimizer_state: Also read `optimizer.state.param_states` (the
      Adafactor slots); otherwise `param_states` is None and the slot arrays
      are not touched.

  Returns:
    A `T5xCheckpoint` whose params are float32 numpy arrays.

  Raises:
    T5xFormatError: On a missing directory/file, unparsable msgpack, or a
      missing/corrupt array directory, `.zarray` or chunk.
  """
  import flax.serialization  # pylint: disable=g-import-not-at-top

  ckpt = resolve_checkpoint_dir(ckpt_dir)
  msgpack_path = ckpt / MSGPACK_NAME
  try:
    contents = flax.serialization.msgpack_restore(msgpack_path.read_bytes())
  except Exception as e:  # msgpack raises a zoo of exception types.
    raise T5xFormatError(
        f"Could not parse the t5x msgpack file {msgpack_path}: "
        f"{type(e).__name__}: {e}. The file is corrupt or truncated; "
        "re-download the checkpoint.") from e
  if not isinstance(contents, dict) or not isinstance(
      contents.get("optimizer"), dict):
    raise T5xFormatError(
        f"{msgpack_path} parsed, but is not a t5x checkpoint: expected a dict "
        "with an 'optimizer' entry, got "
        f"{sorted(contents) if isinstance(contents, dict) else type(contents)}"
        ". Is this an Orbax or flax checkpoint rather than legacy t5x?")
  version = contents.get("version")
  if version != T5X_VERSION:
    _log.warning("%s: t5x checkpoint version %r (expected %d); reading anyway.",
                 msgpack_path, version, T5X_VERSION)
  optimizer = contents["optimizer"]
  target = optimizer.get("target")
  if not isinstance(target, dict):
    raise T5xFormatError(
        f"{msgpack_path} has no 'optimizer.target' parameter tree. The "
        "checkpoint is not a t5x training checkpoint.")
  state = optimizer.get("state") or {}

  params = _materialize(target, ckpt, _TARGET_PREFIX, to_float32=True)
  if not params:
    raise T5xFormatError(
        f"{msgpack_path}: 'optimizer.target' holds no arrays.")
  step = None
  if "step" in state and state["step"] is not None:
    step_arr = _load_leaf(state["step"], ckpt, "state.step")
    step = int(np.asarray(step_arr).reshape(-1)[0])
  param_states = None
  if include_optimizer_state and state.get("param_states"):
    param_states = _materialize(state["param_states"], ckpt,
                                _PARAM_STATES_PREFIX, to_float32=True) or None
  names = sorted(flatten(params))
  _log.info("Read t5x checkpoint %s: step %s, %d params%s.", ckpt, step,
            len(names), "" if param_states is None else
            f", {len(flatten(param_states))} optimizer slots")
  return T5xCheckpoint(params=params, step=step, param_states=param_states,
                       names=names, path=ckpt)


def _is_spec(x: Any) -> bool:
  return isinstance(x, dict) and _SPEC_KEYS <= set(x)


def _materialize(tree: Any, ckpt: pathlib.Path, prefix: tuple[str, ...],
                 to_float32: bool) -> dict[str, Any]:
  """Replaces every spec/inline leaf of a msgpack subtree by a numpy array."""
  flat = {}

  def walk(node, path):
    if _is_spec(node) or not isinstance(node, dict):
      if node is None:
        return
      name = ".".join(prefix + path)
      arr = np.asarray(_load_leaf(node, ckpt, name))
      if to_float32 and arr.dtype != np.float32 and (
          np.issubdtype(arr.dtype, np.floating)):
        arr = arr.astype(np.float32)
      flat[".".join(path)] = arr
      return
    for key, value in node.items():
      if not isinstance(key, str) or "." in key:
        raise T5xFormatError(
            f"{ckpt / MSGPACK_NAME}: tree key {key!r} under "
            f"{'.'.join(prefix + path)!r} is not a dot-free string.")
      walk(value, path + (key,))

  walk(tree, ())
  return unflatten(flat)


def _spec_array_dir(spec: dict[str, Any], ckpt: pathlib.Path,
                    name: str) -> pathlib.Path:
  """Resolves the (relative) array directory named by a TensorStore spec."""
  driver = spec.get("driver")
  if driver not in ("zarr", "zarr2"):
    raise T5xFormatError(
        f"{ckpt / MSGPACK_NAME}: leaf {name!r} uses TensorStore driver "
        f"{driver!r}; only 'zarr' (t5x's) is supported.")
  kvstore = spec["kvstore"]
  if isinstance(kvstore, str):  # URL form, e.g. "file://target.x/".
    kv_path = re.sub(r"^[a-z0-9+]+://", "", kvstore)
  elif isinstance(kvstore, dict):
    # file/gfile/gcs all map to a local path relative to the checkpoint
    # (t5x does the same gcs->file translation when reading locally).
    kv_path = kvstore.get("path", "") or ""
  else:
    raise T5xFormatError(
        f"{ckpt / MSGPACK_NAME}: leaf {name!r} has a malformed kvstore "
        f"{kvstore!r}.")
  # tensorstore < 0.1.14 put the key in a top-level "path".
  rel = "/".join(p for p in (kv_path.strip("/"), str(
      spec.get("path", "")).strip("/")) if p)
  if not rel:
    raise T5xFormatError(
        f"{ckpt / MSGPACK_NAME}: the TensorStore spec of {name!r} has no "
        "path.")
  rel_path = pathlib.Path(rel)
  return rel_path if rel_path.is_absolute() else ckpt / rel_path


def _read_array(array_dir: pathlib.Path) -> np.ndarray:
  try:
    return read_zarr_array(array_dir)
  except ZarrFormatError as e:
    raise T5xFormatError(str(e)) from None


def _load_leaf(leaf: Any, ckpt: pathlib.Path, name: str) -> np.ndarray:
  """Returns an inline leaf as an array, or reads the zarr array it names."""
  if not _is_spec(leaf):
    return np.asarray(leaf)
  array_dir = _spec_array_dir(leaf, ckpt, name)
  arr = _read_array(array_dir)
  meta_shape = (leaf.get("metadata") or {}).get("shape")
  if meta_shape is not None and tuple(meta_shape) != arr.shape:
    raise T5xFormatError(
        f"Shape mismatch for {name!r}: the msgpack spec says "
        f"{tuple(meta_shape)} but {array_dir / '.zarray'} says {arr.shape}. "
        "The checkpoint mixes files from different runs; re-download it.")
  return arr
