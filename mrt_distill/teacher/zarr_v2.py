"""A checked zarr v2 array reader, as t5x (and jax's array serialization)
write arrays.

Written for the legacy t5x checkpoint format (`t5x_format.py`). The metadata
and the set of chunk files are checked here, so every error names the file at
fault and, unlike TensorStore alone, a missing chunk is an error when the
array has no fill value instead of silently reading zeros. The chunks are
then read and decompressed by TensorStore's zarr driver (a dependency
already, and what t5x writes with), chunk by chunk, so a corrupt chunk is
named too. Compressors: none, gzip and zlib (t5x), zstd (jax's array
serialization, which t5x uses for arrays saved from several devices), blosc
and bz2 -- every zarr v2 compressor TensorStore reads and writes.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import numpy as np

PathLike = str | os.PathLike

# The zarr v2 compressor ids TensorStore's zarr driver supports (read and
# write); `null` (no compression) is accepted as well.
SUPPORTED_COMPRESSORS = ("blosc", "bz2", "gzip", "zlib", "zstd")


class ZarrFormatError(ValueError):
  """A zarr array directory is missing, incomplete or corrupt."""

def _decode_dtype(code: Any, zarray: pathlib.Path) -> tuple[np.dtype, bool]:
  """Returns (storage dtype, is_bfloat16) for a zarr v2 dtype string."""
  if code == "bfloat16":  # TensorStore's zarr extension.
    return np.dtype("<u2"), True
  try:
    dt = np.dtype(code)
  except TypeError as e:
    raise ZarrFormatError(
        f"{zarray}: unsupported zarr dtype {code!r}.") from e
  if dt.kind not in "fiub" or dt.fields is not None:
    raise ZarrFormatError(f"{zarray}: unsupported zarr dtype {code!r}.")
  return dt, False


def _read_zarray(array_dir: pathlib.Path) -> dict[str, Any]:
  zarray = array_dir / ".zarray"
  if not array_dir.is_dir():
    raise ZarrFormatError(
        f"Array directory {array_dir} is referenced by "
        f"the checkpoint in {array_dir.parent} but does not exist. The "
        "checkpoint is incomplete; re-download or re-copy the whole "
        "checkpoint directory.")
  if not zarray.is_file():
    raise ZarrFormatError(
        f"{zarray} is missing: {array_dir} is not a zarr array. The "
        "checkpoint is incomplete; re-download it.")
  try:
    meta = json.loads(zarray.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ZarrFormatError(
        f"{zarray} is not valid JSON ({e}); the file is corrupt. Re-download "
        "the checkpoint.") from e
  if not isinstance(meta, dict):
    raise ZarrFormatError(f"{zarray} is corrupt: expected a JSON object.")
  missing = [k for k in ("shape", "chunks", "dtype") if k not in meta]
  if missing:
    raise ZarrFormatError(
        f"{zarray} is corrupt: missing keys {missing}. Re-download the "
        "checkpoint.")
  if meta.get("zarr_format", 2) != 2:
    raise ZarrFormatError(
        f"{zarray}: zarr_format {meta.get('zarr_format')!r} is not supported "
        "(t5x writes zarr v2).")
  shape, chunks = meta["shape"], meta["chunks"]
  if (not isinstance(shape, list) or not isinstance(chunks, list) or
      len(shape) != len(chunks) or
      not all(isinstance(n, int) and n >= 0 for n in shape) or
      not all(isinstance(c, int) and c >= 1 for c in chunks)):
    raise ZarrFormatError(
        f"{zarray} is corrupt: shape {shape!r} / chunks {chunks!r} are not "
        "matching lists of non-negative / positive ints.")
  if meta.get("filters"):
    raise ZarrFormatError(
        f"{zarray}: zarr filters {meta['filters']!r} are not supported "
        "(t5x writes none).")
  if meta.get("order", "C") not in ("C", "F"):
    raise ZarrFormatError(f"{zarray}: bad order {meta.get('order')!r}.")
  return meta


def compressor_id(meta: dict[str, Any], zarray: pathlib.Path) -> str | None:
  """The `.zarray`'s compressor id (None: raw chunks); raises on an unknown
  one, naming it and the supported ones."""
  compressor = meta.get("compressor")
  if compressor is None:
    return None
  cid = compressor.get("id") if isinstance(compressor, dict) else None
  if cid not in SUPPORTED_COMPRESSORS:
    raise ZarrFormatError(
        f"{zarray}: chunk compressor {cid if cid else compressor!r} is not "
        f"supported; supported: none (raw), "
        f"{', '.join(SUPPORTED_COMPRESSORS)} (what TensorStore, t5x and jax "
        "write). Re-save the array with one of them.")
  return cid


def stored_dtype(array_dir: PathLike) -> str:
  """The dtype an array is stored in, by name ('float32', 'bfloat16', ...)."""
  array_dir = pathlib.Path(array_dir)
  meta = _read_zarray(array_dir)
  dtype, is_bf16 = _decode_dtype(meta["dtype"], array_dir / ".zarray")
  return "bfloat16" if is_bf16 else dtype.name


def read_zarr_array(array_dir: PathLike) -> np.ndarray:
  """Reads a zarr v2 array directory (as written by t5x) into numpy.

  Supports raw chunks and every compressor in `SUPPORTED_COMPRESSORS`, C/F
  order, '.' or '/' dimension separators, numeric dtypes and TensorStore's
  `bfloat16` (returned as float32). Unlike TensorStore alone, a missing
  chunk is an error when the array has no fill value (t5x's default),
  instead of silently reading zeros.

  Args:
    array_dir: Directory holding `.zarray` and the chunk files.

  Returns:
    The array.

  Raises:
    ZarrFormatError: On a missing directory/`.zarray`/chunk, an unsupported
      compressor, or corrupt data.
  """
  import tensorstore as ts  # pylint: disable=g-import-not-at-top

  array_dir = pathlib.Path(array_dir)
  meta = _read_zarray(array_dir)
  zarray = array_dir / ".zarray"
  shape, chunks = tuple(meta["shape"]), tuple(meta["chunks"])
  dtype, is_bf16 = _decode_dtype(meta["dtype"], zarray)
  cid = compressor_id(meta, zarray)
  sep = meta.get("dimension_separator", ".") or "."
  fill = meta.get("fill_value")
  chunk_bytes = math.prod(chunks) * dtype.itemsize
  grid = [math.ceil(n / c) for n, c in zip(shape, chunks)]
  regions = []
  for idx in np.ndindex(*grid):
    key = sep.join(str(i) for i in idx) if idx else "0"
    chunk_path = array_dir / key
    if not chunk_path.is_file():
      if fill is None:
        raise ZarrFormatError(
            f"Chunk file {chunk_path} is missing (array shape {shape}, "
            f"chunks {chunks}, expected {math.prod(grid)} chunk files). The "
            "checkpoint is incomplete; re-download or re-copy it.")
      # zarr semantics: an absent chunk reads as fill_value (TensorStore).
    elif cid is None and chunk_path.stat().st_size != chunk_bytes:
      raise ZarrFormatError(
          f"Shape mismatch in {chunk_path}: {chunk_path.stat().st_size} "
          f"bytes of data but {zarray} declares chunks {chunks} of "
          f"{meta['dtype']} ({chunk_bytes} bytes). The chunk or .zarray is "
          "corrupt; re-download the checkpoint.")
    regions.append((chunk_path, tuple(
        slice(i * c, min((i + 1) * c, n))
        for i, c, n in zip(idx, chunks, shape))))
  try:
    store = ts.open({"driver": "zarr",
                     "kvstore": {"driver": "file", "path": str(array_dir)}},
                    open=True, read=True).result()
  except ValueError as e:
    raise ZarrFormatError(
        f"{zarray} is corrupt: TensorStore cannot open the array ({e}). "
        "Re-download the checkpoint.") from None
  out = np.empty(shape, dtype=store.dtype.numpy_dtype)
  for chunk_path, region in regions:
    try:
      out[region] = store[region].read().result()
    except ValueError as e:
      raise ZarrFormatError(
          f"Chunk {chunk_path} does not decompress/decode as "
          f"{cid or 'raw'} chunks {chunks} of {meta['dtype']}: {e}. The "
          "chunk or .zarray is corrupt; re-download the checkpoint.") from None
  if is_bf16:
    out = out.astype(np.float32)
  return out.astype(out.dtype.newbyteorder("="), copy=False)
