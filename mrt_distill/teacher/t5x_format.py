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

`read_t5x_checkpoint` checks the zarr arrays itself (`zarr_v2.py`: metadata,
the set of chunk files) and lets TensorStore decompress the chunks (gzip, zlib,
zstd, blosc, bz2 or none), so that a missing chunk file is an error instead of
being silently read as zeros. Arrays t5x saved from several devices go through
jax's array serialization, which writes zstd chunks of one device's shard
each; both layouts read the same. `write_t5x_checkpoint` writes through
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

from mrt_distill.teacher.zarr_v2 import (SUPPORTED_COMPRESSORS,
                                         ZarrFormatError, read_zarr_array,
                                         stored_dtype)

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
    dtypes: Flat dotted param name -> the dtype it is stored in ('float32',
      'bfloat16', ...); `params` are float32 whatever it is.
    slots: Summary of the optimizer slots (`optimizer.state.param_states`,
      Adafactor's v_row/v_col/v) from the msgpack alone, whether read or
      not: {"tensors": count, "bytes": stored size, "read": bool}.
  """

  params: dict[str, Any]
  step: int | None
  param_states: dict[str, Any] | None
  names: list[str]
  path: pathlib.Path | None = None
  dtypes: dict[str, str] = dataclasses.field(default_factory=dict)
  slots: dict[str, Any] = dataclasses.field(default_factory=dict)


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
                         compress: bool | str = True,
                         shards: int = 1) -> None:
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
    compress: True: gzip chunks (t5x does); False: raw chunks; or a
      compressor id from `zarr_v2.SUPPORTED_COMPRESSORS`, e.g. "zstd".
    shards: > 1 writes the multi-device layout of jax's array serialization
      (what t5x uses for arrays saved from several devices): each array is
      split into `shards` equal shards along its last axis that `shards`
      divides (arrays with no such axis stay whole, as replicated arrays
      do), every chunk is one shard (`chunks` = the shard shape, whatever
      `max_chunk_bytes` says), and each shard is written on its own, as each
      device writes its own. Pair it with compress="zstd", jax's compressor.

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
  compressor = ({"id": "gzip"} if compress is True else
                None if compress is False or compress is None else
                {"id": compress})
  if compressor is not None and compressor["id"] not in SUPPORTED_COMPRESSORS:
    raise T5xFormatError(
        f"compress={compress!r}: use True (gzip), False (raw) or one of "
        f"{SUPPORTED_COMPRESSORS}")
  if shards < 1:
    raise T5xFormatError(f"shards must be >= 1, got {shards}")
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
        shard_shape = _shard_shape(arr.shape, shards)
        rel_spec = {
            "driver": "zarr",
            "dtype": arr.dtype.name,
            "kvstore": {"driver": "file", "path": name},
            "metadata": {
                "compressor": compressor,
                "shape": list(arr.shape),
                "chunks": (list(shard_shape) if shards > 1 else
                           choose_chunk_shape(arr.shape, arr.dtype.itemsize,
                                              max_chunk_bytes)),
            },
        }
        abs_spec = json.loads(json.dumps(rel_spec))
        abs_spec["kvstore"]["path"] = str(tmp_dir / name)
        store = ts.open(abs_spec, create=True, open=True).result()
        if shards > 1:  # One write per shard, as each device writes its own.
          for region in _shard_regions(arr.shape, shard_shape):
            store[region].write(arr[region]).result()
        else:
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


def _shard_shape(shape: tuple[int, ...], shards: int) -> tuple[int, ...]:
  """`shape` split `shards` ways along its last axis that `shards` divides
  (unchanged if none does: the array is replicated)."""
  for axis in reversed(range(len(shape))):
    if shards > 1 and shape[axis] >= shards and shape[axis] % shards == 0:
      return shape[:axis] + (shape[axis] // shards,) + shape[axis + 1:]
  return tuple(max(1, n) for n in shape)


def _shard_regions(shape, shard_shape) -> Iterator[tuple[slice, ...]]:
  grid = [math.ceil(n / c) for n, c in zip(shape, shard_shape)]
  for idx in np.ndindex(*grid):
    yield tuple(slice(i * c, min((i + 1) * c, n))
                for i, c, n in zip(idx, shard_shape, shape))


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
  _refuse_newer_layout(path)
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
    _refuse_newer_layout(chosen)
    raise T5xFormatError(
        f"t5x checkpoint directory {chosen} has no '{MSGPACK_NAME}' msgpack "
        "file; the checkpoint is incomplete (t5x writes it last). Re-download "
        "it or pass another checkpoint_<step> directory.")
  return chosen


# Files and folders of the newer t5x/orbax layout (OCDBT: one key-value store
# for all arrays, zarr3 inside), by which it is recognised.
_OCDBT_MARKERS = ("manifest.ocdbt", "_METADATA", "_CHECKPOINT_METADATA",
                  "ocdbt.process_0")
_LEGACY_LAYOUT = (
    f"this importer reads the legacy t5x layout (a '{MSGPACK_NAME}' msgpack "
    "file and one zarr v2 folder per array, the layout of Magenta RT v1's "
    "published checkpoints)")


def _refuse_newer_layout(path: pathlib.Path) -> None:
  """Raises a clear error if `path` (or a folder in it) is an OCDBT
  checkpoint of the newer t5x/orbax layout."""
  for folder in [path] + sorted(p for p in path.iterdir() if p.is_dir()):
    found = [m for m in _OCDBT_MARKERS if (folder / m).exists()]
    if not found:
      continue
    hint = ("; it is a teacher checkpoint of this project already (it has "
            "teacher.json): load it with load_teacher / "
            "--config.magenta_rt.teacher instead of importing it"
            if (path / "teacher.json").is_file() else
            "; save it again in t5x's legacy format (or restore it with "
            "orbax and write its params with "
            "t5x_format.write_t5x_checkpoint), then import that")
    raise T5xFormatError(
        f"{path} holds a checkpoint in the newer t5x/orbax OCDBT layout "
        f"(found {', '.join(found)} in {folder}), but {_LEGACY_LAYOUT}"
        f"{hint}.")


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

  dtypes: dict[str, str] = {}
  params = _materialize(target, ckpt, _TARGET_PREFIX, to_float32=True,
                        dtypes=dtypes)
  if not params:
    raise T5xFormatError(
        f"{msgpack_path}: 'optimizer.target' holds no arrays.")
  step = None
  if "step" in state and state["step"] is not None:
    step_arr, _ = _load_leaf(state["step"], ckpt, "state.step",
                             with_dtype=True)
    step = int(np.asarray(step_arr).reshape(-1)[0])
  slots = _slot_summary(state.get("param_states"))
  slots["read"] = bool(include_optimizer_state and slots["tensors"])
  param_states = None
  if include_optimizer_state and state.get("param_states"):
    param_states = _materialize(state["param_states"], ckpt,
                                _PARAM_STATES_PREFIX, to_float32=True) or None
  names = sorted(flatten(params))
  _log.info("Read t5x checkpoint %s: step %s, %d params%s.", ckpt, step,
            len(names), "" if param_states is None else
            f", {len(flatten(param_states))} optimizer slots")
  return T5xCheckpoint(params=params, step=step, param_states=param_states,
                       names=names, path=ckpt, dtypes=dtypes, slots=slots)


def _slot_summary(tree: Any) -> dict[str, Any]:
  """Counts the optimizer slot arrays and their stored bytes from the
  msgpack (specs' shape and dtype), without reading any array."""
  count = nbytes = 0
  for _, leaf in _iter_specs(tree or {}):
    count += 1
    if _is_spec(leaf):
      meta = leaf.get("metadata") or {}
      code = leaf.get("dtype") or meta.get("dtype") or "float32"
      size = 2 if code == "bfloat16" else np.dtype(code).itemsize
      nbytes += size * math.prod(meta.get("shape") or ())
    else:
      nbytes += np.asarray(leaf).nbytes
  return {"tensors": count, "bytes": int(nbytes)}


def _iter_specs(node: Any, path=()) -> Iterator[tuple[tuple[str, ...], Any]]:
  """(path, leaf) of a msgpack subtree, a TensorStore spec being a leaf."""
  if _is_spec(node) or not isinstance(node, dict):
    if node is not None:
      yield path, node
    return
  for key, value in node.items():
    yield from _iter_specs(value, path + (str(key),))


def _is_spec(x: Any) -> bool:
  return isinstance(x, dict) and _SPEC_KEYS <= set(x)


def _materialize(tree: Any, ckpt: pathlib.Path, prefix: tuple[str, ...],
                 to_float32: bool,
                 dtypes: dict[str, str] | None = None) -> dict[str, Any]:
  """Replaces every spec/inline leaf of a msgpack subtree by a numpy array."""
  flat = {}

  def walk(node, path):
    if _is_spec(node) or not isinstance(node, dict):
      if node is None:
        return
      name = ".".join(prefix + path)
      arr, stored = _load_leaf(node, ckpt, name, with_dtype=True)
      if dtypes is not None:
        dtypes[".".join(path)] = stored
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
  kvstore = spec["kvstore"]
  kv_driver = kvstore.get("driver") if isinstance(kvstore, dict) else (
      str(kvstore).split(":", 1)[0])
  if driver == "zarr3" or kv_driver == "ocdbt":
    raise T5xFormatError(
        f"{ckpt / MSGPACK_NAME}: leaf {name!r} is stored in the newer "
        f"t5x/orbax layout (TensorStore driver {driver!r}, kvstore "
        f"{kv_driver!r}: OCDBT / zarr3), but {_LEGACY_LAYOUT}; save the "
        "checkpoint again in t5x's legacy format, then import that.")
  if driver not in ("zarr", "zarr2"):
    raise T5xFormatError(
        f"{ckpt / MSGPACK_NAME}: leaf {name!r} uses TensorStore driver "
        f"{driver!r}; only 'zarr' (zarr v2, t5x's) is supported.")
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


def _dtype_name(code: Any) -> str | None:
  if code in (None, "bfloat16"):
    return code
  try:
    return np.dtype(code).name
  except TypeError:
    return str(code)


def _load_leaf(leaf: Any, ckpt: pathlib.Path, name: str,
               with_dtype: bool = False):
  """Returns an inline leaf as an array, or reads the zarr array it names;
  with_dtype: (array, the dtype it is stored in)."""
  if not _is_spec(leaf):
    arr = np.asarray(leaf)
    return (arr, arr.dtype.name) if with_dtype else arr
  array_dir = _spec_array_dir(leaf, ckpt, name)
  try:
    stored = stored_dtype(array_dir)
  except ZarrFormatError as e:
    raise T5xFormatError(str(e)) from None
  spec_dtype = _dtype_name(leaf.get("dtype") or (
      leaf.get("metadata") or {}).get("dtype"))
  if spec_dtype is not None and spec_dtype != stored:
    raise T5xFormatError(
        f"dtype mismatch for {name!r}: the msgpack spec says {spec_dtype} but "
        f"{array_dir / '.zarray'} says {stored}. The checkpoint mixes files "
        "from different runs; re-download it.")
  arr = _read_array(array_dir)
  meta_shape = (leaf.get("metadata") or {}).get("shape")
  if meta_shape is not None and tuple(meta_shape) != arr.shape:
    raise T5xFormatError(
        f"Shape mismatch for {name!r}: the msgpack spec says "
        f"{tuple(meta_shape)} but {array_dir / '.zarray'} says {arr.shape}. "
        "The checkpoint mixes files from different runs; re-download it.")
  return (arr, stored) if with_dtype else arr
